"""InvokeBatch (extension): many calls of one function in one RPC, each an execution of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import psutil
import pytest
from harness import TERMINAL, Harness, HarnessFactory, expect_code, pages, params, poll, value

from spear_sdk.wire import function_pb2 as fpb

COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
CANCELLED, TIMEOUT = fpb.EXECUTION_STATUS_CANCELLED, fpb.EXECUTION_STATUS_TIMEOUT
RUNNING = fpb.EXECUTION_STATUS_RUNNING


def batch_request(
    task_id: str, calls: list[tuple[object, ...]], context: fpb.ExecutionContext | None = None
) -> fpb.InvokeBatchRequest:
    return fpb.InvokeBatchRequest(
        template=fpb.InvokeFunctionRequest(task_id=task_id, context=context),
        calls=[fpb.BatchCall(parameters=params(*args)) for args in calls],
    )


async def results(h: Harness, request: fpb.InvokeBatchRequest) -> dict[int, fpb.BatchCallResult]:
    """Every call's result by index (and no call reported twice)."""
    found: dict[int, fpb.BatchCallResult] = {}
    async for message in h.fn.InvokeBatch(request):
        assert message.results, "a batch response carries at least one result"
        for item in message.results:
            assert item.index not in found, f"call {item.index} reported twice"
            found[item.index] = item
    return found


async def stored(h: Harness, task_id: str) -> list[fpb.ExecutionInfo]:
    request = fpb.ListExecutionsRequest(task_id=task_id, limit=1000)
    return [e for page in await pages(h.fn.ListExecutions, request) for e in page.executions]


async def test_every_call_is_an_execution_of_its_own(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    found = await results(shared, batch_request(task_id, [(i,) for i in range(500)]))
    assert sorted(found) == list(range(500))
    assert all(value(found[i].result) == i * i for i in range(500))
    assert all(found[i].result.status == COMPLETED for i in found)
    ids = {item.execution_id for item in found.values()}
    assert len(ids) == 500
    records = await stored(shared, task_id)
    assert {e.execution_id for e in records} == ids
    assert all(e.status == COMPLETED and e.started_at.seconds and e.completed_at.seconds for e in records)
    assert all(found[i].result.metrics["attempts"] == "1" for i in found)


async def test_a_failing_call_fails_alone_with_its_logs(shared: Harness) -> None:
    task_id = await shared.register("workloads:fail")
    other = await shared.register("workloads:shout")
    failing = await results(shared, batch_request(task_id, [("first",), ("second",)]))
    assert {item.result.status for item in failing.values()} == {FAILED}
    assert failing[1].result.error_code == "EXCEPTION"
    assert "second" in failing[1].result.error_message
    fine = await results(shared, batch_request(other, [("a",), ("b",)]))
    assert [value(fine[i].result) for i in range(2)] == ["a", "b"]
    for index, printed in enumerate("AB"):  # each call's output is its own
        status = await shared.status(fine[index].execution_id, include_logs=True)
        assert status.logs == [printed, "to stderr"], status.logs


async def test_a_call_over_its_timeout_ends_timeout_and_the_rest_complete(shared: Harness) -> None:
    task_id = await shared.register("workloads:sleep")
    calls: list[tuple[object, ...]] = [(0.0,)] * 6 + [(30.0,)] + [(0.0,)] * 6
    found = await results(shared, batch_request(task_id, calls, fpb.ExecutionContext(timeout_ms=300)))
    statuses = [found[i].result.status for i in range(len(calls))]
    assert statuses[6] == TIMEOUT, statuses
    assert "timed out after 300 ms" in found[6].result.error_message
    assert statuses[:6] + statuses[7:] == [COMPLETED] * 12


async def test_cancelling_one_call_leaves_the_others_running(shared: Harness) -> None:
    task_id = await shared.register("workloads:sleep")
    calls: list[tuple[object, ...]] = [(30.0,)] + [(0.0,)] * 20
    collected: dict[int, fpb.BatchCallResult] = {}
    reader = asyncio.ensure_future(_collect(shared.fn.InvokeBatch(batch_request(task_id, calls)), collected))
    target = ""

    async def long_call_found() -> bool:
        nonlocal target
        now = time.time()
        running = [e for e in await stored(shared, task_id) if e.status == RUNNING]
        long = [e for e in running if now - e.started_at.ToDatetime().timestamp() > 0.5]
        target = long[0].execution_id if long else ""
        return bool(target)

    await poll(long_call_found, what="the long call to run")
    cancelled = await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=target))
    assert cancelled.success, cancelled.message
    await asyncio.wait_for(reader, 20)
    assert sorted(collected) == list(range(21))
    assert collected[0].execution_id == target
    assert collected[0].result.status == CANCELLED
    assert [collected[i].result.status for i in range(1, 21)] == [COMPLETED] * 20


