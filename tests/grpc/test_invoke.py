"""InvokeFunction and StreamFunction on a real server: every mode, artifact type and failure
(docs/protocol.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import textwrap
from pathlib import Path

import cloudpickle
import grpc
import psutil
import pytest
from harness import Harness, HarnessFactory, params, poll, value

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

SYNC, ASYNC, STREAM = fpb.EXECUTION_MODE_SYNC, fpb.EXECUTION_MODE_ASYNC, fpb.EXECUTION_MODE_STREAM
COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
CANCELLED, TIMEOUT = fpb.EXECUTION_STATUS_CANCELLED, fpb.EXECUTION_STATUS_TIMEOUT
RUNNING, PENDING = fpb.EXECUTION_STATUS_RUNNING, fpb.EXECUTION_STATUS_PENDING
PYTHON_RESULTS = fpb.ExecutionContext(headers={"accept": "application/x-python-pickle"})


async def pickle_task(h: Harness, payload: object, name: str) -> str:
    data = cloudpickle.dumps(payload)
    await h.obj.PutObject(opb.PutObjectRequest(key=f"fn/{name}", value=data, overwrite=True))
    checksum = "sha256:" + hashlib.sha256(data).hexdigest()
    return await h.register(f"object://fn/{name}", artifact_type="pickle", name=name, checksum=checksum)


def process_script(tmp_path: Path) -> Path:
    script = tmp_path / "tool.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            call = json.load(sys.stdin)
            print("working on", call["function"], file=sys.stderr)
            if call["function"] == "fail":
                sys.exit(4)
            if call["function"] == "lines":
                for i in range(int(call["args"][0])):
                    print(json.dumps({"i": i}))
            else:
                print(json.dumps({"sum": sum(call["args"]), "kwargs": call["kwargs"]}))
            """
        )
    )
    return script


async def stream(
    h: Harness, task_id: str, *args: object, **kwargs: object
) -> list[fpb.StreamExecutionResult]:
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(*args, **kwargs))
    return [message async for message in h.fn.StreamFunction(request)]


# -- the three artifact types in the three modes ------------------------------------------------------


async def test_python_sync_returns_value_and_timing(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    response = await shared.invoke(task_id, 3)
    assert response.success and response.result.status == COMPLETED
    assert value(response.result) == 9
    assert response.execution_id and response.task_id == task_id
    assert response.instance_id.startswith("worker-")
    assert response.status_endpoint.endswith(response.execution_id)
    result = response.result
    assert result.started_at.ToNanoseconds() <= result.completed_at.ToNanoseconds()
    assert set(result.metrics) >= {"queue_time_ms", "cpu_time_ms", "attempts"}
    assert result.metrics["attempts"] == "1"
    assert result.memory_used_bytes > 0


async def test_python_async_is_polled_to_completion(shared: Harness) -> None:
    task_id = await shared.register("workloads:add")
    response = await shared.invoke(task_id, 2, b=5, mode=ASYNC)
    assert response.success and response.result.status in (PENDING, RUNNING)
    assert not response.result.HasField("result")
    final = await shared.wait_status(response.execution_id)
    assert final.found and final.result.status == COMPLETED and value(final.result) == 7


async def test_async_with_wait_returns_the_result(shared: Harness) -> None:
    task_id = await shared.register("workloads:add")
    response = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(1, 2), execution_mode=ASYNC, wait=True)
    )
    assert response.result.status == COMPLETED and value(response.result) == 3


async def test_python_stream_sends_chunks_then_one_final(shared: Harness) -> None:
    task_id = await shared.register("workloads:count")
    messages = await stream(shared, task_id, 5)
    chunks, final = messages[:-1], messages[-1]
    assert [codec.decode(m.chunk_data) for m in chunks] == [0, 1, 2, 3, 4]
    assert all(m.status == RUNNING and not m.is_final for m in chunks)
    assert final.is_final and final.status == COMPLETED
    assert sum(m.is_final for m in messages) == 1
    assert len({m.execution_id for m in messages}) == 1
    recorded = await shared.status(final.execution_id)
    assert recorded.result.status == COMPLETED


