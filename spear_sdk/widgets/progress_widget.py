"""The notebook view of a :class:`~spear_sdk._progress.ProgressModel`: an ipywidgets bar and label,
drawn on the thread that made it (the kernel's), with a stable ``text/plain`` and a static HTML fallback."""

from __future__ import annotations

from typing import Any

import ipywidgets  # type: ignore[import-untyped]
from IPython.display import display

from .. import _repr
from .._progress import ProgressModel


def label_html(model: ProgressModel) -> str:
    detail = f"{model.rate:.1f} {model.unit}s/s" if model.outcome is None else model.outcome
    return _repr.render("progress_label.html", name=model.name, count=model.label(), detail=detail)


class ProgressWidget(ipywidgets.HBox):  # type: ignore[misc]
    """Root class ``spear-progress``."""

    def __init__(self, model: ProgressModel) -> None:
        self.model = model
        self.bar = ipywidgets.IntProgress(value=0, min=0, max=model.total or 1, bar_style="info")
        self.text = ipywidgets.HTML(value=label_html(model))
        super().__init__(children=[self.bar, self.text], _dom_classes=("spear-progress",))

    def __repr__(self) -> str:
        model = self.model
        total = "" if model.total is None else f" of {model.total} {model.unit}s"
        return f"<Progress {model.name}{total}>"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = _repr.render("progress.html", label=_repr.Safe(label_html(self.model)))
        return bundle


class WidgetView:
    """Shows a :class:`ProgressWidget` once, when made; each draw sends what changed."""

    def __init__(self, model: ProgressModel) -> None:
        self.widget = ProgressWidget(model)
        display(self.widget)  # type: ignore[no-untyped-call]

    def draw(self, model: ProgressModel) -> None:
        if model.total is not None:
            self.widget.bar.value = model.done
        self.widget.text.value = label_html(model)

    def close(self, model: ProgressModel) -> None:
        self.draw(model)
        self.widget.bar.bar_style = "success" if model.outcome == "done" else "danger"