async def _collect(
    stream: AsyncIterator[fpb.InvokeBatchResponse], into: dict[int, fpb.BatchCallResult]
) -> None:
    async for message in stream:
        for item in message.results:
            into[item.index] = item


async def test_dropping_the_batch_cancels_what_runs_and_leaves_no_work(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    task_id = await h.register("workloads:sleep")
    call = h.fn.InvokeBatch(batch_request(task_id, [(30.0,)] * 50))

    async def two_running() -> bool:
        return sum(e.status == RUNNING for e in await stored(h, task_id)) == 2

    await poll(two_running, what="two calls to run")
    call.cancel()

    async def all_ended() -> bool:
        return all(e.status in TERMINAL for e in await stored(h, task_id))

    await poll(all_ended, what="every taken call to end")
    records = await stored(h, task_id)
    # Calls never taken were never created; the ones taken were cancelled.
    assert 2 <= len(records) < 50
    assert {e.status for e in records} == {CANCELLED}
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.details.running_executions == 0 and health.details.pending_executions == 0
    killed = set(_worker_pids(records))
    assert len(killed) == 2

    async def killed_workers_gone() -> bool:
        return not killed & {w.pid for w in psutil.Process().children(recursive=True)}

    await poll(killed_workers_gone, what="the workers running the calls to be gone")


def _worker_pids(records: list[fpb.ExecutionInfo]) -> list[int]:
    return [
        int(e.instance_id.removeprefix("worker-")) for e in records if e.instance_id.startswith("worker-")
    ]


async def test_a_lost_worker_is_retried_when_asked(shared: Harness, tmp_path: object) -> None:
    task_id = await shared.register("workloads:crash_once")
    marker = f"{tmp_path}/crashed"
    found = await results(
        shared, batch_request(task_id, [(marker,), (marker,)], fpb.ExecutionContext(max_retries=1))
    )
    assert [value(found[i].result) for i in range(2)] == ["recovered", "recovered"]
    assert sorted(found[i].result.metrics["attempts"] for i in range(2)) == ["1", "2"]


async def test_the_thread_executor_runs_batches_too(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    task_id = await h.register("workloads:add")
    found = await results(h, batch_request(task_id, [(i, 1) for i in range(40)]))
    assert [value(found[i].result) for i in range(40)] == [i + 1 for i in range(40)]


@pytest.mark.parametrize(
    ("template", "code"),
    [
        (fpb.InvokeFunctionRequest(task_id="no-such-task"), grpc.StatusCode.NOT_FOUND),
        (fpb.InvokeFunctionRequest(task_name="x"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            fpb.InvokeFunctionRequest(task_id="t", execution_mode=fpb.EXECUTION_MODE_STREAM),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (fpb.InvokeFunctionRequest(task_id="t", parameters=params(1)), grpc.StatusCode.INVALID_ARGUMENT),
        (fpb.InvokeFunctionRequest(task_id="t", execution_id="mine"), grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown task", "new task without artifact", "stream mode", "template parameters", "own id"],
)
async def test_bad_batches_are_refused_before_anything_runs(
    shared: Harness, template: fpb.InvokeFunctionRequest, code: grpc.StatusCode
) -> None:
    task_id = await shared.register("workloads:square")
    if template.task_id == "t":
        template.task_id = task_id
    request = fpb.InvokeBatchRequest(template=template, calls=[fpb.BatchCall(parameters=params(2))])

    async def first() -> object:
        async for message in shared.fn.InvokeBatch(request):
            return message
        return None

    await expect_code(first(), code)
    assert await stored(shared, task_id) == []


async def test_an_empty_batch_ends_at_once(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    assert await results(shared, batch_request(task_id, [])) == {}
