"""Resident memory and CPU time of a process tree (a server and its workers, a lab kernel, Ray's daemons)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and all its descendants (processes that vanish meanwhile count 0)."""
    total = 0
    for proc in _tree(pid):
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _cpu_by_pid(pid: int) -> dict[int, float]:
    seconds: dict[int, float] = {}
    for proc in _tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds[proc.pid] = times.user + times.system
    return seconds


@dataclass
class IdleFigures:
    seconds: float
    rss_mean_bytes: float
    rss_max_bytes: int
    #: CPU time of the whole tree over the window, as a percentage of one core.
    cpu_percent: float
    processes: int


def watch_idle(pid: int, seconds: float, interval: float = 0.25) -> IdleFigures:
    """Sample the tree of ``pid`` for ``seconds`` while it idles: its RSS and the CPU it burns meanwhile.

    CPU is summed per process present at both ends of the window, so a process that starts or ends in
    between does not count its whole life.
    """
    before = _cpu_by_pid(pid)
    start = time.monotonic()
    samples: list[int] = []
    while (now := time.monotonic()) - start < seconds:
        samples.append(tree_rss(pid))
        time.sleep(min(interval, max(0.0, seconds - (now - start))))
    elapsed = time.monotonic() - start
    after = _cpu_by_pid(pid)
    used = sum(after[p] - before[p] for p in after.keys() & before.keys())
    samples.append(tree_rss(pid))
    return IdleFigures(
        seconds=elapsed,
        rss_mean_bytes=sum(samples) / len(samples),
        rss_max_bytes=max(samples),
        cpu_percent=100.0 * used / elapsed,
        processes=len(after),
    )
