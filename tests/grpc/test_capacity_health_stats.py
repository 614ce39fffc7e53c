"""The concurrency limit and queue, health, and statistics computed from real state (docs/protocol.md)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import Harness, HarnessFactory, poll

from spear_sdk.wire import function_pb2 as fpb

ASYNC = fpb.EXECUTION_MODE_ASYNC
PENDING, RUNNING = fpb.EXECUTION_STATUS_PENDING, fpb.EXECUTION_STATUS_RUNNING
COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
CANCELLED, TIMEOUT = fpb.EXECUTION_STATUS_CANCELLED, fpb.EXECUTION_STATUS_TIMEOUT


async def statuses(h: Harness, task_id: str) -> list[int]:
    """One consistent snapshot of a task's execution statuses (a single RPC)."""
    listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
    return [e.status for e in listing.executions]


async def test_never_more_than_the_limit_running(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=2)
    task_id = await h.register("workloads:sleep")
    for _ in range(6):
        await h.invoke(task_id, 0.3, mode=ASYNC)
    seen_running = 0
    while True:
        current = await statuses(h, task_id)
        assert len(current) == 6
        running = current.count(RUNNING)
        assert running <= 2
        seen_running = max(seen_running, running)
        if running == 2:
            assert current.count(PENDING) == 6 - 2 - current.count(COMPLETED)
        if current.count(COMPLETED) == 6:
            break
        await asyncio.sleep(0.01)
    assert seen_running == 2


async def test_queued_work_waits_in_fifo_order(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:sleep")
    ids = [(await h.invoke(task_id, 0.05, mode=ASYNC)).execution_id for _ in range(5)]
    finals = [await h.wait_status(i) for i in ids]
    starts = [f.result.started_at.ToNanoseconds() for f in finals]
    assert starts == sorted(starts)


async def test_full_queue_is_resource_exhausted_without_a_record(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1, max_queued=2)
    task_id = await h.register("workloads:sleep")
    accepted = [(await h.invoke(task_id, 0.5, mode=ASYNC)).execution_id for _ in range(3)]
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await h.invoke(task_id, 0.5, mode=ASYNC)
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
    assert sorted(e.execution_id for e in listing.executions) == sorted(accepted)
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.status == "degraded" and "queue" in health.message
    for execution_id in accepted:
        assert (await h.wait_status(execution_id)).result.status == COMPLETED
    assert (await h.fn.GetHealth(fpb.GetHealthRequest())).status == "healthy"


async def test_cancelling_pending_work_never_runs_it(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:sleep")
    blocker = (await h.invoke(task_id, 0.5, mode=ASYNC)).execution_id
    queued = (await h.invoke(task_id, 0.01, mode=ASYNC)).execution_id
    assert (await h.status(queued)).result.status == PENDING
    cancel = await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=queued, reason="not needed"))
    assert cancel.success and cancel.final_status == CANCELLED
    final = await h.status(queued)
    assert final.result.status == CANCELLED and not final.result.HasField("started_at")
    assert (await h.wait_status(blocker)).result.status == COMPLETED


async def test_health_details_are_real(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:sleep")
    running = (await h.invoke(task_id, 5.0, mode=ASYNC)).execution_id
    waiting = (await h.invoke(task_id, 0.01, mode=ASYNC)).execution_id
    await h.wait_status(running, {RUNNING})
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    details = health.details
    assert health.status == "degraded" and "busy" in health.message
    assert details.running_executions == 1 and details.pending_executions == 1
    assert details.active_tasks == 1 and details.task_count == 1
    assert details.total_executions == 2
    assert details.total_memory_used > 10_000_000  # the server plus a worker
    info = details.system_info
    assert info["executor"] == "process" and info["store"] == "memory://"
    assert {"version", "python", "platform", "pid", "cpu_count"} <= set(info)
    for execution_id in (running, waiting):
        await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=execution_id))
    after = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert after.status == "healthy" and after.details.running_executions == 0
    assert not (await h.fn.GetHealth(fpb.GetHealthRequest())).HasField("details")