async def test_stream_of_a_failing_generator_ends_with_the_error(shared: Harness) -> None:
    def broken(n: int):  # type: ignore[no-untyped-def]
        yield n
        raise RuntimeError("half way")

    task_id = await pickle_task(shared, broken, "broken-gen")
    messages = await stream(shared, task_id, 1)
    assert [codec.decode(m.chunk_data) for m in messages[:-1]] == [1]
    assert messages[-1].is_final and messages[-1].status == FAILED
    assert "RuntimeError: half way" in messages[-1].error_message
    assert messages[-1].metadata["error_code"] == "EXCEPTION"


async def test_pickle_closure_and_dict_of_entry_points(shared: Harness) -> None:
    offset = 10
    task_id = await pickle_task(shared, lambda x: x + offset, "closure")
    assert value((await shared.invoke(task_id, 5)).result) == 15
    table = {"double": lambda x: 2 * x, "neg": lambda x: -x}
    multi = await pickle_task(shared, table, "table")
    assert value((await shared.invoke(multi, 4, function_name="double")).result) == 8
    assert value((await shared.invoke(multi, 4, function_name="neg")).result) == -4


async def test_pickle_checksum_mismatch_fails_the_execution(shared: Harness) -> None:
    data = cloudpickle.dumps(lambda: 1)
    await shared.obj.PutObject(opb.PutObjectRequest(key="fn/tampered", value=data))
    task_id = await shared.register(
        "object://fn/tampered", artifact_type="pickle", checksum="sha256:" + "0" * 64
    )
    response = await shared.invoke(task_id)
    assert not response.success and response.result.status == FAILED
    assert response.result.error_code == "ARTIFACT_LOAD_FAILED"
    assert "checksum" in response.result.error_message


async def test_a_pickled_function_replaced_after_its_calls_is_checked_again(shared: Harness) -> None:
    """The server keeps the function's bytes it read for one call for the next: replacing or deleting the
    object must still reach the next call."""
    task_id = await pickle_task(shared, lambda x: x + 1, "kept-function")
    for x in range(3):
        assert value((await shared.invoke(task_id, x)).result) == x + 1
    other = cloudpickle.dumps(lambda x: x - 1)
    await shared.obj.PutObject(opb.PutObjectRequest(key="fn/kept-function", value=other, overwrite=True))
    replaced = await shared.invoke(task_id, 5)
    assert not replaced.success and replaced.result.error_code == "ARTIFACT_LOAD_FAILED"
    assert "checksum mismatch" in replaced.result.error_message
    await shared.obj.DeleteObject(opb.DeleteObjectRequest(key="fn/kept-function", force=True))
    deleted = await shared.invoke(task_id, 5)
    assert not deleted.success and deleted.result.error_code == "ARTIFACT_LOAD_FAILED"
    assert "not found" in deleted.result.error_message


async def test_a_pickled_function_without_a_checksum_runs_its_objects_current_bytes(
    shared: Harness,
) -> None:
    await shared.obj.PutObject(
        opb.PutObjectRequest(key="fn/unchecked-function", value=cloudpickle.dumps(lambda: "first"))
    )
    task_id = await shared.register(
        "object://fn/unchecked-function", artifact_type="pickle", name="unchecked-function"
    )
    assert value((await shared.invoke(task_id)).result) == "first"
    assert value((await shared.invoke(task_id)).result) == "first"
    await shared.obj.PutObject(
        opb.PutObjectRequest(
            key="fn/unchecked-function", value=cloudpickle.dumps(lambda: "second"), overwrite=True
        )
    )
    assert value((await shared.invoke(task_id)).result) == "second"


async def test_pickled_python_objects_travel_both_ways(shared: Harness) -> None:
    task_id = await shared.register("workloads:identity")
    sample = {"tuple": (1, 2), "set": {3}, "ints": [1, 2]}
    response = await shared.invoke(task_id, sample, context=PYTHON_RESULTS)
    assert response.result.result.type_url == codec.PICKLE_TYPE_URL
    assert value(response.result) == sample


async def test_json_values_travel_as_protobuf_values(shared: Harness) -> None:
    task_id = await shared.register("workloads:echo")
    response = await shared.invoke(task_id, "a", 1.5, True, None, flag=False)
    assert response.result.result.type_url.endswith("google.protobuf.Value")
    assert value(response.result) == {"args": ["a", 1.5, True, None], "kwargs": {"flag": False}}


async def test_wrapper_values_are_accepted(shared: Harness) -> None:
    from google.protobuf import any_pb2, wrappers_pb2

    task_id = await shared.register("workloads:add")
    a, b = any_pb2.Any(), any_pb2.Any()
    a.Pack(wrappers_pb2.Int32Value(value=4))
    b.Pack(wrappers_pb2.DoubleValue(value=0.5))
    response = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            task_id=task_id,
            parameters=[fpb.FunctionParameter(value=a), fpb.FunctionParameter(name="b", value=b)],
        )
    )
    assert value(response.result) == 4.5


