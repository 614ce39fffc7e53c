"""``SPEAR_SOAK=1`` turns the bounded CI runs of the reliability tests into long soak runs."""

from __future__ import annotations

import os
from collections.abc import Callable

#: The ``figures`` fixture: ``figures(name, value)`` records one measured figure of the calling test.
Record = Callable[[str, object], None]

SOAK = os.environ.get("SPEAR_SOAK") == "1"


def scale(ci: int, soak: int) -> int:
    """How many (kills, requests, seconds...) to do: ``ci`` normally, ``soak`` under ``SPEAR_SOAK=1``."""
    return soak if SOAK else ci


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]
