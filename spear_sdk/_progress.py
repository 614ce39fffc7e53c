"""The progress of counted work (a ``map``) and the waits that show it, with no UI of their own.

The model is counted from any thread (``Core.map`` reports from the runtime loop). A view
(:class:`ProgressView`, e.g. the widget or text bar of ``widgets.progress``) draws it on the caller's
thread, every :data:`DRAW_INTERVAL_S` while the caller waits: the blocking wait is :meth:`Runtime.run`'s
(so Ctrl-C cancels the work as it does for any call), the async one runs on any anyio backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol, TypeVar

import anyio

from ._runtime import Runtime

T = TypeVar("T")

#: Seconds between two draws of a view: with its two widgets a bar sends at most 10 messages a second.
DRAW_INTERVAL_S = 0.2


class ProgressModel:
    """How much of ``total`` is done; ``add`` is safe from any thread."""

    def __init__(self, name: str, total: int | None, unit: str = "call") -> None:
        self.name = name
        self.total = total
        self.unit = unit
        self.started = time.monotonic()
        self.outcome: str | None = None  # "done" or "failed" once over
        self._done = 0
        self._lock = threading.Lock()

    def add(self, count: int = 1) -> None:
        with self._lock:
            self._done += count

    @property
    def done(self) -> int:
        return self._done

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return self._done / elapsed if elapsed > 0 else 0.0

    def label(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"{self._done}{of} {self.unit}s"


class ProgressView(Protocol):
    def draw(self, model: ProgressModel) -> None: ...
    def close(self, model: ProgressModel) -> None: ...


class NoView:
    """What ``progress=False`` shows."""

    def draw(self, model: ProgressModel) -> None:
        pass

    def close(self, model: ProgressModel) -> None:
        pass


def run_showing(
    runtime: Runtime, work: Coroutine[Any, Any, T], model: ProgressModel, shown: ProgressView
) -> T:
    """Block this thread on ``work`` (see :meth:`Runtime.run`), drawing ``shown`` here meanwhile."""
    try:
        result = runtime.run(work, tick=lambda: shown.draw(model), tick_interval=DRAW_INTERVAL_S)
    except BaseException:  # a failure, or Ctrl-C
        _close(model, shown, "failed")
        raise
    _close(model, shown, "done")
    return result


async def await_showing(work: Awaitable[T], model: ProgressModel, shown: ProgressView) -> T:
    """Await ``work`` on any anyio backend, drawing ``shown`` on this loop's thread meanwhile."""

    async def draw() -> None:
        while True:
            await anyio.sleep(DRAW_INTERVAL_S)
            shown.draw(model)

    error: Exception | None = None
    try:
        async with anyio.create_task_group() as drawing:
            drawing.start_soon(draw)
            try:
                result = await work
            except Exception as exc:  # raised below, outside the group, which would wrap it
                error = exc
            finally:
                drawing.cancel_scope.cancel()
    except BaseException:  # cancelled
        _close(model, shown, "failed")
        raise
    if error is not None:
        _close(model, shown, "failed")
        raise error
    _close(model, shown, "done")
    return result


def _close(model: ProgressModel, shown: ProgressView, outcome: str) -> None:
    model.outcome = outcome
    shown.close(model)