async def test_process_artifact_sync_stream_and_failure(shared: Harness, tmp_path: Path) -> None:
    script = process_script(tmp_path)
    task_id = await shared.register(
        sys.executable, artifact_type="process", metadata={"args": json.dumps([str(script)])}
    )
    response = await shared.invoke(task_id, 1.0, 2.0, function_name="sum", k="v")
    assert response.result.status == COMPLETED
    assert value(response.result) == {"sum": 3.0, "kwargs": {"k": "v"}}
    assert response.instance_id.startswith("process-")
    logs = await shared.status(response.execution_id, include_logs=True)
    assert "working on sum" in logs.logs

    request = fpb.InvokeFunctionRequest(task_id=task_id, function_name="lines", parameters=params(3.0))
    messages = [m async for m in shared.fn.StreamFunction(request)]
    assert [codec.decode(m.chunk_data) for m in messages[:-1]] == [{"i": 0.0}, {"i": 1.0}, {"i": 2.0}]
    assert messages[-1].is_final and messages[-1].status == COMPLETED

    failed = await shared.invoke(task_id, function_name="fail")
    assert failed.result.status == FAILED and failed.result.error_code == "PROCESS_EXIT"
    assert "4" in failed.result.error_message


DOUBLE_SCRIPT = """
import json, sys
call = json.load(sys.stdin)
if call["function"] == "upto":
    for i in range(call["args"][0]):
        print(json.dumps(i))
else:
    print(json.dumps(call["args"][0] * 2))
"""


async def doubling_task(h: Harness, kind: str, tmp_path: Path) -> str:
    """A task of the given artifact type with entry points ``double(x)`` and ``upto(n)`` (a generator)."""
    if kind == "python":
        return await h.register("workloads:double")
    if kind == "pickle":

        def upto(n: int):  # type: ignore[no-untyped-def]
            yield from range(n)

        return await pickle_task(h, {"double": lambda x: x * 2, "upto": upto}, f"doubling-{tmp_path.name}")
    script = tmp_path / "double.py"
    script.write_text(DOUBLE_SCRIPT)
    return await h.register(
        sys.executable, artifact_type="process", metadata={"args": json.dumps([str(script)])}
    )


@pytest.mark.parametrize("kind", ["python", "pickle", "process"])
async def test_every_artifact_type_in_every_mode(shared: Harness, tmp_path: Path, kind: str) -> None:
    task_id = await doubling_task(shared, kind, tmp_path)
    sync = await shared.invoke(task_id, 21, function_name="double")
    assert sync.result.status == COMPLETED and value(sync.result) == 42

    accepted = await shared.invoke(task_id, 21, function_name="double", mode=ASYNC)
    assert accepted.success and accepted.result.status in (PENDING, RUNNING)
    polled = await shared.wait_status(accepted.execution_id)
    assert polled.result.status == COMPLETED and value(polled.result) == 42

    request = fpb.InvokeFunctionRequest(task_id=task_id, function_name="upto", parameters=params(3))
    messages = [m async for m in shared.fn.StreamFunction(request)]
    assert [codec.decode(m.chunk_data) for m in messages[:-1]] == [0, 1, 2]
    assert [m.is_final for m in messages] == [False, False, False, True]
    assert messages[-1].status == COMPLETED


@pytest.mark.parametrize("kind", ["python", "pickle"])
async def test_pickled_values_in_every_mode(shared: Harness, tmp_path: Path, kind: str) -> None:
    task_id = await doubling_task(shared, kind, tmp_path)
    pair = (1, "a")
    sync = await shared.invoke(task_id, pair, function_name="double", context=PYTHON_RESULTS)
    assert value(sync.result) == (1, "a", 1, "a")
    accepted = await shared.invoke(task_id, pair, function_name="double", mode=ASYNC, context=PYTHON_RESULTS)
    assert value((await shared.wait_status(accepted.execution_id)).result) == (1, "a", 1, "a")


# -- failures are results, not RPC errors --------------------------------------------------------------


