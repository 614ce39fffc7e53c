"""Admission and concurrency: at most N running, the rest waiting in a bounded FIFO queue.

A full queue refuses the call before any record exists (docs/design.md, "Admission")."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from spear_sdk.wire.errors import RETRY_AFTER_MS, ResourceExhausted

#: The hint's bounds, and what it says before any run time is known.
MIN_RETRY_AFTER_MS = 10
MAX_RETRY_AFTER_MS = 30_000
DEFAULT_RETRY_AFTER_MS = 100


class Overloaded(ResourceExhausted):
    """The queue is full; a place is likely to free up after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


def retry_after_ms(mean_run_ms: float, slots: int) -> int:
    """When a queue place is likely to free: a run's mean time spread over the slots that run them."""
    if mean_run_ms <= 0:
        return DEFAULT_RETRY_AFTER_MS
    return round(min(max(mean_run_ms / slots, MIN_RETRY_AFTER_MS), MAX_RETRY_AFTER_MS))


class Scheduler:
    """Counts slots; it never runs anything itself.

    ``admit`` is synchronous so that the capacity check and the reservation cannot be interleaved with
    another request; the caller then ``acquire``s (waiting FIFO) and finally ``release``s.
    """

    def __init__(self, max_running: int, max_queued: int) -> None:
        self.max_running = max_running
        self.max_queued = max_queued
        self.running = 0
        #: Admitted and not yet running (queued or about to queue).
        self.pending = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def admit(self, mean_run_ms: Callable[[], float] = lambda: 0.0) -> None:
        """Reserve a place or raise :class:`Overloaded` (no record is created for a refused call).

        ``mean_run_ms`` says how long such a call usually runs, for the retry hint of a refusal.
        """
        if self.running + self.pending >= self.max_running + self.max_queued:
            hint = retry_after_ms(mean_run_ms(), self.max_running)
            raise Overloaded(
                f"the execution queue is full ({self.max_queued} waiting, {self.running} running); "
                f"retry after {hint} ms (trailing metadata {RETRY_AFTER_MS!r}) or raise --max-queued",
                hint,
            )
        self.pending += 1

    def withdraw(self, count: int = 1) -> None:
        """Give back admitted places that never waited (the record could not be written, or the calls
        went to a batch's pipeline, whose lane holds the slot)."""
        self.pending -= count

    def readmit(self, count: int) -> None:
        """Take places again, past the limit if need be, for admitted calls a pipeline gave back (to run
        again after a lost worker)."""
        self.pending += count

    async def acquire(self) -> None:
        """Wait for a slot in FIFO order. If cancelled while waiting, the place is given back."""
        if self.running < self.max_running and not self._waiters:
            self.pending -= 1
            self.running += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            else:
                if waiter in self._waiters:  # release() may have popped it already
                    self._waiters.remove(waiter)
                self.pending -= 1
            raise

    async def slot(self) -> None:
        """Wait for a running slot without taking a queue place first: a batch's lanes wait here, at
        most one per slot (see :mod:`.batch`)."""
        self.pending += 1
        await self.acquire()

    def release(self) -> None:
        """Free a slot, handing it straight to the oldest waiter."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.pending -= 1
                waiter.set_result(None)
                return
        self.running -= 1

    @property
    def queue_fill(self) -> float:
        """How full the queue is, from 0 to 1."""
        return self.pending / self.max_queued
