"""What the monitoring panel shows, gathered on the runtime loop: counters and health from the server, and
throughput, latency, success rates and recent executions from reading the executions as they finish.

The server lists executions in creation order only, so :class:`ExecutionFeed` keeps a cursor: everything
up to it is finished and counted, and each refresh reads on from there (a bounded number of rows), counting
each execution once, when it is first seen finished.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .._core import Core
from .._listing import PAGE_LIMIT
from .._status import TERMINAL, status_name
from ..models import Stats
from ..wire import function_pb2

#: The newest executions the panel lists.
RECENT = 8
#: Points kept for the throughput and latency charts.
HISTORY = 60
#: Rows read per refresh at most: a backlog is caught up over several refreshes.
_ROWS_PER_REFRESH = 4000


@dataclass(frozen=True)
class Row:
    """One execution as the panel lists it."""

    execution_id: str
    name: str
    status: str
    duration_ms: float | None
    error: str = ""


@dataclass(frozen=True)
class FunctionRate:
    name: str
    completed: int
    finished: int

    @property
    def rate(self) -> float:
        return self.completed / self.finished if self.finished else 0.0


@dataclass(frozen=True)
class PanelState:
    """One refresh of the panel: immutable, so it can cross from the runtime thread to the kernel's."""

    health: str
    message: str
    running: int
    pending: int
    completed: int
    failed: int
    throughput: tuple[float, ...] = ()
    p50: tuple[float, ...] = ()
    p95: tuple[float, ...] = ()
    functions: tuple[FunctionRate, ...] = ()
    recent: tuple[Row, ...] = ()
    #: Breaches of the panel's alert rules (``spear_sdk.alerts.Breach``), when it has rules.
    alerts: tuple[Any, ...] | None = None
    #: p50, p95 and p99 run time in ms of each function's completed executions, from the server's stats.
    latency: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def counters(self) -> dict[str, int]:
        return {
            "running": self.running,
            "pending": self.pending,
            "completed": self.completed,
            "failed": self.failed,
        }


def row(info: function_pb2.ExecutionInfo) -> Row:
    status = status_name(info.status) or "unknown"
    finished = info.completed_at.seconds or info.completed_at.nanos
    return Row(
        execution_id=info.execution_id,
        name=info.task_name or info.function_name,
        status=status,
        duration_ms=float(info.execution_time_ms) if finished else None,
        error=info.error_code or info.error_message,
    )


class ExecutionFeed:
    """Reads executions in creation order from a cursor; reports each finished one once."""

    def __init__(self, rows_per_refresh: int = _ROWS_PER_REFRESH) -> None:
        self._settled = ""  # every execution up to this id is finished and counted
        self._counted: set[str] = set()  # finished and counted beyond the cursor
        self._recent: dict[str, Row] = {}
        self._rows_per_refresh = rows_per_refresh

    async def read(self, core: Core) -> list[Row]:
        """The executions that finished since the last read (in creation order); updates ``recent``."""
        start_after = self._settled
        newly: list[Row] = []
        seen: list[Row] = []  # rows read this refresh
        settled = True
        while len(seen) < self._rows_per_refresh:
            limit = min(PAGE_LIMIT, self._rows_per_refresh - len(seen))
            page = await core.executions_page(start_after, limit)
            for info in page.executions:
                current = row(info)
                seen.append(current)
                finished = current.status in TERMINAL
                if finished and current.execution_id not in self._counted:
                    newly.append(current)
                    self._counted.add(current.execution_id)
                if settled and finished:
                    self._settled = current.execution_id
                    self._counted.discard(current.execution_id)
                else:
                    settled = False
            if not page.has_more:
                break
            start_after = page.next_start_after
        await self._read_newest(core, seen)
        return newly

    async def _read_newest(self, core: Core, seen: Sequence[Row]) -> None:
        """The newest rows, read newest first: on a long history the counting above is still far behind
        (``seen``, the rows it read, stand in on a server that cannot list newest first)."""
        page = await core.executions_page(limit=RECENT, newest_first=True)
        rows = [row(info) for info in page.executions]
        if rows and any(a.execution_id < b.execution_id for a, b in itertools.pairwise(rows)):
            self._remember(seen)
            return
        self._recent = {r.execution_id: r for r in rows}

    def _remember(self, rows: Sequence[Row]) -> None:
        self._recent.update((r.execution_id, r) for r in rows)
        # Execution ids are time-ordered: the largest are the newest.
        for stale in sorted(self._recent)[:-RECENT]:
            del self._recent[stale]

    @property
    def recent(self) -> tuple[Row, ...]:
        return tuple(self._recent[k] for k in sorted(self._recent, reverse=True))


@dataclass
class Monitor:
    """The panel's data side; used only on the runtime loop."""

    core: Core
    feed: ExecutionFeed = field(default_factory=ExecutionFeed)
    _throughput: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _p50: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _p95: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _by_function: dict[str, list[int]] = field(default_factory=dict)
    _last: tuple[float, int] | None = None  # (monotonic time, finished count) of the previous refresh
    _lock: asyncio.Lock | None = None

    async def fetch(self) -> PanelState:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # an explicit refresh may overlap the periodic one
            return await self._fetch()

    async def _fetch(self) -> PanelState:
        health, stats = await asyncio.gather(self.core.health(), self.core.stats(0))
        newly = await self.feed.read(self.core)
        now, finished = time.monotonic(), stats.terminal
        if self._last is not None and now > self._last[0]:
            self._throughput.append(max(0, finished - self._last[1]) / (now - self._last[0]))
        self._last = (now, finished)
        durations = sorted(
            r.duration_ms for r in newly if r.duration_ms is not None and r.status == "completed"
        )
        if durations:
            self._p50.append(quantile(durations, 0.5))
            self._p95.append(quantile(durations, 0.95))
        for r in newly:
            counts = self._by_function.setdefault(r.name, [0, 0])
            counts[0] += r.status == "completed"
            counts[1] += 1
        return PanelState(
            health=health.status,
            message=health.message,
            running=stats.running,
            pending=stats.pending,
            completed=stats.completed,
            failed=stats.failed,
            throughput=tuple(self._throughput),
            p50=tuple(self._p50),
            p95=tuple(self._p95),
            functions=tuple(
                FunctionRate(name, completed, total)
                for name, (completed, total) in sorted(self._by_function.items())
            ),
            recent=self.feed.recent,
            latency=percentiles(stats),
        )


def percentiles(stats: Stats) -> dict[str, tuple[float, float, float]]:
    return {
        f.function: (f.p50_execution_time_ms, f.p95_execution_time_ms, f.p99_execution_time_ms)
        for f in stats.response.execution_stats.function_stats
        if f.completed
    }


def quantile(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values, interpolated linearly (numpy's default)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
