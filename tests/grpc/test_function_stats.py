"""GetStats' figures by function: percentiles over the window, validation of the window, and the same
figures after a restart on a durable store (they are rebuilt from what is stored)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from harness import HarnessFactory

from spear_sdk.wire import function_pb2 as fpb


def rows(stats: fpb.GetStatsResponse) -> dict[str, fpb.FunctionStats]:
    return {f.function: f for f in stats.execution_stats.function_stats}


async def test_each_function_has_counts_success_rate_and_percentiles(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    sleeper = await h.register("workloads:sleep", name="sleeper")
    failing = await h.register("workloads:fail", name="failing")
    for seconds in (0.01, 0.02, 0.03, 0.04, 0.2):
        await h.invoke(sleeper, seconds)
    await h.invoke(failing)
    stats = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))
    sleep, fail = rows(stats)["sleeper"], rows(stats)["failing"]
    assert (sleep.executions, sleep.completed, sleep.failed, sleep.success_rate_percent) == (5, 5, 0, 100)
    assert 30 <= sleep.p50_execution_time_ms < 40 < 200 <= sleep.max_execution_time_ms
    assert sleep.p50_execution_time_ms < sleep.p95_execution_time_ms <= sleep.p99_execution_time_ms
    assert sleep.p99_execution_time_ms <= sleep.max_execution_time_ms
    assert (fail.executions, fail.failed, fail.success_rate_percent, fail.p95_execution_time_ms) == (
        1,
        1,
        0,
        0,
    )
    overall = stats.execution_stats
    assert (
        20 <= overall.p50_execution_time_ms <= overall.p95_execution_time_ms <= overall.p99_execution_time_ms
    )

    windowed = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True, time_range_seconds=600))
    assert rows(windowed)["sleeper"] == sleep
    only = fpb.GetStatsRequest(include_execution_stats=True, time_range_seconds=600, only_function_stats=True)
    from_memory = await h.fn.GetStats(only)
    assert rows(from_memory) == rows(stats) and from_memory.execution_stats.completed_executions == 0
    assert from_memory.execution_stats.p95_execution_time_ms == overall.p95_execution_time_ms
    endless = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True, time_range_seconds=1e300))
    assert rows(endless)["sleeper"] == sleep  # longer than the clock's history: all of it
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await h.fn.GetStats(fpb.GetStatsRequest(time_range_seconds=bad))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "time_range_seconds" in (exc.value.details() or "")

    await h.invoke(sleeper, 5, mode=fpb.EXECUTION_MODE_ASYNC)  # still running when counted
    running = rows(await h.fn.GetStats(only))["sleeper"]
    assert (running.executions, running.completed) == (6, 5)


async def test_deleting_a_task_with_its_executions_removes_its_figures(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    gone = await h.register("workloads:square", name="gone")
    kept = await h.register("workloads:square", name="kept")
    await h.invoke(gone, 2)
    await h.invoke(kept, 3)
    await h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=gone, cleanup_executions=True))
    stats = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))
    assert set(rows(stats)) == {"kept"}


async def test_the_figures_survive_a_restart_on_a_durable_store(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/stats.db"
    first = await make_harness(executor="thread", store=store)
    task = await first.register("workloads:sleep", name="durable")
    for seconds in (0.01, 0.015, 0.05):
        await first.invoke(task, seconds)
    before = rows(await first.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True)))["durable"]
    await first.server.stop(0)
    second = await make_harness(executor="thread", store=store)
    after = rows(await second.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True)))["durable"]
    assert after == before and after.completed == 3 and after.p95_execution_time_ms >= 40
