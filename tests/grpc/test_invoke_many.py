"""InvokeMany (extension): ASYNC invocations admitted in order, each accepted or refused alone. Calls of one
function with the same settings that come together run as a batch on warm workers; to a caller they are
the executions each invocation would have made alone."""

from __future__ import annotations

from pathlib import Path

import grpc
import psutil
from harness import Harness, HarnessFactory, params, poll, value

from spear_sdk.wire import function_pb2 as fpb

ASYNC = fpb.EXECUTION_MODE_ASYNC
COMPLETED, CANCELLED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_CANCELLED
TIMEOUT = fpb.EXECUTION_STATUS_TIMEOUT


def invocation(
    task_id: str, *args: object, context: fpb.ExecutionContext | None = None, **extra: object
) -> fpb.InvokeFunctionRequest:
    return fpb.InvokeFunctionRequest(
        task_id=task_id,
        parameters=params(*args),
        execution_mode=ASYNC,
        context=context,
        **extra,  # type: ignore[arg-type]
    )


async def invoke_many(h: Harness, invocations: list[fpb.InvokeFunctionRequest]) -> list[fpb.InvokeOutcome]:
    response = await h.fn.InvokeMany(fpb.InvokeManyRequest(invocations=invocations))
    assert len(response.outcomes) == len(invocations)
    return list(response.outcomes)


def scheduler_idle(h: Harness) -> bool:
    scheduler = h.server.engine.scheduler
    return bool(scheduler.running == 0 and scheduler.pending == 0)


async def test_many_calls_of_one_function_are_executions_of_their_own(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    task_id = await h.register("workloads:square")
    outcomes = await invoke_many(h, [invocation(task_id, i) for i in range(300)])
    assert all(o.error_status == 0 for o in outcomes)
    ids = [o.response.execution_id for o in outcomes]
    assert len(set(ids)) == 300
    # Each is known (stored) once accepted, and ends with its own result.
    assert (await h.status(ids[-1])).found
    for index, execution_id in enumerate(ids):
        ended = await h.wait_status(execution_id)
        assert ended.result.status == COMPLETED
        assert value(ended.result) == index * index

    async def idle() -> bool:
        return scheduler_idle(h)

    await poll(idle, what="every queue place and slot given back")
    assert h.server.engine.groups == set()


async def test_groups_and_single_calls_keep_their_order_and_settings(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    square = await h.register("workloads:square")
    shout = await h.register("workloads:shout")
    slow = fpb.ExecutionContext(timeout_ms=300)
    requests = [
        invocation(square, 1),
        invocation(square, 2),
        invocation(shout, "a"),  # another function: a group of its own
        invocation(square, 3, context=slow),  # other settings
        invocation("no-such-task", 4),  # refused alone
        invocation(square, 5),
        invocation(square, 6),
    ]
    outcomes = await invoke_many(h, requests)
    assert outcomes[4].error_status == grpc.StatusCode.NOT_FOUND.value[0]
    assert "no-such-task" in outcomes[4].error_message
    ended = {
        index: await h.wait_status(o.response.execution_id) for index, o in enumerate(outcomes) if index != 4
    }
    assert [value(ended[i].result) for i in (0, 1, 3, 5, 6)] == [1, 4, 9, 25, 36]
    assert value(ended[2].result) == "a"
    assert ended[3].result.metrics.get("attempts") == "1"
    created = [outcomes[i].response.execution_id for i in (0, 1, 2, 3, 5, 6)]
    infos = {
        e.execution_id: e
        for e in (await h.fn.ListExecutions(fpb.ListExecutionsRequest(limit=100))).executions
    }
    times = [infos[i].created_at.ToNanoseconds() for i in created]
    assert times == sorted(times), "admitted in the order of the request"


async def test_a_full_queue_refuses_the_rest_of_a_group_one_by_one(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1, max_queued=5)
    task_id = await h.register("workloads:sleep")
    outcomes = await invoke_many(h, [invocation(task_id, 0.2) for _ in range(10)])
    accepted = [o for o in outcomes if o.error_status == 0]
    refused = [o for o in outcomes if o.error_status != 0]
    assert len(accepted) == 6 and outcomes[:6] == accepted  # one running, five waiting
    assert {o.error_status for o in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]}
    assert all("queue is full" in o.error_message and o.retry_after_ms > 0 for o in refused)
    for outcome in accepted:
        assert (await h.wait_status(outcome.response.execution_id)).result.status == COMPLETED

    async def idle() -> bool:
        return scheduler_idle(h)

    await poll(idle, what="every queue place and slot given back")
    again = await invoke_many(h, [invocation(task_id, 0.0) for _ in range(6)])
    assert all(o.error_status == 0 for o in again)  # the places came back


async def test_a_call_of_a_group_is_cancelled_alone_and_times_out_alone(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:sleep")
    limited = fpb.ExecutionContext(timeout_ms=400)
    outcomes = await invoke_many(h, [invocation(task_id, s, context=limited) for s in (0.0, 30.0, 0.0, 0.0)])
    ids = [o.response.execution_id for o in outcomes]
    cancelled = await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=ids[3], reason="not this"))
    assert cancelled.success
    statuses = [(await h.wait_status(i)).result for i in ids]
    assert [r.status for r in statuses] == [COMPLETED, TIMEOUT, COMPLETED, CANCELLED], statuses
    assert "timed out after 400 ms" in statuses[1].error_message
    assert "not this" in statuses[3].error_message

    async def idle() -> bool:
        return scheduler_idle(h)

    await poll(idle, what="every queue place and slot given back")


