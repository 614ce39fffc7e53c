"""Each function's figures from the server's stats (``Stats.by_function``): counts, success rate, run-time
percentiles and memory over the stats' window, one row per function."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .wire import function_pb2

#: Columns of ``Stats.by_function``; latencies are of completed executions, NaN where there is none.
FUNCTION_COLUMNS = MappingProxyType(
    {
        "function": pd.StringDtype(),
        "executions": pd.Int64Dtype(),
        "completed": pd.Int64Dtype(),
        "failed": pd.Int64Dtype(),
        "cancelled": pd.Int64Dtype(),
        "timeout": pd.Int64Dtype(),
        "success_rate": np.dtype("float64"),
        "mean_latency_ms": np.dtype("float64"),
        "p50_latency_ms": np.dtype("float64"),
        "p95_latency_ms": np.dtype("float64"),
        "p99_latency_ms": np.dtype("float64"),
        "max_latency_ms": np.dtype("float64"),
        "mean_memory_bytes": np.dtype("float64"),
    }
)
_SOURCES = {
    "function": "function",
    "executions": "executions",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
    "timeout": "timeout",
    "success_rate": "success_rate_percent",
    "mean_latency_ms": "average_execution_time_ms",
    "p50_latency_ms": "p50_execution_time_ms",
    "p95_latency_ms": "p95_execution_time_ms",
    "p99_latency_ms": "p99_execution_time_ms",
    "max_latency_ms": "max_execution_time_ms",
    "mean_memory_bytes": "average_memory_bytes",
}
_RUN_TIMES = ("mean_latency_ms", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms")


def has_percentiles(stats: function_pb2.ExecutionStats) -> bool:
    """Whether the server sent each function's figures (an older one sends counts only)."""
    finished = (
        stats.completed_executions
        + stats.failed_executions
        + stats.cancelled_executions
        + stats.timeout_executions
    )
    return bool(stats.function_stats) or not (finished or stats.executions_by_function)


def function_frame(stats: function_pb2.ExecutionStats) -> pd.DataFrame:
    """One row per function, most executions first; from an older server, the counts only (NA)."""
    rows: list[dict[str, Any]]
    if stats.function_stats:
        rows = [
            {column: getattr(f, field) for column, field in _SOURCES.items()} for f in stats.function_stats
        ]
        for row in rows:
            if not row["completed"]:
                row.update(dict.fromkeys(("mean_memory_bytes", *_RUN_TIMES), np.nan))
            if not row["completed"] + row["failed"] + row["cancelled"] + row["timeout"]:
                row["success_rate"] = np.nan
    else:
        rows = [{"function": name, "executions": n} for name, n in stats.executions_by_function.items()]
    rows.sort(key=lambda row: (-row["executions"], row["function"]))
    columns: dict[str, pd.Series[Any]] = {
        name: pd.Series([row.get(name) for row in rows], dtype=dtype)  # type: ignore[call-overload]
        for name, dtype in FUNCTION_COLUMNS.items()
    }
    frame: pd.DataFrame = pd.DataFrame(columns)
    return frame
