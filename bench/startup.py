"""P7 (docs/performance.md) and the idle footprint: fresh child interpreters running
:mod:`bench.startup_child`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from .memory import IdleFigures, watch_idle
from .servers import Child, run_script


class _IdleChild(Child):
    exits_on_eof = True


#: Seconds an idle child is left alone before it is watched (Ray's daemons finish starting meanwhile).
SETTLE_S = 2.0


def cold_start_s(kind: str, workdir: Path) -> float:
    """Seconds from a fresh interpreter's first statement to the first result (``ours`` or ``ray``)."""
    return float(run_script(f"cold-{kind}", ["-m", "bench.startup_child", kind], workdir))


def cold_start_then_idle(kind: str, workdir: Path, seconds: float) -> tuple[float, IdleFigures]:
    """:func:`cold_start_s`, then the child's whole tree (a lab or Ray, having answered one call) watched
    while it sits idle for ``seconds``."""
    child = _IdleChild(f"idle-{kind}", [sys.executable, "-m", "bench.startup_child", kind, "idle"], workdir)
    try:
        started = float(child.readline())
        time.sleep(SETTLE_S)
        return started, watch_idle(child.pid, seconds)
    finally:
        child.stop()
