"""Rounds, alternation and summaries: how every figure of the suite is sampled."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Step = Callable[[], "float | list[float]"]

#: Unrecorded calls before a step's measured ones.
WARMUP = 50


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, interpolated; the value itself for a single sample."""
    if len(values) < 2:
        return float(values[0])
    return float(statistics.quantiles(values, n=1000, method="inclusive")[round(q * 1000) - 1])


class Samples:
    """Every raw sample by name, in the order taken."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[float]] = {}

    def add(self, name: str, value: float | list[float]) -> None:
        bucket = self.by_name.setdefault(name, [])
        if isinstance(value, list):
            bucket.extend(value)
        else:
            bucket.append(value)

    def __getitem__(self, name: str) -> list[float]:
        return self.by_name[name]


def alternate(rounds: int, steps: Sequence[tuple[str, Step]], samples: Samples) -> None:
    """Run every step once per round, in turn, so that a burst of machine noise hits all of them alike.

    A step returns one figure (a rate) or a list of samples (latencies); both are stored under its name.
    """
    for _ in range(rounds):
        for name, step in steps:
            samples.add(name, step())


def cpu_seconds(pid: int) -> float | None:
    """The CPU time the threads of process ``pid`` have used so far, to the nanosecond (the scheduler's
    own count, where ``/proc/PID/stat`` counts 10 ms ticks); None without Linux's ``/proc``."""
    total = 0
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for thread in threads:
        try:
            with open(f"/proc/{pid}/task/{thread}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # (a thread that ended meanwhile)
    return total / 1e9


def with_cpu(step: Step, pid: int, calls: int, name: str, samples: Samples) -> Step:
    """``step``, also adding to ``samples`` under ``name`` the CPU process ``pid`` (a server) spent per call
    meanwhile, in microseconds; ``calls``: every call the step makes, its warm-up included. Unlike a rate
    or a latency, CPU per call barely moves when other work takes the cores, so it shows where a gap lies
    on a busy machine."""

    def measured() -> float | list[float]:
        before = cpu_seconds(pid)
        figure = step()
        after = cpu_seconds(pid)
        if before is not None and after is not None:
            samples.add(name, (after - before) / calls * 1e6)
        return figure

    return measured


class Loop:
    """The one event loop the suite's own grpc.aio clients live on (a channel is bound to the loop that
    is current when it is made, so this loop is made this thread's current one)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

    def run(self, awaitable: Awaitable[Any]) -> Any:
        return self._loop.run_until_complete(awaitable)

    def step(self, make: Callable[[], Awaitable[float | list[float]]]) -> Step:
        """A blocking :data:`Step` around a coroutine function."""
        return lambda: self.run(make())

    def close(self) -> None:
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        self._loop.close()


async def latencies_ms(
    call: Callable[[], Awaitable[object]], count: int, warmup: int = WARMUP
) -> list[float]:
    """Round trip of ``count`` sequential calls, in milliseconds, after ``warmup`` unrecorded ones."""
    for _ in range(warmup):
        await call()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def inflight_rate(
    call: Callable[[], Awaitable[object]], count: int, inflight: int, warmup: int = WARMUP
) -> float:
    """Calls per second when one client keeps ``inflight`` calls going until ``count`` have completed."""
    todo = iter(range(count))

    async def lane() -> None:
        for _ in todo:
            await call()

    for _ in range(warmup):
        await call()
    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(inflight)))
    return count / (time.perf_counter() - start)
