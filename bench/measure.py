"""Rounds, alternation and summaries: how every figure of the suite is sampled."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Step = Callable[[], "float | list[float]"]


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


async def latencies_ms(call: Callable[[], Awaitable[object]], count: int, warmup: int = 50) -> list[float]:
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
    call: Callable[[], Awaitable[object]], count: int, inflight: int, warmup: int = 50
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
