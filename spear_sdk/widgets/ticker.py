"""The refresh cycle of a live view: fetch on the SDK's runtime loop, apply on the kernel's loop.

One fetch at a time: the next one starts ``interval`` seconds after the previous state was applied, so a
slow server slows the view down instead of piling up requests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from .._runtime import Runtime
from .kernel import KernelLoop

S = TypeVar("S")


class Ticker(Generic[S]):
    """Calls ``apply(state)`` (or ``failed(error)``) on the kernel's loop after each ``fetch()``; either
    returns whether to go on."""

    def __init__(
        self,
        runtime: Runtime,
        kernel: KernelLoop,
        fetch: Callable[[], Coroutine[Any, Any, S]],
        apply: Callable[[S], bool],
        failed: Callable[[BaseException], bool],
        interval: float,
    ) -> None:
        self._runtime = runtime
        self._kernel = kernel
        self._fetch = fetch
        self._apply = apply
        self._failed = failed
        self.interval = interval
        self.stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._pending: concurrent.futures.Future[S] | None = None

    def start(self) -> bool:
        """Begin refreshing; ``False`` where there is no loop to refresh on (call ``refresh()`` instead)."""
        if not self._kernel.live:
            self.stopped = True
            return False
        return self._kernel.call(self._schedule)

    def stop(self) -> None:
        """Stop refreshing (from any thread); a fetch under way is dropped."""
        self.stopped = True
        self._kernel.call(self._cancel)

    def _schedule(self) -> None:
        if not self.stopped:
            self._timer = self._kernel.later(self.interval, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.stopped:
            return
        self._pending = self._runtime.submit(self._fetch())
        self._pending.add_done_callback(self._fetched)

    def _fetched(self, future: concurrent.futures.Future[S]) -> None:
        # Runs on the runtime thread: hand the outcome over to the kernel's loop.
        if not self._kernel.call(self._land, future):
            self.stopped = True

    def _land(self, future: concurrent.futures.Future[S]) -> None:
        self._pending = None
        if self.stopped or future.cancelled():
            return
        error = future.exception()
        go_on = self._failed(error) if error is not None else self._apply(future.result())
        if go_on:
            self._schedule()
        else:
            self.stopped = True

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending is not None:
            self._pending.cancel()
