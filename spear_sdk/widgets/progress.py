"""Progress of a running ``map`` (or any counted work): a model and its views, as in Dask's progress bars.

The model is counted from any thread (``Core.map`` reports from the runtime loop). A view draws it on the
caller's thread, a few times a second at most: a widget in a notebook kernel, a ``tqdm`` bar elsewhere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from .. import _repr
from .._runtime import result_of
from .kernel import in_kernel, widgets_available

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
    def draw(self, model: ProgressModel) -> None:
        pass

    def close(self, model: ProgressModel) -> None:
        pass


class TextView:
    """A ``tqdm`` bar on stderr."""

    def __init__(self, model: ProgressModel) -> None:
        from tqdm.std import tqdm

        self._bar = tqdm(total=model.total, desc=model.name, unit=model.unit)

    def draw(self, model: ProgressModel) -> None:
        self._bar.update(model.done - self._bar.n)

    def close(self, model: ProgressModel) -> None:
        self.draw(model)
        self._bar.close()


def label_html(model: ProgressModel) -> str:
    detail = f"{model.rate:.1f} {model.unit}s/s" if model.outcome is None else model.outcome
    return _repr.render("progress_label.html", name=model.name, count=model.label(), detail=detail)


def view(model: ProgressModel, enabled: bool) -> ProgressView:
    """A widget in a notebook kernel's own thread, text elsewhere; nothing when not ``enabled``."""
    if not enabled:
        return NoView()
    if in_kernel() and threading.current_thread() is threading.main_thread() and widgets_available():
        from .progress_widget import WidgetView

        return WidgetView(model)
    return TextView(model)


def follow(future: concurrent.futures.Future[T], model: ProgressModel, shown: ProgressView) -> T:
    """Block this thread until ``future`` is done, drawing the progress here meanwhile; Ctrl-C cancels it."""
    try:
        while not concurrent.futures.wait([future], timeout=DRAW_INTERVAL_S).done:
            shown.draw(model)
    except KeyboardInterrupt:
        future.cancel()
        raise
    model.outcome = "done" if future.exception() is None else "failed"
    shown.close(model)
    return result_of(future)


async def follow_async(work: Awaitable[T], model: ProgressModel, shown: ProgressView) -> T:
    """Await ``work``, drawing the progress on this loop's thread meanwhile."""
    loop = asyncio.get_running_loop()
    timer: asyncio.TimerHandle | None = None

    def tick() -> None:
        nonlocal timer
        shown.draw(model)
        timer = loop.call_later(DRAW_INTERVAL_S, tick)

    timer = loop.call_later(DRAW_INTERVAL_S, tick)
    try:
        result = await work
    except BaseException:
        model.outcome = "failed"
        raise
    else:
        model.outcome = "done"
        return result
    finally:
        timer.cancel()
        shown.close(model)
