"""A fresh interpreter from import to first result (P7 of docs/performance.md), then optionally idle like a
kernel.

``python -m bench.startup_child ours|ray [idle]`` prints the seconds from the first line of this module
(before ``import spear_sdk`` / ``import ray``) to the first result of a trivial remote call. With
``idle`` it then waits on stdin, doing nothing, until stdin closes (so the parent can watch it idle).
"""

from __future__ import annotations

import time

_START = time.perf_counter()

import sys  # noqa: E402


def ours() -> None:
    import spear_sdk

    lab = spear_sdk.start_lab()
    increment = lab.client.function(lambda x: x + 1, name="increment")
    assert increment(1) == 2
    report()


def ray() -> None:
    import logging

    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    increment = ray.remote(lambda x: x + 1)
    assert ray.get(increment.remote(1)) == 2
    report()
    ray.shutdown()


def report() -> None:
    print(time.perf_counter() - _START, flush=True)
    if "idle" in sys.argv[2:]:
        sys.stdin.read()


if __name__ == "__main__":
    {"ours": ours, "ray": ray}[sys.argv[1]]()
