"""BIG (large values) in a fresh interpreter: ``python -m bench.big_child KIND ROUNDS``, KIND being ``lab``
(``start_lab()``), ``connect`` (``connect()`` to a ``spearlet serve`` child on this machine) or ``ray``
(``ray.init(num_cpus=2)``). The last stdout line is JSON:

* ``arg_s``: a 200 MB numpy argument to a function returning a scalar, median seconds per call;
* ``ref_ms`` and ``plain_ms``: p50 of a call whose argument is a reference to that array (stored once)
  and of a call with a small argument; the functions return a scalar;
* ``result_s``: a function returning a 100 MB array, median seconds until the caller holds it;
* ``send_rss``: the caller's peak RSS while sending the 200 MB argument, above its RSS before the array
  existed, as a multiple of the array's size (the array itself is 1.0).

Every result is checked.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ARG_BYTES = 200_000_000
RESULT_BYTES = 100_000_000
REF_CALLS = 30


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def total(a: Any) -> float:
    return float(a[::4096].sum())


def length(a: Any) -> int:
    return int(a.shape[0])


def one(x: int) -> int:
    return x + 1


def make(n: int) -> Any:
    return np.ones(n, dtype=np.float64)


class Side:
    """The four operations, for one system."""

    call_total: Callable[[Any], float]
    call_length: Callable[[Any], int]
    call_one: Callable[[int], int]
    call_make: Callable[[int], Any]
    put: Callable[[Any], Any]

    def close(self) -> None:
        pass


class Ours(Side):
    def __init__(self, kind: str) -> None:
        import spear_sdk

        self._server: Any = None
        if kind == "lab":
            self._lab = spear_sdk.start_lab(max_concurrent=2)
            client = self._lab.client
        else:
            from bench.servers import spearlet_server

            self._dir = tempfile.mkdtemp(prefix="big-")
            self._server = spearlet_server(Path(self._dir), "memory://")
            client = spear_sdk.connect(self._server.address)
        self._client = client
        self.call_total = client.function(total)
        self.call_length = client.function(length)
        self.call_one = client.function(one)
        self.call_make = client.function(make)
        self.put = client.put

    def close(self) -> None:
        self._client.close()
        if self._server is not None:
            self._server.stop()
        else:  # the exit below skips the lab's own stop: its objects' memory would stay behind
            self._lab.stop(0)


class Ray(Side):
    def __init__(self) -> None:
        import logging

        import ray

        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
        self._ray = ray
        remote = {f.__name__: ray.remote(f) for f in (total, length, one, make)}
        self.call_total = lambda a: ray.get(remote["total"].remote(a))
        self.call_length = lambda a: ray.get(remote["length"].remote(a))
        self.call_one = lambda x: ray.get(remote["one"].remote(x))
        self.call_make = lambda n: ray.get(remote["make"].remote(n))
        self.put = ray.put

    def close(self) -> None:
        self._ray.shutdown()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def main() -> None:
    kind, rounds = sys.argv[1], int(sys.argv[2])
    side: Side = Ray() if kind == "ray" else Ours(kind)
    try:
        for _ in range(3):  # warm: workers started, functions loaded
            side.call_one(1)
        side.call_length(np.zeros(10))
        before = rss()
        data = np.random.default_rng(1).random(ARG_BYTES // 8)
        expected = total(data)
        reset_peak()
        seconds, value = timed(lambda: side.call_total(data))
        send_rss = (peak_rss() - before) / ARG_BYTES
        assert value == expected, (value, expected)
        arg = [seconds]
        for _ in range(rounds - 1):
            seconds, value = timed(lambda: side.call_total(data))
            assert value == expected
            arg.append(seconds)
        ref = side.put(data)
        ref_ms, plain_ms = [], []
        for _ in range(REF_CALLS):
            seconds, value = timed(lambda r=ref: side.call_length(r))
            assert value == data.shape[0]
            ref_ms.append(seconds * 1000)
            seconds, value = timed(lambda: side.call_one(1))
            assert value == 2
            plain_ms.append(seconds * 1000)
        result = []
        for _ in range(rounds):
            seconds, value = timed(lambda: side.call_make(RESULT_BYTES // 8))
            assert value.nbytes == RESULT_BYTES and value[-1] == 1.0
            del value
            result.append(seconds)
        figures = {
            "arg_s": statistics.median(arg),
            "ref_ms": statistics.median(ref_ms),
            "plain_ms": statistics.median(plain_ms),
            "result_s": statistics.median(result),
            "send_rss": send_rss,
        }
    finally:
        side.close()
    print(json.dumps(figures), flush=True)
    os._exit(0)  # skip interpreter teardown (Ray's daemons, the lab's runtime)


if __name__ == "__main__":
    main()