async def test_standard_health_service_and_reflection(shared: Harness) -> None:
    health = health_pb2_grpc.HealthStub(shared.channel)
    for service in ("", "spearlet.FunctionService", "spearlet.ObjectService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(shared.channel)
    call = reflect.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    reply = await call.read()
    await call.done_writing()
    names = {s.name for s in reply.list_services_response.service}
    assert {"spearlet.FunctionService", "spearlet.ObjectService", "grpc.health.v1.Health"} <= names


async def test_stats_after_a_known_mix_of_outcomes(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=2)
    square = await h.register("workloads:square", name="square")
    fail = await h.register("workloads:fail", name="fail")
    spin = await h.register("workloads:spin", name="spin")
    sleep = await h.register("workloads:sleep", name="sleep")
    for i in range(4):
        assert (await h.invoke(square, i)).result.status == COMPLETED
    for _ in range(2):
        assert (await h.invoke(fail)).result.status == FAILED
    assert (await h.invoke(spin, context=fpb.ExecutionContext(timeout_ms=100))).result.status == TIMEOUT
    slow = (await h.invoke(sleep, 10.0, mode=ASYNC)).execution_id
    await h.wait_status(slow, {RUNNING})
    await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=slow))

    stats = await h.fn.GetStats(fpb.GetStatsRequest(include_task_stats=True, include_execution_stats=True))
    ex = stats.execution_stats
    assert (ex.completed_executions, ex.failed_executions) == (4, 2)
    assert (ex.cancelled_executions, ex.timeout_executions) == (1, 1)
    assert (ex.running_executions, ex.pending_executions) == (0, 0)
    assert ex.success_rate_percent == pytest.approx(4 / 8 * 100)
    assert dict(ex.executions_by_function) == {"square": 4, "fail": 2, "spin": 1, "sleep": 1}
    assert ex.average_execution_time_ms >= 100 / 8
    service = stats.service_stats
    assert service.total_tasks == 4 and service.total_executions == 8
    assert service.total_memory_used > 0 and 0 < service.memory_usage_percent < 100
    assert service.cpu_usage_percent >= 0
    tasks = stats.task_stats
    assert dict(tasks.tasks_by_type) == {"python": 4}
    assert (tasks.active_tasks, tasks.idle_tasks) == (0, 4)
    assert [t.task_name for t in tasks.most_active_tasks][:2] == ["square", "fail"]
    assert tasks.most_active_tasks[0].execution_count == 4

    info = await h.fn.GetTask(fpb.GetTaskRequest(task_id=fail))
    assert info.task.execution_count == 2 and info.task.last_status == FAILED


async def test_stats_time_window(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    task_id = await h.register("workloads:square", name="sq")
    await h.invoke(task_id, 2)
    windowed = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True, time_range_hours=1))
    assert windowed.execution_stats.completed_executions == 1
    assert dict(windowed.execution_stats.executions_by_function) == {"sq": 1}
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await h.fn.GetStats(fpb.GetStatsRequest(time_range_hours=-1))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_stats_with_no_executions(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    stats = await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))
    assert stats.execution_stats.success_rate_percent == 0
    assert stats.execution_stats.average_execution_time_ms == 0
    assert stats.service_stats.total_executions == 0


async def test_thread_executor_runs_and_cancel_says_abandoned(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    assert (await h.invoke(await h.register("workloads:add"), 1, b=2)).result.status == COMPLETED
    task_id = await h.register("workloads:sleep")
    started = (await h.invoke(task_id, 0.5, mode=ASYNC)).execution_id
    await h.wait_status(started, {RUNNING})
    cancel = await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=started))
    assert cancel.success and cancel.final_status == CANCELLED
    assert "abandoned" in cancel.message


async def test_graceful_stop_finishes_in_flight_work(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    task_id = await h.register("workloads:sleep")
    call = asyncio.ensure_future(h.invoke(task_id, 0.2))
    await poll(lambda: _running(h), what="the call to start")
    await h.server.stop(5)
    response = await call
    assert response.result.status == COMPLETED


async def _running(h: Harness) -> bool:
    return any(live.record.status == RUNNING for live in h.server.engine.live.values())


async def test_stats_sections_come_when_asked(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    await h.invoke(await h.register("workloads:square"), 3)
    bare = await h.fn.GetStats(fpb.GetStatsRequest())
    assert bare.service_stats.total_executions == 1
    assert not bare.HasField("task_stats") and not bare.HasField("execution_stats")
    tasks_only = await h.fn.GetStats(fpb.GetStatsRequest(include_task_stats=True))
    assert tasks_only.HasField("task_stats") and not tasks_only.HasField("execution_stats")


async def test_a_store_that_does_not_answer_makes_the_server_unhealthy(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    await h.server.engine.store.close()
    health = await h.fn.GetHealth(fpb.GetHealthRequest())
    assert health.status == "unhealthy" and "store" in health.message
    check = await health_pb2_grpc.HealthStub(h.channel).Check(health_pb2.HealthCheckRequest())
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await h.fn.ListTasks(fpb.ListTasksRequest())
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
