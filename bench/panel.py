"""P9 (docs/performance.md): live panel traffic under load, measured in a child (see
:mod:`bench.panel_child`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from .servers import run_script


def unavailable_reason() -> str:
    """Why P9 cannot be measured here, or ``""`` when it can."""
    if importlib.util.find_spec("spear_sdk.widgets") is None:
        return "spear_sdk.widgets not present"
    if importlib.util.find_spec("ipywidgets") is None:
        return "ipywidgets not installed"
    from spear_sdk.lab import Lab

    if not hasattr(Lab, "panel"):
        return "Lab.panel() not present"
    return ""


def panel_traffic(seconds: float, workdir: Path) -> dict[str, Any]:
    """The panel's update messages while ``f.map`` batches run for ``seconds``."""
    output = run_script("panel", ["-m", "bench.panel_child", str(seconds)], workdir)
    figures: dict[str, Any] = json.loads(output)
    figures["messages_per_s"] = figures["messages"] / figures["seconds"]
    return figures
