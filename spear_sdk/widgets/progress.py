"""The views of a :class:`~spear_sdk._progress.ProgressModel`, as in Dask's progress bars: a widget in a
notebook kernel (``progress_widget``), a ``tqdm`` bar elsewhere. The model and the waits that draw a view
live in ``spear_sdk._progress``, which knows no UI."""

from __future__ import annotations

import threading

from .._progress import NoView, ProgressModel, ProgressView
from .kernel import in_kernel, widgets_available


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


def view(model: ProgressModel, enabled: bool) -> ProgressView:
    """A widget in a notebook kernel's own thread, text elsewhere; nothing when not ``enabled``."""
    if not enabled:
        return NoView()
    if in_kernel() and threading.current_thread() is threading.main_thread() and widgets_available():
        from .progress_widget import WidgetView

        return WidgetView(model)
    return TextView(model)
