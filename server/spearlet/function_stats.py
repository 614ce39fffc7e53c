"""The per-function part of the GetStats answer (an extension: ``ExecutionStats.function_stats`` and the
run-time percentiles), and the window a request asks for."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire.errors import InvalidArgument

from .latency import FunctionFigures, function_label
from .store.records import StoredExecution
from .store.shared import FunctionRuns


def window_seconds(request: fpb.GetStatsRequest) -> float:
    """The window in seconds (0: all time): ``time_range_seconds`` when set, else ``time_range_hours``."""
    if request.time_range_hours < 0:
        raise InvalidArgument("time_range_hours must not be negative")
    seconds = request.time_range_seconds
    if not (math.isfinite(seconds) and seconds >= 0):
        raise InvalidArgument(f"time_range_seconds must be a finite number >= 0, not {seconds}")
    return seconds or request.time_range_hours * 3600.0


def function_stats(figures: FunctionFigures, executions: int) -> fpb.FunctionStats:
    return fpb.FunctionStats(
        function=figures.function,
        executions=executions,
        completed=figures.completed,
        failed=figures.failed,
        cancelled=figures.cancelled,
        timeout=figures.timeout,
        success_rate_percent=figures.success_rate_percent,
        average_execution_time_ms=figures.average_ms,
        p50_execution_time_ms=figures.p50_ms,
        p95_execution_time_ms=figures.p95_ms,
        p99_execution_time_ms=figures.p99_ms,
        max_execution_time_ms=figures.max_ms,
        average_memory_bytes=figures.average_memory_bytes,
    )


def active_counts(records: Iterable[StoredExecution], since: float) -> Counter[str]:
    """Pending and running executions created at ``since`` or later, by function."""
    return Counter(function_label(r.task_name, r.function_name) for r in records if r.created_at >= since)


def add_function_stats(
    stats: fpb.ExecutionStats,
    executions: Counter[str] | None,
    runs: FunctionRuns,
    active: Counter[str] | None = None,
) -> None:
    """Fill in each function's figures over the executions of a window: ``runs``, the figures of the
    finished ones by function and the run-time percentiles of every completed one.

    ``executions`` counts every execution of the window by function (running and pending included); when
    None, they are counted from ``runs``: the finished ones, plus ``active``. A function with none
    finished has a row of counts only."""
    finished = {f.function: f for f in runs.functions}
    if executions is None:
        executions = Counter({name: f.finished for name, f in finished.items()})
        executions.update(active or Counter())
    names = sorted({name for name, n in executions.items() if n > 0} | set(finished))
    stats.function_stats.extend(
        function_stats(finished.get(name) or FunctionFigures(name), max(executions[name], 0))
        for name in names
    )
    stats.p50_execution_time_ms, stats.p95_execution_time_ms, stats.p99_execution_time_ms = runs.overall