async def test_a_stopping_server_lets_grouped_calls_finish_in_its_grace(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    h = await make_harness(max_concurrent=1, store=store)
    task_id = await h.register("workloads:sleep")
    outcomes = await invoke_many(h, [invocation(task_id, 0.1) for _ in range(3)])
    ids = [o.response.execution_id for o in outcomes]
    await h.server.stop(30)
    after = await make_harness(store=store)
    assert [(await after.status(i)).result.status for i in ids] == [COMPLETED] * 3


async def test_a_grouped_call_that_lost_its_worker_runs_again(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:crash_once")
    retried = fpb.ExecutionContext(max_retries=1)
    markers = [str(tmp_path / f"marker-{i}") for i in range(4)]
    markers[2] = markers[1]  # crashed by the second call already: runs once
    outcomes = await invoke_many(h, [invocation(task_id, m, context=retried) for m in markers])
    results = [(await h.wait_status(o.response.execution_id)).result for o in outcomes]
    assert [value(r) for r in results] == ["recovered"] * 4
    assert [r.metrics["attempts"] for r in results] == ["2", "2", "1", "2"]

    async def idle() -> bool:
        return scheduler_idle(h)

    await poll(idle, what="every queue place and slot given back")
    again = await invoke_many(h, [invocation(task_id, markers[0]) for _ in range(3)])
    assert all(o.error_status == 0 for o in again)


async def test_cancelling_a_running_grouped_call_kills_its_worker(make_harness: HarnessFactory) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:sleep")
    outcomes = await invoke_many(h, [invocation(task_id, 30.0), invocation(task_id, 0.0)])
    running, after = (o.response.execution_id for o in outcomes)

    async def worker_pid() -> int:
        listed = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id, limit=10))
        found = [e for e in listed.executions if e.execution_id == running and e.instance_id]
        return int(found[0].instance_id.removeprefix("worker-")) if found else 0

    async def started() -> bool:
        return await worker_pid() > 0

    await poll(started, what="the first call to start on a worker")
    pid = await worker_pid()
    cancelled = await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=running))
    assert cancelled.success and cancelled.final_status == CANCELLED
    assert not psutil.pid_exists(pid)  # gone by the time the cancel returned, as for a call alone
    assert (await h.wait_status(after)).result.status == COMPLETED  # the call behind it ran after all
