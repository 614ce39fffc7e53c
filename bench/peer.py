"""A baseline system in a child process, driven by JSON lines on stdin (``python -m bench.peer KIND``).

KIND is ``ray`` (``ray.init(num_cpus=2)``), ``dask`` (``LocalCluster`` of 2 single-threaded worker
processes, or the cluster whose scheduler a second argument names; where every worker offers a
``spear_slot``, each task holds one, as the spearlet's do) or ``ppe``
(``concurrent.futures.ProcessPoolExecutor(2)`` with spawned workers). The first line out says whether it
is available and how long it took from interpreter start (imports included) to the first task's result.
Then each command ``{"op": "rtt"|"rate"|"map", "n": N}`` gets one JSON answer:

* ``rtt``: ``samples_ms``, the round trip of N sequential tasks (submit, wait for the result);
* ``rate``: ``per_s``, N tasks submitted at once, then every result awaited;
* ``map``: ``per_s``, the system's own batch call over N inputs (``executor.map``, ``client.map``).

The task is a trivial negation; every batch checks its results.
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import concurrent.futures  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import operator  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

WARMUP = 50

# Answers go to the original stdout; everything else written to fd 1 (by this process or the daemons it
# starts, which inherit the descriptor) goes to stderr, so that no stray line can break the protocol.
_ANSWERS = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)


class Backend:
    def call(self, x: int) -> int:
        raise NotImplementedError

    def batch(self, xs: range) -> list[int]:
        raise NotImplementedError

    def map(self, xs: range) -> list[int]:
        return self.batch(xs)

    def close(self) -> None:
        pass


class RayBackend(Backend):
    def __init__(self) -> None:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)

        @ray.remote
        def neg(x: int) -> int:
            return -x

        self._ray = ray
        self._neg = neg

    def call(self, x: int) -> int:
        result: int = self._ray.get(self._neg.remote(x))
        return result

    def batch(self, xs: range) -> list[int]:
        return list(self._ray.get([self._neg.remote(x) for x in xs]))

    def close(self) -> None:
        self._ray.shutdown()


class DaskBackend(Backend):
    def __init__(self, address: str = "") -> None:
        from dask.distributed import Client, LocalCluster

        self._cluster = (
            None
            if address
            else LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
            )
        )
        self._client = Client(address or self._cluster)
        # On a cluster whose workers offer the slot resource the spearlet's tasks hold, Dask's own tasks
        # hold it too: the same scheduling work on both sides.
        workers = self._client.scheduler_info(n_workers=-1)["workers"].values()
        slotted = bool(workers) and all("spear_slot" in (w.get("resources") or {}) for w in workers)
        self._options: dict[str, Any] = {"pure": False, "resources": {"spear_slot": 1} if slotted else None}

    def call(self, x: int) -> int:
        result: int = self._client.submit(operator.neg, x, **self._options).result()
        return result

    def batch(self, xs: range) -> list[int]:
        futures = [self._client.submit(operator.neg, x, **self._options) for x in xs]
        return list(self._client.gather(futures))

    def map(self, xs: range) -> list[int]:
        return list(self._client.gather(self._client.map(operator.neg, xs, **self._options)))

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


class PoolBackend(Backend):
    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn")
        )

    def call(self, x: int) -> int:
        return self._pool.submit(operator.neg, x).result()

    def batch(self, xs: range) -> list[int]:
        futures = [self._pool.submit(operator.neg, x) for x in xs]
        return [f.result() for f in futures]

    def map(self, xs: range) -> list[int]:
        return list(self._pool.map(operator.neg, xs))

    def close(self) -> None:
        self._pool.shutdown()


BACKENDS: dict[str, tuple[str, Callable[..., Backend]]] = {
    "ray": ("ray", RayBackend),
    "dask": ("distributed", DaskBackend),
    "ppe": ("", PoolBackend),
}


def _timed_rate(run: Callable[[range], list[int]], n: int) -> float:
    xs = range(n)
    start = time.perf_counter()
    results = run(xs)
    elapsed = time.perf_counter() - start
    if results != [-x for x in xs]:
        raise AssertionError("wrong results")
    return n / elapsed


def _answer(backend: Backend, command: dict[str, Any]) -> dict[str, Any]:
    n = int(command["n"])
    op = command["op"]
    if op == "rtt":
        for x in range(WARMUP):
            backend.call(x)
        samples = []
        for x in range(n):
            start = time.perf_counter()
            backend.call(x)
            samples.append((time.perf_counter() - start) * 1000)
        return {"samples_ms": samples}
    if op == "rate":
        backend.batch(range(WARMUP))
        return {"per_s": _timed_rate(backend.batch, n)}
    if op == "map":
        backend.map(range(WARMUP))
        return {"per_s": _timed_rate(backend.map, n)}
    raise ValueError(f"unknown op {op!r}")


def _say(message: dict[str, Any]) -> None:
    _ANSWERS.write(json.dumps(message) + "\n")
    _ANSWERS.flush()


def main(kind: str, *options: str) -> None:
    distribution, factory = BACKENDS[kind]
    version = ""
    if distribution:
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            _say({"available": False, "reason": f"{kind}: not installed"})
            return
    backend = factory(*options)
    assert backend.call(1) == -1
    _say({"available": True, "startup_s": time.perf_counter() - _START, "version": version})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "exit":
                break
            try:
                _say(_answer(backend, command))
            except Exception as exc:
                _say({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        backend.close()


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