async def test_raising_function_fails_with_traceback_in_logs(shared: Harness) -> None:
    task_id = await shared.register("workloads:fail")
    response = await shared.invoke(task_id, "bad input")
    assert not response.success
    assert response.result.status == FAILED
    assert response.result.error_code == "EXCEPTION"
    assert response.result.error_message == "ValueError: bad input"
    status = await shared.status(response.execution_id, include_logs=True)
    text = "\n".join(status.logs)
    assert "about to fail" in text
    assert "Traceback" in text and "ValueError: bad input" in text


async def test_what_the_function_raised_travels_as_fields(shared: Harness) -> None:
    task_id = await shared.register("workloads:fail")
    response = await shared.invoke(task_id, "bad: input")
    remote = response.result.remote_error
    assert (remote.type, remote.message) == ("ValueError", "bad: input")
    assert remote.traceback.startswith("Traceback (most recent call last):")
    assert "raise ValueError(message)" in remote.traceback and "in fail" in remote.traceback
    stored = await shared.status(response.execution_id)
    assert stored.result.remote_error == remote
    page = await shared.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
    assert [e.remote_error for e in page.executions if e.execution_id == response.execution_id] == [remote]
    ok = await shared.invoke(await shared.register("workloads:square"), 3)
    assert not ok.result.HasField("remote_error")


async def test_a_stream_ends_with_what_the_function_raised(shared: Harness) -> None:
    task_id = await shared.register("workloads:fail_midway")
    final = (await stream(shared, task_id, 1))[-1]
    assert final.status == FAILED and final.remote_error.type == "RuntimeError"
    assert "in fail_midway" in final.remote_error.traceback


async def test_bad_arguments_fail_the_execution(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    response = await shared.invoke(task_id, 1, 2, 3)
    assert response.result.status == FAILED and response.result.error_code == "BAD_ARGUMENTS"


async def test_unserializable_result_fails_the_execution(shared: Harness) -> None:
    import threading

    task_id = await pickle_task(shared, lambda: threading.Lock(), "lock")
    response = await shared.invoke(task_id)
    assert response.result.status == FAILED and response.result.error_code == "RESULT_NOT_SERIALIZABLE"


async def test_missing_module_fails_artifact_load(shared: Harness) -> None:
    task_id = await shared.register("no_such_module_here:fn")
    response = await shared.invoke(task_id)
    assert response.result.error_code == "ARTIFACT_LOAD_FAILED"


async def test_endless_loop_times_out_and_its_worker_is_gone(shared: Harness) -> None:
    task_id = await shared.register("workloads:spin")
    response = await shared.invoke(task_id, context=fpb.ExecutionContext(timeout_ms=200))
    assert response.result.status == TIMEOUT and response.result.error_code == "TIMEOUT"
    assert 200 <= response.result.execution_time_ms < 1000
    pid = int(response.instance_id.removeprefix("worker-"))
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert value((await shared.invoke(await shared.register("workloads:square"), 2)).result) == 4


async def test_server_default_timeout_applies(make_harness: HarnessFactory) -> None:
    h = await make_harness(default_timeout_ms=150)
    response = await h.invoke(await h.register("workloads:spin"))
    assert response.result.status == TIMEOUT


async def test_cancelling_a_running_sleep_kills_its_worker(shared: Harness) -> None:
    task_id = await shared.register("workloads:sleep")
    started = await shared.invoke(task_id, 30.0, mode=ASYNC)
    running = await shared.wait_status(started.execution_id, {RUNNING})
    assert running.result.status == RUNNING
    await poll(lambda: _has_instance(shared, task_id), what="the worker to pick the execution up")
    info = await shared.fn.GetTask(fpb.GetTaskRequest(task_id=task_id, include_executions=True))
    pid = int(info.executions[0].instance_id.removeprefix("worker-"))
    cancel = await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=started.execution_id))
    assert cancel.success and cancel.final_status == CANCELLED
    assert not psutil.pid_exists(pid)
    final = await shared.status(started.execution_id)
    assert final.result.status == CANCELLED
    again = await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=started.execution_id))
    assert not again.success and again.final_status == CANCELLED


async def _has_instance(h: Harness, task_id: str) -> bool:
    info = await h.fn.GetTask(fpb.GetTaskRequest(task_id=task_id, include_executions=True))
    return bool(info.executions[0].instance_id)


async def test_cancel_errors(shared: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=""))
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id="nope"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    done = await shared.invoke(await shared.register("workloads:square"), 1)
    late = await shared.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=done.execution_id))
    assert not late.success and late.final_status == COMPLETED


