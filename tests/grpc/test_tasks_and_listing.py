"""Task CRUD (RegisterTask, GetTask, ListTasks, DeleteTask), task resolution of InvokeFunction, and
ListExecutions, over real loopback gRPC (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence

import grpc
import pytest
from harness import Harness, HarnessFactory, expect_code, pages, params, value

from spear_sdk.wire import function_pb2 as fpb

COMPLETED = fpb.EXECUTION_STATUS_COMPLETED
FAILED = fpb.EXECUTION_STATUS_FAILED
RUNNING = fpb.EXECUTION_STATUS_RUNNING
CANCELLED = fpb.EXECUTION_STATUS_CANCELLED
INVALID = grpc.StatusCode.INVALID_ARGUMENT
_unique = itertools.count()


def unique(stem: str) -> str:
    return f"{stem}-{next(_unique)}"


def spec(location: str, artifact_type: str = "python", **fields: object) -> fpb.ArtifactSpec:
    return fpb.ArtifactSpec(artifact_type=artifact_type, location=location, **fields)


async def register(h: Harness, name: str, location: str, **fields: object) -> fpb.RegisterTaskResponse:
    return await h.fn.RegisterTask(
        fpb.RegisterTaskRequest(task_name=name, artifact_spec=spec(location, **fields))
    )


async def thread_harness(make_harness: HarnessFactory, **config: object) -> Harness:
    config.setdefault("max_concurrent", 4)
    return await make_harness(executor="thread", **config)


async def get_task(h: Harness, task_id: str, **fields: object) -> fpb.GetTaskResponse:
    return await h.fn.GetTask(fpb.GetTaskRequest(task_id=task_id, **fields))


async def list_pages(h: Harness, limit: int, **fields: object) -> list[fpb.ListExecutionsResponse]:
    return await pages(h.fn.ListExecutions, fpb.ListExecutionsRequest(limit=limit, **fields), most=100)


def listed_ids(pages: Sequence[fpb.ListExecutionsResponse]) -> list[str]:
    return [e.execution_id for p in pages for e in p.executions]


# -- RegisterTask -----------------------------------------------------------------------------------


async def test_register_new_unchanged_and_updated_in_place(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    created = await register(h, "calc", "workloads:square")
    assert created.success
    assert (created.created, created.updated) == (True, False)
    task = created.task
    assert task.task_id
    assert task.task_name == "calc"
    assert task.metadata["version"] == "1"
    assert (task.artifact_spec.artifact_type, task.artifact_spec.location) == ("python", "workloads:square")
    assert (await h.invoke(task.task_id, 3)).result.status == COMPLETED

    same = await register(h, "calc", "workloads:square")
    assert same.success
    assert (same.created, same.updated) == (False, False)
    assert same.task.task_id == task.task_id
    assert same.task.metadata["version"] == "1"

    updated = await register(h, "calc", "workloads:identity")
    assert (updated.created, updated.updated) == (False, True)
    assert updated.task.task_id == task.task_id
    assert updated.task.metadata["version"] == "2"
    assert updated.task.artifact_spec.location == "workloads:identity"
    assert updated.task.created_at == task.created_at
    assert updated.task.updated_at >= task.created_at
    assert updated.task.execution_count == 1, "an update keeps the task's history of executions"

    # The update is what runs from now on (a notebook cell's "hot reload").
    response = await h.invoke(task.task_id, 3)
    assert response.result.status == COMPLETED
    assert value(response.result) == 3

    again = await register(h, "calc", "workloads:add")
    assert (again.created, again.updated) == (False, True)
    assert again.task.task_id == task.task_id
    assert again.task.metadata["version"] == "3"
    assert value((await h.invoke(task.task_id, 3, b=4)).result) == 7

    fetched = await get_task(h, task.task_id)
    assert fetched.found
    assert fetched.task.metadata["version"] == "3"
    assert fetched.task.artifact_spec.location == "workloads:add"
    listed = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="calc", include_details=True))
    assert [(t.task_id, t.metadata["version"]) for t in listed.tasks] == [(task.task_id, "3")]

    # A change of checksum, version or metadata is a different artifact too.
    meta = await register(h, "calc", "workloads:add", metadata={"note": "x"})
    assert (meta.updated, meta.task.metadata["version"]) == (True, "4")


@pytest.mark.parametrize(
    "artifact",
    [
        spec("workloads:square", artifact_type="wasm"),
        spec("workloads:square", artifact_type=""),
        spec("workloads.square"),
        spec(""),
        spec("workloads:square", artifact_type="pickle"),
        spec("object://", artifact_type="pickle"),
        spec("workloads:square", checksum="md5:0123"),
        spec("workloads:square", checksum="sha256:" + "Z" * 64),
        spec("workloads:square", checksum="sha256:abc"),
    ],
    ids=[
        "unknown-type",
        "empty-type",
        "python-no-colon",
        "empty-location",
        "pickle-not-object-url",
        "pickle-empty-key",
        "checksum-md5",
        "checksum-not-hex",
        "checksum-short",
    ],
)
async def test_register_bad_artifact_is_invalid_argument(
    make_harness: HarnessFactory, artifact: fpb.ArtifactSpec
) -> None:
    h = await thread_harness(make_harness)
    await expect_code(
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="bad", artifact_spec=artifact)), INVALID
    )
    listed = await h.fn.ListTasks(fpb.ListTasksRequest())
    assert list(listed.tasks) == [], "nothing is registered by a refused call"


async def test_register_needs_a_name_and_an_artifact(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    await expect_code(register(h, "", "workloads:square"), INVALID)
    await expect_code(h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="no-spec")), INVALID)
    await expect_code(register(h, "n" * 257, "workloads:square"), INVALID)
    longest = await register(h, "n" * 256, "workloads:square")
    assert longest.created
    assert (await h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=longest.task.task_id))).deleted
    # An existing task is not touched by an invalid update.
    task = (await register(h, "kept", "workloads:square")).task
    await expect_code(register(h, "kept", "workloads:square", artifact_type="wasm"), INVALID)
    fetched = await get_task(h, task.task_id)
    assert fetched.task.metadata["version"] == "1"
    assert fetched.task.artifact_spec.location == "workloads:square"
    listed = await h.fn.ListTasks(fpb.ListTasksRequest())
    assert [t.task_name for t in listed.tasks] == ["kept"]


# -- InvokeFunction task resolution -----------------------------------------------------------------


def new_task_request(name: str, location: str | None, *args: object) -> fpb.InvokeFunctionRequest:
    return fpb.InvokeFunctionRequest(
        invocation_type=fpb.INVOCATION_TYPE_NEW_TASK,
        task_name=name,
        artifact_spec=spec(location) if location is not None else None,
        parameters=params(*args),
        execution_mode=fpb.EXECUTION_MODE_SYNC,
    )


async def test_new_task_invocation_registers_then_reuses(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    first = await h.fn.InvokeFunction(new_task_request("sq", "workloads:square", 4))
    assert first.success
    assert first.task_id
    assert value(first.result) == 16
    again = await h.fn.InvokeFunction(new_task_request("sq", "workloads:square", 5))
    assert again.success
    assert again.task_id == first.task_id
    assert value(again.result) == 25

    await expect_code(
        h.fn.InvokeFunction(new_task_request("sq", "workloads:identity", 5)), grpc.StatusCode.ALREADY_EXISTS
    )
    task = await get_task(h, first.task_id)
    assert task.task.artifact_spec.location == "workloads:square", "the refused call changed nothing"
    assert task.task.metadata["version"] == "1"
    assert task.task.execution_count == 2
    listed = await h.fn.ListTasks(fpb.ListTasksRequest())
    assert [t.task_id for t in listed.tasks] == [first.task_id]


async def test_new_task_invocation_needs_name_and_artifact(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    await expect_code(h.fn.InvokeFunction(new_task_request("", "workloads:square", 1)), INVALID)
    await expect_code(h.fn.InvokeFunction(new_task_request("no-artifact", None, 1)), INVALID)
    # UNKNOWN without task_id means NEW_TASK, with the same requirements.
    await expect_code(h.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_name="x")), INVALID)
    assert list((await h.fn.ListTasks(fpb.ListTasksRequest())).tasks) == []
    assert list((await h.fn.ListExecutions(fpb.ListExecutionsRequest())).executions) == []


async def test_existing_task_invocation(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    await expect_code(
        h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK, task_id="nope")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_code(
        h.fn.InvokeFunction(fpb.InvokeFunctionRequest(invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK)),
        INVALID,
    )
    # create_if_not_exists without what to create is still NOT_FOUND.
    await expect_code(
        h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK,
                task_id="nope",
                task_name="lazy",
                create_if_not_exists=True,
            )
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    assert list((await h.fn.ListTasks(fpb.ListTasksRequest())).tasks) == []

    created = await h.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK,
            task_id="nope",
            task_name="lazy",
            artifact_spec=spec("workloads:square"),
            create_if_not_exists=True,
            parameters=params(6),
        )
    )
    assert created.success
    assert value(created.result) == 36
    assert created.task_id
    fetched = await get_task(h, created.task_id)
    assert fetched.found
    assert fetched.task.task_name == "lazy"
    assert fetched.task.execution_count == 1

    # Now the task exists: EXISTING (explicit, or inferred from task_id) runs it.
    explicit = await h.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK, task_id=created.task_id, parameters=params(2)
        )
    )
    assert value(explicit.result) == 4
    inferred = await h.invoke(created.task_id, 3)
    assert (inferred.task_id, value(inferred.result)) == (created.task_id, 9)


# -- ListTasks --------------------------------------------------------------------------------------


async def test_list_tasks_prefix_order_and_details(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    ids = {}
    for name in ("ml/zeta", "ml/alpha", "etl/x", "ml/mid", "mlops"):
        ids[name] = (await register(h, name, "workloads:square")).task.task_id

    listed = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="ml/"))
    assert [t.task_name for t in listed.tasks] == ["ml/alpha", "ml/mid", "ml/zeta"]
    assert [t.task_id for t in listed.tasks] == [ids["ml/alpha"], ids["ml/mid"], ids["ml/zeta"]]
    assert (listed.has_more, listed.next_start_after) == (False, "")
    for info in listed.tasks:
        assert not info.HasField("artifact_spec"), "no artifact without include_details"
        assert info.created_at > 0

    detailed = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="ml", include_details=True))
    assert [t.task_name for t in detailed.tasks] == ["ml/alpha", "ml/mid", "ml/zeta", "mlops"]
    for info in detailed.tasks:
        assert info.HasField("artifact_spec")
        assert (info.artifact_spec.artifact_type, info.artifact_spec.location) == (
            "python",
            "workloads:square",
        )
        assert info.metadata["version"] == "1"

    everything = await h.fn.ListTasks(fpb.ListTasksRequest())
    assert [t.task_name for t in everything.tasks] == ["etl/x", "ml/alpha", "ml/mid", "ml/zeta", "mlops"]
    after = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="ml/", start_after="ml/alpha"))
    assert [t.task_name for t in after.tasks] == ["ml/mid", "ml/zeta"]


async def test_list_tasks_pagination(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    names = [f"t/{i:04d}" for i in range(250)]
    for name in reversed(names):
        await register(h, name, "workloads:square")
    await register(h, "u/other", "workloads:square")

    pages: list[fpb.ListTasksResponse] = []
    start_after = ""
    while True:
        page = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="t/", limit=100, start_after=start_after))
        pages.append(page)
        if not page.has_more:
            break
        assert len(pages) < 10
        start_after = page.next_start_after
    assert [len(p.tasks) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [p.next_start_after for p in pages] == [names[99], names[199], ""]
    assert [t.task_name for p in pages for t in p.tasks] == names

    default = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="t/", limit=0))
    assert [t.task_name for t in default.tasks] == names[:100], "limit 0 means 100"
    assert default.has_more
    big = await h.fn.ListTasks(fpb.ListTasksRequest(limit=5000))
    assert [t.task_name for t in big.tasks] == [*names, "u/other"]
    assert (big.has_more, big.next_start_after) == (False, "")
    exact = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="t/", limit=50, start_after=names[199]))
    assert [t.task_name for t in exact.tasks] == names[200:]
    assert (exact.has_more, exact.next_start_after) == (False, "")
    await expect_code(h.fn.ListTasks(fpb.ListTasksRequest(limit=-1)), INVALID)


async def test_task_execution_count_and_last_status_are_exact(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    square = (await register(h, "count/square", "workloads:square")).task.task_id
    fail = (await register(h, "count/fail", "workloads:fail")).task.task_id
    idle = (await register(h, "count/idle", "workloads:square")).task.task_id

    async def figures(task_id: str) -> tuple[int, int]:
        task = (await get_task(h, task_id)).task
        return task.execution_count, task.last_status

    assert await figures(square) == (0, fpb.EXECUTION_STATUS_UNKNOWN)
    assert (await h.invoke(square, 2)).result.status == COMPLETED
    assert (await h.invoke(square, 3)).result.status == COMPLETED
    assert await figures(square) == (2, COMPLETED)

    # The same task, completed then failed: the last status is the newest run's.
    square_fails = await h.invoke(square, "not a number")
    assert square_fails.result.status == FAILED
    assert await figures(square) == (3, FAILED)
    assert (await h.invoke(square, 4)).result.status == COMPLETED
    assert await figures(square) == (4, COMPLETED)

    for _ in range(3):
        assert (await h.invoke(fail, "x")).result.status == FAILED
    assert await figures(fail) == (3, FAILED)
    assert await figures(idle) == (0, fpb.EXECUTION_STATUS_UNKNOWN)

    listed = await h.fn.ListTasks(fpb.ListTasksRequest(prefix="count/"))
    assert [(t.task_name, t.execution_count, t.last_status) for t in listed.tasks] == [
        ("count/fail", 3, FAILED),
        ("count/idle", 0, fpb.EXECUTION_STATUS_UNKNOWN),
        ("count/square", 4, COMPLETED),
    ]


# -- GetTask ----------------------------------------------------------------------------------------


async def test_get_task_unknown_and_empty_id(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    missing = await get_task(h, "no-such-task")
    assert not missing.found
    assert missing.message
    await expect_code(get_task(h, ""), INVALID)
    await expect_code(get_task(h, "", include_executions=True), INVALID)


async def test_get_task_newest_executions_first(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    task_id = (await register(h, "hist", "workloads:square")).task.task_id
    other = (await register(h, "hist-other", "workloads:square")).task.task_id
    ids = []
    for i in range(12):
        ids.append((await h.invoke(task_id, i)).execution_id)
        await h.invoke(other, i)  # interleaved executions of another task must not show up

    plain = await get_task(h, task_id)
    assert plain.found
    assert list(plain.executions) == []
    assert plain.task.execution_count == 12

    default = await get_task(h, task_id, include_executions=True)
    assert [e.execution_id for e in default.executions] == ids[::-1][:10]
    assert all(e.task_id == task_id and e.status == COMPLETED for e in default.executions)

    three = await get_task(h, task_id, include_executions=True, execution_limit=3)
    assert [e.execution_id for e in three.executions] == [ids[11], ids[10], ids[9]]
    many = await get_task(h, task_id, include_executions=True, execution_limit=50)
    assert [e.execution_id for e in many.executions] == ids[::-1]


# -- DeleteTask -------------------------------------------------------------------------------------


async def test_delete_unknown_or_empty_task(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    await expect_code(h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id="nope")), grpc.StatusCode.NOT_FOUND)
    await expect_code(
        h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id="nope", force=True, cleanup_executions=True)),
        grpc.StatusCode.NOT_FOUND,
    )
    await expect_code(h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id="")), INVALID)


async def test_delete_task_with_running_work_needs_force(make_harness: HarnessFactory) -> None:
    h = await make_harness()  # process executor: cancelling really stops the sleeping worker
    task_id = (await register(h, unique("sleeper"), "workloads:sleep")).task.task_id
    running = await h.invoke(task_id, 60, mode=fpb.EXECUTION_MODE_ASYNC)
    assert running.success
    await h.wait_status(running.execution_id, {RUNNING})

    await expect_code(
        h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=task_id)), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert (await get_task(h, task_id)).found
    assert (await h.status(running.execution_id)).result.status == RUNNING
    (info,) = (await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))).executions
    assert (info.execution_id, info.status, info.execution_mode) == (
        running.execution_id,
        RUNNING,
        fpb.EXECUTION_MODE_ASYNC,
    )
    assert info.HasField("started_at")
    assert not info.HasField("completed_at")

    started = time.monotonic()
    deleted = await h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=task_id, force=True))
    assert time.monotonic() - started < 10
    assert deleted.success
    assert deleted.deleted
    assert deleted.cleaned_executions == 0
    final = await h.status(running.execution_id)
    assert final.found, "without cleanup_executions the record stays"
    assert final.result.status == CANCELLED
    assert not (await get_task(h, task_id)).found
    assert list((await h.fn.ListTasks(fpb.ListTasksRequest())).tasks) == []
    await expect_code(h.invoke(task_id, 1), grpc.StatusCode.NOT_FOUND)


async def test_force_delete_with_cleanup_counts_the_cancelled_execution(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    task_id = (await register(h, unique("sleeper"), "workloads:sleep")).task.task_id
    done = [(await h.invoke(task_id, 0)).execution_id for _ in range(2)]
    running = await h.invoke(task_id, 60, mode=fpb.EXECUTION_MODE_ASYNC)
    await h.wait_status(running.execution_id, {RUNNING})

    deleted = await h.fn.DeleteTask(
        fpb.DeleteTaskRequest(task_id=task_id, force=True, cleanup_executions=True)
    )
    assert deleted.deleted
    assert deleted.cleaned_executions == 3
    for execution_id in [*done, running.execution_id]:
        assert not (await h.status(execution_id)).found
    assert list((await h.fn.ListExecutions(fpb.ListExecutionsRequest())).executions) == []
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert (health.details.total_executions, health.details.running_executions) == (0, 0)
    assert (health.details.task_count, health.details.active_tasks) == (0, 0)


async def test_delete_task_cleans_up_its_executions(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    name = unique("doomed")
    doomed = (await register(h, name, "workloads:square")).task.task_id
    kept = (await register(h, unique("kept"), "workloads:square")).task.task_id
    doomed_ids = [(await h.invoke(doomed, i)).execution_id for i in range(3)]
    doomed_ids += [(await h.invoke(doomed, "bad")).execution_id for _ in range(2)]
    kept_ids = [(await h.invoke(kept, i)).execution_id for i in range(2)]

    deleted = await h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=doomed, cleanup_executions=True))
    assert deleted.success
    assert deleted.deleted
    assert deleted.cleaned_executions == 5

    assert list((await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=doomed))).executions) == []
    for execution_id in doomed_ids:
        assert not (await h.status(execution_id)).found
    remaining = await h.fn.ListExecutions(fpb.ListExecutionsRequest())
    assert [e.execution_id for e in remaining.executions] == kept_ids
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.details.total_executions == 2
    assert health.details.task_count == 1

    # The name is free again: registering it makes a new task.
    reborn = await register(h, name, "workloads:square")
    assert reborn.created
    assert reborn.task.task_id != doomed
    assert reborn.task.execution_count == 0


# -- ListExecutions ---------------------------------------------------------------------------------


async def test_list_executions_pagination_filters_and_limits(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    square = (await register(h, "le/square", "workloads:square")).task.task_id
    fail = (await register(h, "le/fail", "workloads:fail")).task.task_id

    async def run(task_id: str, arg: object) -> fpb.InvokeFunctionResponse:
        return await h.invoke(task_id, arg)

    # 250 executions: 200 completed (square), 50 failed (fail), interleaved, many in flight at once.
    calls = [run(fail, "x") if i % 5 == 4 else run(square, i) for i in range(250)]
    responses: list[fpb.InvokeFunctionResponse] = []
    for start in range(0, len(calls), 50):
        responses += await asyncio.gather(*calls[start : start + 50])
    by_status = {COMPLETED: set(), FAILED: set()}
    for response in responses:
        by_status[response.result.status].add(response.execution_id)
    assert (len(by_status[COMPLETED]), len(by_status[FAILED])) == (200, 50)
    all_ids = sorted(by_status[COMPLETED] | by_status[FAILED])
    assert len(all_ids) == 250

    pages = await list_pages(h, 100)
    assert [len(p.executions) for p in pages] == [100, 100, 50]
    assert [p.has_more for p in pages] == [True, True, False]
    assert [p.next_start_after for p in pages] == [all_ids[99], all_ids[199], ""]
    assert listed_ids(pages) == all_ids, "each exactly once, in id order"
    created = [e.created_at.ToNanoseconds() for p in pages for e in p.executions]
    assert created == sorted(created), "id order is creation order"

    completed = listed_ids(await list_pages(h, 64, status_filter=COMPLETED))
    assert completed == sorted(by_status[COMPLETED])
    failed_pages = await list_pages(h, 20, status_filter=FAILED)
    assert [len(p.executions) for p in failed_pages] == [20, 20, 10]
    assert listed_ids(failed_pages) == sorted(by_status[FAILED])
    assert all(e.status == FAILED for p in failed_pages for e in p.executions)
    assert listed_ids(await list_pages(h, 100, status_filter=fpb.EXECUTION_STATUS_RUNNING)) == []

    assert listed_ids(await list_pages(h, 100, task_id=fail)) == sorted(by_status[FAILED])
    assert listed_ids(await list_pages(h, 30, task_id=square)) == sorted(by_status[COMPLETED])
    assert listed_ids(await list_pages(h, 100, task_id=square, status_filter=FAILED)) == []
    assert listed_ids(await list_pages(h, 100, task_id="no-such-task")) == []

    default = await h.fn.ListExecutions(fpb.ListExecutionsRequest(limit=0))
    assert [e.execution_id for e in default.executions] == all_ids[:100], "limit 0 means 100"
    assert (default.has_more, default.next_start_after) == (True, all_ids[99])
    big = await h.fn.ListExecutions(fpb.ListExecutionsRequest(limit=5000))
    assert [e.execution_id for e in big.executions] == all_ids
    assert (big.has_more, big.next_start_after) == (False, "")
    exact = await h.fn.ListExecutions(fpb.ListExecutionsRequest(limit=50, start_after=all_ids[199]))
    assert [e.execution_id for e in exact.executions] == all_ids[200:]
    assert (exact.has_more, exact.next_start_after) == (False, "")
    after_task = await h.fn.ListExecutions(
        fpb.ListExecutionsRequest(task_id=fail, start_after=sorted(by_status[FAILED])[9], limit=5)
    )
    assert [e.execution_id for e in after_task.executions] == sorted(by_status[FAILED])[10:15]

    await expect_code(h.fn.ListExecutions(fpb.ListExecutionsRequest(status_filter=99)), INVALID)  # type: ignore[arg-type]
    await expect_code(h.fn.ListExecutions(fpb.ListExecutionsRequest(status_filter=-1)), INVALID)  # type: ignore[arg-type]
    await expect_code(h.fn.ListExecutions(fpb.ListExecutionsRequest(limit=-1)), INVALID)


async def test_execution_info_fields(make_harness: HarnessFactory) -> None:
    h = await thread_harness(make_harness)
    task_id = (await register(h, "info/sleep", "workloads:sleep")).task.task_id
    before = time.time()
    response = await h.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            task_id=task_id,
            parameters=params(0.05),
            execution_mode=fpb.EXECUTION_MODE_SYNC,
            context=fpb.ExecutionContext(
                session_id="sess-1", user_id="ada", headers={"x-trace": "abc", "x-cell": "7"}
            ),
            invocation_metadata={"notebook": "01.ipynb", "purpose": "test"},
        )
    )
    after = time.time()
    assert response.success
    listed = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
    assert len(listed.executions) == 1
    info = listed.executions[0]
    assert info.execution_id == response.execution_id
    assert (info.task_id, info.task_name) == (task_id, "info/sleep")
    assert info.execution_mode == fpb.EXECUTION_MODE_SYNC
    assert info.status == COMPLETED
    assert info.attempt == 1
    assert info.error_message == ""
    for stamp in ("created_at", "started_at", "completed_at"):
        assert info.HasField(stamp), stamp
    created, started, completed = (
        info.created_at.ToNanoseconds() / 1e9,
        info.started_at.ToNanoseconds() / 1e9,
        info.completed_at.ToNanoseconds() / 1e9,
    )
    assert before - 0.001 <= created <= started <= completed <= after + 0.001
    assert info.execution_time_ms >= 50
    assert abs(info.execution_time_ms - (completed - started) * 1000) <= 1
    metadata = dict(info.metadata)
    assert metadata["notebook"] == "01.ipynb"
    assert metadata["purpose"] == "test"
    assert metadata["session_id"] == "sess-1"
    assert metadata["user_id"] == "ada"
    header_values = {v for k, v in metadata.items() if "x-trace" in k or "x-cell" in k}
    assert header_values == {"abc", "7"}, metadata

    # The same record through GetTask, and the failed case through ListExecutions.
    through_task = await get_task(h, task_id, include_executions=True)
    assert through_task.executions[0] == info
    failed = await h.invoke(task_id, "not seconds", mode=fpb.EXECUTION_MODE_ASYNC)
    final = await h.wait_status(failed.execution_id)
    assert final.result.status == FAILED
    failed_info = (
        await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id, status_filter=FAILED))
    ).executions
    assert [e.execution_id for e in failed_info] == [failed.execution_id]
    assert failed_info[0].execution_mode == fpb.EXECUTION_MODE_ASYNC
    assert failed_info[0].error_message
    assert failed_info[0].attempt == 1
    assert failed_info[0].completed_at.ToNanoseconds() >= failed_info[0].started_at.ToNanoseconds()


async def test_pages_end_early_rather_than_outgrow_the_message_limit(make_harness: HarnessFactory) -> None:
    limit = 256 << 10
    h = await thread_harness(make_harness, max_message_bytes=limit, max_object_bytes=64 << 10)
    note = "n" * (40 << 10)  # ten records of this cannot travel in one response
    names = [f"big-{i}" for i in range(10)]
    for name in names:
        await h.fn.RegisterTask(
            fpb.RegisterTaskRequest(
                task_name=name, task_description=note, artifact_spec=spec("workloads:square")
            )
        )
    task_id = (await h.fn.ListTasks(fpb.ListTasksRequest(limit=1))).tasks[0].task_id
    ids = []
    for i in range(10):
        response = await h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_id=task_id, parameters=params(i), invocation_metadata={"note": note}
            )
        )
        ids.append(response.execution_id)

    pages = await list_pages(h, 1000)
    assert len(pages) > 1 and all(page.ByteSize() <= limit for page in pages)
    assert listed_ids(pages) == ids
    tasks: list[str] = []
    after = ""
    while True:
        page = await h.fn.ListTasks(fpb.ListTasksRequest(limit=1000, start_after=after))
        assert page.ByteSize() <= limit
        tasks += [t.task_name for t in page.tasks]
        if not page.has_more:
            break
        after = page.next_start_after
    assert tasks == names
    # GetTask has no next page: it brings as many of the newest executions as fit.
    newest = await get_task(h, task_id, include_executions=True, execution_limit=1000)
    assert newest.ByteSize() <= limit
    assert [e.execution_id for e in newest.executions] == ids[::-1][: len(newest.executions)]
    assert 1 <= len(newest.executions) < 10
