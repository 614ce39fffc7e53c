"""Admission and concurrency: at most N running, the rest waiting in a bounded FIFO queue (SPEC §3)."""

from __future__ import annotations

import asyncio
from collections import deque

from spear_sdk.wire.errors import ResourceExhausted


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

    def admit(self) -> None:
        """Reserve a place or raise ``ResourceExhausted`` (no record is created for a refused call)."""
        if self.running + self.pending >= self.max_running + self.max_queued:
            raise ResourceExhausted(
                f"the execution queue is full ({self.max_queued} waiting, {self.running} running); "
                "retry later or raise --max-queued"
            )
        self.pending += 1

    def withdraw(self) -> None:
        """Give back an admitted place that never waited (the record could not be written)."""
        self.pending -= 1

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