async def test_crashing_worker_fails_alone_and_the_pool_heals(shared: Harness) -> None:
    task_id = await shared.register("workloads:crash")
    response = await shared.invoke(task_id, 3)
    assert response.result.status == FAILED and response.result.error_code == "WORKER_CRASHED"
    assert value((await shared.invoke(await shared.register("workloads:square"), 5)).result) == 25


async def test_crash_is_retried_when_asked(shared: Harness, tmp_path: Path) -> None:
    task_id = await shared.register("workloads:crash_once")
    response = await shared.invoke(
        task_id, str(tmp_path / "marker"), context=fpb.ExecutionContext(max_retries=1)
    )
    assert response.result.status == COMPLETED and value(response.result) == "recovered"
    assert response.result.metrics["attempts"] == "2"
    logs = await shared.status(response.execution_id, include_logs=True)
    assert any("attempt 1 lost" in line for line in logs.logs)


async def test_crash_without_retries_is_not_retried(shared: Harness, tmp_path: Path) -> None:
    task_id = await shared.register("workloads:crash_once")
    response = await shared.invoke(task_id, str(tmp_path / "marker"))
    assert response.result.error_code == "WORKER_CRASHED" and response.result.metrics["attempts"] == "1"


async def test_exceptions_are_not_retried(shared: Harness) -> None:
    task_id = await shared.register("workloads:fail")
    response = await shared.invoke(task_id, context=fpb.ExecutionContext(max_retries=3))
    assert response.result.error_code == "EXCEPTION" and response.result.metrics["attempts"] == "1"


# -- request fields are honoured -------------------------------------------------------------------------


async def test_environment_applies_to_that_run_only(shared: Harness) -> None:
    task_id = await shared.register("workloads:getenv")
    context = fpb.ExecutionContext(environment={"SPEAR_TEST_VAR": "set"})
    assert value((await shared.invoke(task_id, "SPEAR_TEST_VAR", context=context)).result) == "set"
    assert value((await shared.invoke(task_id, "SPEAR_TEST_VAR")).result) is None


async def test_metadata_session_user_and_headers_are_stored(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    response = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            task_id=task_id,
            parameters=params(2),
            invocation_metadata={"cell": "7"},
            context=fpb.ExecutionContext(session_id="s1", user_id="ada", headers={"x-trace": "abc"}),
        )
    )
    task = await shared.fn.GetTask(fpb.GetTaskRequest(task_id=task_id, include_executions=True))
    metadata = dict(task.executions[0].metadata)
    assert task.executions[0].execution_id == response.execution_id
    assert metadata["cell"] == "7" and metadata["session_id"] == "s1" and metadata["user_id"] == "ada"
    assert metadata["header.x-trace"] == "abc"


async def test_stdout_and_stderr_are_captured(shared: Harness) -> None:
    task_id = await shared.register("workloads:shout")
    response = await shared.invoke(task_id, "hello")
    status = await shared.status(response.execution_id, include_logs=True, include_result=True)
    assert "HELLO" in status.logs and "to stderr" in status.logs
    assert value(status.result) == "hello"
    without = await shared.status(response.execution_id)
    assert not without.logs and not without.result.HasField("result")


async def test_force_new_instance_runs_in_a_fresh_worker(shared: Harness) -> None:
    task_id = await shared.register("workloads:pid")
    warm = {value((await shared.invoke(task_id)).result) for _ in range(4)}
    fresh = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, force_new_instance=True)
    )
    fresh_pid = value(fresh.result)
    assert fresh_pid not in warm
    assert fresh.instance_id == f"worker-{fresh_pid}"


