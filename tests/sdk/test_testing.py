"""spear_sdk.testing: assertions over stats and execution frames, and their failure messages."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

import spear_sdk
from spear_sdk.frames import executions_frame
from spear_sdk.models import Stats
from spear_sdk.testing import assert_executions, assert_stats, figures
from spear_sdk.wire import function_pb2 as pb


def stats(completed: int = 90, failed: int = 10, average_ms: float = 12.5) -> Stats:
    return Stats(
        pb.GetStatsResponse(
            service_stats=pb.ServiceStats(total_executions=completed + failed),
            execution_stats=pb.ExecutionStats(
                completed_executions=completed,
                failed_executions=failed,
                success_rate_percent=100 * completed / (completed + failed),
                average_execution_time_ms=average_ms,
            ),
        )
    )


def frame(*runs: tuple[str, int, int]) -> pd.DataFrame:
    """Executions of (function, status code, run time in ms), all started at one moment."""
    start = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    infos = []
    for i, (name, status, ms) in enumerate(runs):
        info = pb.ExecutionInfo(
            execution_id=f"{i:024x}", task_name=name, status=status, execution_time_ms=ms,  # type: ignore[arg-type]
            error_code="" if status == pb.EXECUTION_STATUS_COMPLETED else "EXCEPTION",
        )  # fmt: skip
        info.started_at.FromDatetime(start)
        info.completed_at.FromDatetime(start + dt.timedelta(milliseconds=ms))
        infos.append(info)
    return executions_frame(infos)


OK, FAILED = pb.EXECUTION_STATUS_COMPLETED, pb.EXECUTION_STATUS_FAILED


def test_matching_figures_pass_and_ranges_leave_sides_open() -> None:
    assert_stats(stats(), completed=90, failed=10, success_rate=90, average_latency_ms=12.5)
    assert_stats(stats(), success_rate=(85, None), average_latency_ms=(None, 20), completed=(90, 95))


def test_a_failure_lists_every_check_in_a_table() -> None:
    with pytest.raises(AssertionError) as failure:
        assert_stats(stats(), completed=100, failed=0, success_rate=(95, None), average_latency_ms=(None, 50))
    assert str(failure.value).splitlines() == [
        "assert_stats: 3 of 4 checks failed",
        "          figure              expected  actual",
        "  FAILED  completed           100       90",
        "  FAILED  failed              0         10",
        "  FAILED  success_rate        >= 95 %   90 %",
        "  ok      average_latency_ms  <= 50 ms  12.5 ms",
    ]


def test_tolerances_are_relative_or_absolute_whichever_is_larger() -> None:
    assert_stats(stats(), completed=95, rel=0.06)
    assert_stats(stats(), completed=93, abs=3)
    assert_stats(stats(), success_rate=90.00001)  # figures other than counts allow a relative 1e-6
    with pytest.raises(AssertionError, match=r"completed +95 ± 4\.75 +90"):
        assert_stats(stats(), completed=95, rel=0.05)
    with pytest.raises(AssertionError, match=r"\(tolerance: rel=None, abs=1\)"):
        assert_stats(stats(), failed=12, abs=1)
    with pytest.raises(AssertionError, match="completed"):
        assert_stats(stats(), completed=91)  # counts are exact by default


def test_percentiles_come_from_an_executions_frame() -> None:
    runs = frame(*[("f", OK, ms) for ms in range(1, 101)], ("f", FAILED, 5), ("g", OK, 1000))
    found = figures(runs[runs["task_name"] == "f"])
    assert found["p50_latency_ms"] == pytest.approx(50.5) and found["p95_latency_ms"] == pytest.approx(95.05)
    assert found["max_latency_ms"] == 100 and found["completed"] == 100 and found["failed"] == 1
    assert_stats(runs, completed=101, failed=1, p95_latency_ms=(None, 1000), max_latency_ms=1000)
    with pytest.raises(TypeError, match=r"pass client\.executions"):
        assert_stats(stats(), p95_latency_ms=(None, 100))


def test_assert_executions_selects_a_function_and_checks_its_rows() -> None:
    runs = frame(("f", OK, 10), ("f", FAILED, 3), ("f", OK, 12), ("g", OK, 400))
    assert_executions(runs, function="f", count=3, completed=2, failed=1, error_code="EXCEPTION")
    assert_executions(runs, function="g", status="completed", p50_latency_ms=(None, 500))
    with pytest.raises(AssertionError) as failure:
        assert_executions(runs, function="f", count=3, status="completed", max_latency_ms=(None, 11))
    assert str(failure.value).splitlines() == [
        "assert_executions('f'): 2 of 3 checks failed",
        "          figure          expected  actual",
        "  ok      count           3         3",
        "  FAILED  not completed   0         1",
        "  FAILED  max_latency_ms  <= 11 ms  12 ms",
    ]
    with pytest.raises(TypeError, match="unknown figure 'latency'"):
        assert_executions(runs, latency=3)


def test_against_a_real_lab(client: spear_sdk.Client) -> None:
    checked = client.function(lambda x: x * 2, name="testing-doubled")
    checked.map(range(12), progress=False)
    executions = client.executions(task=checked)
    assert_executions(executions, count=12, status="completed", p95_latency_ms=(0, 5000))
    current = client.stats()
    assert_stats(current, completed=current.completed, success_rate=(0, 100))
    with pytest.raises(AssertionError, match=r"FAILED  count +11 +12"):
        assert_executions(executions, count=11, completed=12)
