"""The panel's alert section: a badge with the number of breaches and a list of them (nothing when the
panel has no rules)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import _repr

_RED, _GREEN = "#d62728", "#2ca02c"


def alert_section(breaches: Sequence[Any] | None) -> str:
    if breaches is None:
        return ""
    items = "".join(
        _repr.render(
            "panel_alert_row.html",
            function=b.function,
            text=str(b),
            since=b.since.strftime("%H:%M:%S UTC"),
        )
        for b in breaches
    )
    count = len(breaches)
    return _repr.render(
        "panel_alerts.html",
        count=count,
        badge=f"{count} alert{'s' if count != 1 else ''}" if count else "no alerts",
        colour=_RED if count else _GREEN,
        items=_repr.Safe(items),
    )
