"""Each function's figures over a window (spearlet.latency): the same numbers as pandas, windows by
creation time, deletions, and the server-side rows of GetStats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from spearlet.engine import lifecycle as lc
from spearlet.latency import FunctionLatencies, function_label, run_time_ms
from spearlet.store.records import StoredExecution

_ids = iter(range(10**6))


def record(task: str, status: int, ms: float, created: float = 1000.0, memory: int = 0) -> StoredExecution:
    start = created + 0.5
    return StoredExecution(
        execution_id=f"{next(_ids):024x}",
        task_id="t-" + task,
        task_name=task,
        function_name="",
        mode=1,
        status=status,
        created_at=created,
        started_at=start,
        completed_at=start + ms / 1000,
        execution_time_ms=round(ms),
        memory_used_bytes=memory,
    )


def test_percentiles_match_pandas_quantiles_of_the_completed_run_times() -> None:
    runs = [record("f", lc.COMPLETED, ms, memory=1000 * i) for i, ms in enumerate(range(1, 101))]
    failures = [record("f", lc.FAILED, 999.0), record("f", lc.TIMEOUT, 5000.0)]
    figures = FunctionLatencies.of([*runs, *failures, record("g", lc.CANCELLED, 0)]).figures()
    assert [f.function for f in figures] == ["f", "g"]
    f, g = figures
    expected = pd.Series([run_time_ms(r) for r in runs])
    assert f.p50_ms == pytest.approx(expected.quantile(0.5))
    assert f.p95_ms == pytest.approx(expected.quantile(0.95))
    assert f.p99_ms == pytest.approx(expected.quantile(0.99))
    assert f.max_ms == pytest.approx(100.0) and f.average_ms == pytest.approx(50.5)
    assert f.average_memory_bytes == pytest.approx(np.mean([1000 * i for i in range(100)]))
    assert (f.completed, f.failed, f.timeout, f.finished) == (100, 1, 1, 102)
    assert f.success_rate_percent == pytest.approx(100 * 100 / 102)
    assert (g.cancelled, g.completed, g.p95_ms, g.success_rate_percent) == (1, 0, 0.0, 0.0)


def test_run_times_keep_sub_millisecond_resolution() -> None:
    figures = FunctionLatencies.of([record("f", lc.COMPLETED, 0.4), record("f", lc.COMPLETED, 1.4)]).figures()
    assert figures[0].p50_ms == pytest.approx(0.9)


def test_a_window_counts_executions_created_since_its_start() -> None:
    latencies = FunctionLatencies.of(
        [
            record("f", lc.COMPLETED, 100, created=10.0),
            record("f", lc.COMPLETED, 10, created=20.0),
            record("f", lc.FAILED, 1, created=30.0),
            record("old", lc.COMPLETED, 1, created=5.0),
        ]
    )
    (recent,) = latencies.figures(since=15.0)
    assert (recent.function, recent.completed, recent.failed) == ("f", 1, 1)
    assert recent.p95_ms == pytest.approx(10.0)
    assert latencies.overall(since=15.0) == pytest.approx((10.0, 10.0, 10.0))
    assert latencies.figures(since=31.0) == [] and latencies.overall(since=31.0) == (0.0, 0.0, 0.0)


def test_deleted_executions_leave_the_figures() -> None:
    kept, gone = record("f", lc.COMPLETED, 10), record("f", lc.COMPLETED, 500)
    latencies = FunctionLatencies.of([kept, gone, record("h", lc.COMPLETED, 3)])
    latencies.deleted(gone)
    (f, h) = latencies.figures()
    assert (f.completed, f.max_ms, h.completed) == (1, pytest.approx(10.0), 1)
    latencies.deleted(kept)
    assert [x.function for x in latencies.figures()] == ["h"]


def test_unfinished_executions_are_not_counted_and_labels_name_entry_points() -> None:
    pending = record("f", lc.PENDING, 0)
    assert FunctionLatencies.of([pending]).figures() == []
    assert function_label("mod", "score") == "mod:score" and function_label("f", "f") == "f"