async def test_caller_supplied_execution_id(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    first = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(3), execution_id="my-run-1")
    )
    assert first.execution_id == "my-run-1"
    for request in (
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(3), execution_id="my-run-1"),
        fpb.InvokeFunctionRequest(
            task_id=task_id, parameters=params(3), context=fpb.ExecutionContext(execution_id="my-run-1")
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await shared.fn.InvokeFunction(request)
        assert exc.value.code() == grpc.StatusCode.ALREADY_EXISTS


# -- bad requests --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_fields", "code"),
    [
        ({"execution_mode": STREAM}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"execution_mode": 42}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"invocation_type": 9}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"invocation_type": fpb.INVOCATION_TYPE_EXISTING_TASK}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"invocation_type": fpb.INVOCATION_TYPE_EXISTING_TASK, "task_id": "nope"},
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            {"invocation_type": fpb.INVOCATION_TYPE_NEW_TASK, "task_name": "x"},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_invalid_invocations(
    shared: Harness, request_fields: dict[str, object], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await shared.fn.InvokeFunction(fpb.InvokeFunctionRequest(**request_fields))  # type: ignore[arg-type]
    assert exc.value.code() == code
    assert exc.value.details()


async def test_unknown_value_type_is_invalid(shared: Harness) -> None:
    from google.protobuf import any_pb2

    task_id = await shared.register("workloads:identity")
    bogus = any_pb2.Any(type_url="type.example.com/Nope", value=b"\x01")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await shared.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_id=task_id, parameters=[fpb.FunctionParameter(value=bogus)])
        )
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_undecodable_value_fails_with_bad_arguments(shared: Harness) -> None:
    from google.protobuf import any_pb2

    task_id = await shared.register("workloads:identity")
    garbage = any_pb2.Any(type_url="type.googleapis.com/google.protobuf.Value", value=b"\xff\xff\xff")
    response = await shared.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=[fpb.FunctionParameter(value=garbage)])
    )
    assert response.result.status == FAILED and response.result.error_code == "BAD_ARGUMENTS"


async def test_status_of_unknown_and_empty_ids(shared: Harness) -> None:
    unknown = await shared.status("does-not-exist")
    assert not unknown.found and unknown.message
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await shared.status("")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- callers that go away cancel their work ----------------------------------------------------------


async def test_client_deadline_cancels_a_waiting_invoke(shared: Harness) -> None:
    task_id = await shared.register("workloads:sleep")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await shared.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(30.0)), timeout=0.5
        )
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    listing = await shared.fn.GetTask(fpb.GetTaskRequest(task_id=task_id, include_executions=True))
    execution_id = listing.executions[0].execution_id
    final = await shared.wait_status(execution_id, timeout=5)
    assert final.result.status == CANCELLED


async def test_dropping_a_stream_cancels_the_execution(shared: Harness) -> None:
    def slow_count():  # type: ignore[no-untyped-def]
        import time

        for i in range(1000):
            yield i
            time.sleep(0.05)

    task_id = await pickle_task(shared, slow_count, "slow-count")
    call = shared.fn.StreamFunction(fpb.InvokeFunctionRequest(task_id=task_id))
    first = await call.read()
    assert first.status == RUNNING
    call.cancel()
    final = await shared.wait_status(first.execution_id, timeout=5)
    assert final.result.status == CANCELLED


async def test_sync_invokes_run_concurrently(shared: Harness) -> None:
    task_id = await shared.register("workloads:square")
    responses = await asyncio.gather(*(shared.invoke(task_id, i) for i in range(20)))
    assert [value(r.result) for r in responses] == [i * i for i in range(20)]


@pytest.mark.parametrize(
    "method",
    [
        "/spearlet.FunctionService/InvokeFunction",
        "/spearlet.FunctionService/GetTask",
        "/spearlet.FunctionService/RegisterTask",
        "/spearlet.ObjectService/PutObject",
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument(shared: Harness, method: str) -> None:
    raw = shared.channel.unary_unary(method)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await raw(b"\xff\xff\xff\xff")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed" in (exc.value.details() or "")


async def test_undecodable_stream_request_is_invalid_argument(shared: Harness) -> None:
    raw = shared.channel.unary_stream("/spearlet.FunctionService/StreamFunction")
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        async for _ in raw(b"\x0a\xff"):
            pass
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    "context",
    [
        fpb.ExecutionContext(timeout_ms=-1),
        fpb.ExecutionContext(max_retries=-1),
        fpb.ExecutionContext(environment={"A=B": "x"}),
        fpb.ExecutionContext(environment={"": "x"}),
        fpb.ExecutionContext(environment={"A": "nul\x00byte"}),
        fpb.ExecutionContext(execution_id="x" * 257),
    ],
)
async def test_context_that_no_run_could_honour_is_invalid(
    shared: Harness, context: fpb.ExecutionContext
) -> None:
    task_id = await shared.register("workloads:square")
    before = await shared.fn.GetTask(fpb.GetTaskRequest(task_id=task_id))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await shared.invoke(task_id, 2, context=context)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = await shared.fn.GetTask(fpb.GetTaskRequest(task_id=task_id))
    assert after.task.execution_count == before.task.execution_count == 0
