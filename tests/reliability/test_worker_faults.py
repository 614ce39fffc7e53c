"""R2: a worker that segfaults, calls ``os._exit``, runs out of memory under its limit or floods its output
fails only its own execution; the pool heals; no zombie or orphaned process is left (R2)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from harness import Harness, HarnessFactory, expect_code, poll, value
from processes import pid_dead, pid_gone, worker_pid, zombies
from soak import Record

from spear_sdk.wire import function_pb2 as fpb

COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
LOG_LIMIT = 1 << 20
TRUNCATED = f"[... output truncated at {LOG_LIMIT} bytes ...]"


@dataclass(frozen=True)
class Fault:
    location: str
    args: tuple[object, ...]
    status: int
    error_code: str
    says: str  # part of the error message, or of the logs when the call completes
    metadata: dict[str, str] = field(default_factory=dict)


FAULTS = {
    "segfault": Fault("workloads:segfault", (), FAILED, "WORKER_CRASHED", "killed by signal SIGSEGV"),
    "os._exit": Fault("workloads:crash", (3,), FAILED, "WORKER_CRASHED", "exited with code 3"),
    "out of memory": Fault(
        "workloads:allocate", (1024,), FAILED, "OUT_OF_MEMORY", "limit of 200 MiB", {"memory_limit_mb": "200"}
    ),
    "stdout flood": Fault("workloads:flood", (20,), COMPLETED, "", TRUNCATED),
    "stderr flood": Fault("workloads:flood", (20, "stderr"), COMPLETED, "", TRUNCATED),
}


def pool_pids(h: Harness) -> set[int]:
    return set(h.server.engine.executor.worker_pids())


async def pool_is_full(h: Harness) -> bool:
    return len(pool_pids(h)) == h.server.config.max_concurrent and all(
        not pid_dead(pid) for pid in pool_pids(h)
    )


@pytest.mark.parametrize("name", FAULTS)
async def test_a_faulting_worker_fails_only_its_own_execution(
    make_harness: HarnessFactory, name: str, figures: Record
) -> None:
    fault = FAULTS[name]
    h = await make_harness(max_concurrent=2)
    square = await h.register("workloads:square")
    faulty = await h.register(fault.location, metadata=fault.metadata)
    first_pool = pool_pids(h)

    async def steady() -> list[fpb.InvokeFunctionResponse]:
        return [await h.invoke(square, i) for i in range(30)]

    # Normal calls go on beside the faults, on the same two workers.
    normal = asyncio.ensure_future(steady())
    faults = [await h.invoke(faulty, *fault.args) for _ in range(3)]
    normal_responses = await normal

    assert [(r.result.status, value(r.result)) for r in normal_responses] == [
        (COMPLETED, i * i) for i in range(30)
    ]
    for response in faults:
        result = response.result
        assert (result.status, result.error_code) == (fault.status, fault.error_code), result
        if fault.status == FAILED:
            assert fault.says in result.error_message
        else:
            logs = "\n".join((await h.status(response.execution_id, include_logs=True)).logs)
            assert logs.endswith(fault.says)
            assert len(logs.encode()) <= LOG_LIMIT + len(TRUNCATED) + 1
    if fault.status == COMPLETED:
        figures(f"{name}: log bytes kept of 20 MiB printed", len(logs.encode()))

    # The pool heals, and every worker that died is reaped.
    await poll(lambda: pool_is_full(h), what="the pool to refill")
    assert value((await h.invoke(square, 7)).result) == 49
    used = first_pool | {worker_pid(r.instance_id) for r in (*faults, *normal_responses)}
    gone = used - pool_pids(h)
    await poll(lambda: _all_gone(gone), what="dead workers to be reaped")
    assert not zombies()
    figures(f"{name}: workers replaced", len(gone))


async def _all_gone(pids: set[int]) -> bool:
    return all(pid_gone(pid) for pid in pids)


async def test_a_crashing_worker_takes_the_processes_it_started_with_it(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await make_harness(max_concurrent=1)
    task_id = await h.register("workloads:spawn_then_segfault")
    pid_file = tmp_path / "grandchild.pid"
    response = await h.invoke(task_id, str(pid_file))
    assert response.result.error_code == "WORKER_CRASHED"
    grandchild = int(pid_file.read_text())

    async def grandchild_dead() -> bool:
        return pid_dead(grandchild)

    await poll(grandchild_dead, what="the worker's own child to die with it")
    assert not zombies()


async def test_the_memory_limit_applies_to_that_call_only(make_harness: HarnessFactory) -> None:
    # One worker, so every call below runs in the same warm process.
    h = await make_harness(max_concurrent=1)
    limited = await h.register("workloads:allocate", metadata={"memory_limit_mb": "200"})
    unlimited = await h.register("workloads:allocate")

    too_much = await h.invoke(limited, 1024)
    assert (too_much.result.status, too_much.result.error_code) == (FAILED, "OUT_OF_MEMORY")
    assert 'metadata["memory_limit_mb"]' in too_much.result.error_message
    logs = await h.status(too_much.execution_id, include_logs=True)
    assert any("MemoryError" in line for line in logs.logs), "the traceback goes to the logs"

    within = await h.invoke(limited, 50)
    assert within.result.status == COMPLETED and value(within.result) == 50 << 20
    assert within.result.memory_used_bytes >= 50 << 20
    beyond_the_limit_elsewhere = await h.invoke(unlimited, 300)
    assert beyond_the_limit_elsewhere.result.status == COMPLETED
    assert len({r.instance_id for r in (too_much, within, beyond_the_limit_elsewhere)}) == 1
    # An out-of-memory failure is the function's, not the system's: it is not retried.
    retried = await h.invoke(limited, 1024, context=fpb.ExecutionContext(max_retries=2))
    assert retried.result.error_code == "OUT_OF_MEMORY" and retried.result.metrics["attempts"] == "1"


@pytest.mark.parametrize("limit", ["0", "-5", "1.5", "abc", "", " 5", "5MB", "٣", str(1 << 40)])
async def test_a_memory_limit_must_be_a_positive_whole_number_of_mib(
    make_harness: HarnessFactory, limit: str
) -> None:
    h = await make_harness(executor="thread")
    spec = fpb.ArtifactSpec(
        artifact_type="python", location="workloads:square", metadata={"memory_limit_mb": limit}
    )
    await expect_code(
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="limited", artifact_spec=spec)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    await expect_code(
        h.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_name="limited", artifact_spec=spec)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert not (await h.fn.ListTasks(fpb.ListTasksRequest())).tasks


async def test_a_memory_limit_needs_a_worker_process(make_harness: HarnessFactory) -> None:
    h = await make_harness(executor="thread")
    limited = fpb.ArtifactSpec(
        artifact_type="python", location="workloads:square", metadata={"memory_limit_mb": "100"}
    )
    error = await expect_code(
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="t", artifact_spec=limited)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "process executor" in (error.details() or "")
    process = fpb.ArtifactSpec(artifact_type="process", location="true", metadata={"memory_limit_mb": "100"})
    await expect_code(
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="p", artifact_spec=process)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert not (await h.fn.ListTasks(fpb.ListTasksRequest())).tasks
