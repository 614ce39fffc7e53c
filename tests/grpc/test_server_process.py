"""``spearlet serve`` as a real process: its address line, SPEARLET_* settings, graceful SIGTERM, restart
over SQLite after SIGKILL (executions cut off read INTERRUPTED), and a client generated from the .proto files
alone (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import signal
import site
import sys
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
from harness import params, poll, value
from served import Launcher, Served, communicate

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb
from spear_sdk.wire import object_pb2_grpc as ogrpc

REPO = Path(__file__).resolve().parents[2]
COMPLETED = fpb.EXECUTION_STATUS_COMPLETED
FAILED = fpb.EXECUTION_STATUS_FAILED
RUNNING = fpb.EXECUTION_STATUS_RUNNING
PENDING = fpb.EXECUTION_STATUS_PENDING


async def register(served: Served, name: str, location: str) -> str:
    response = await served.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name=name, artifact_spec=fpb.ArtifactSpec(artifact_type="python", location=location)
        )
    )
    return response.task.task_id


async def invoke(
    served: Served, task_id: str, *args: object, mode: int = fpb.EXECUTION_MODE_SYNC
) -> fpb.InvokeFunctionResponse:
    return await served.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(
            invocation_type=fpb.INVOCATION_TYPE_EXISTING_TASK,
            task_id=task_id,
            parameters=params(*args),
            execution_mode=mode,  # type: ignore[arg-type]
        ),
        timeout=30,
    )


async def wait_running(served: Served, count: int = 1) -> None:
    async def running() -> bool:
        listed = await served.fn.ListExecutions(fpb.ListExecutionsRequest(status_filter=RUNNING))
        return len(listed.executions) == count

    await poll(running, timeout=15, what=f"{count} RUNNING executions")


# -- the command line -------------------------------------------------------------------------------


async def test_serve_prints_its_address_and_honours_env(launcher: Launcher, tmp_path: Path) -> None:
    served = await launcher.start(
        "--max-queued",
        "55",
        env={
            "SPEARLET_MAX_CONCURRENT": "3",
            "SPEARLET_EXECUTOR": "thread",
            "SPEARLET_MAX_QUEUED": "77",  # the flag wins
            "SPEARLET_DEFAULT_TIMEOUT_MS": "250",
        },
    )
    host, _, port = served.address.rpartition(":")
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert "3 concurrent" in served.stdout.read_text()

    health = await served.fn.GetHealth(fpb.GetHealthRequest(include_details=True), timeout=10)
    assert health.status == "healthy", health.message
    info = health.details.system_info
    assert info["max_concurrent_executions"] == "3"
    assert info["max_queued_executions"] == "55"
    assert info["executor"] == "thread"
    assert info["pid"] == str(served.proc.pid)
    assert str(tmp_path / "s.db") in info["store"]
    assert (tmp_path / "s.db").exists()

    # SPEARLET_DEFAULT_TIMEOUT_MS bounds a call that sets no timeout of its own.
    sleeper = await register(served, "sleeper", "workloads:sleep")
    timed_out = await invoke(served, sleeper, 5)
    assert timed_out.result.status == fpb.EXECUTION_STATUS_TIMEOUT
    assert timed_out.result.error_code == "TIMEOUT"


async def test_sigterm_lets_an_in_flight_call_finish_and_exits_zero(launcher: Launcher) -> None:
    served = await launcher.start(
        "--executor", "thread", "--max-concurrent", "2", "--shutdown-grace-s", "1.5"
    )
    sleeper = await register(served, "sleeper", "workloads:sleep")
    call = asyncio.ensure_future(invoke(served, sleeper, 0.5))
    # Work that outlasts the grace period is cancelled, and that is stored before the process exits.
    too_long = await invoke(served, sleeper, 60, mode=fpb.EXECUTION_MODE_ASYNC)
    await wait_running(served, 2)

    served.proc.send_signal(signal.SIGTERM)
    response = await asyncio.wait_for(call, timeout=15)
    assert response.success, response.message
    assert response.result.status == COMPLETED
    assert value(response.result) == 0.5
    assert await served.wait_exit() == 0, served.output()
    assert "spearlet shutting down" in served.stdout.read_text()

    again = await launcher.start("--executor", "thread")
    final = await again.fn.GetExecutionStatus(
        fpb.GetExecutionStatusRequest(execution_id=too_long.execution_id)
    )
    assert final.found
    assert (final.result.status, final.result.error_code) == (fpb.EXECUTION_STATUS_CANCELLED, "CANCELLED")
    done = await again.fn.GetExecutionStatus(
        fpb.GetExecutionStatusRequest(execution_id=response.execution_id)
    )
    assert done.result.status == COMPLETED


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"SPEARLET_MAX_CONCURRENT": "many"}, "SPEARLET_MAX_CONCURRENT must be a number"),
        ({"SPEARLET_MAX_CONCURRENT": "0"}, "max_concurrent must be at least 1"),
        ({"SPEARLET_EXECUTOR": "gpu"}, "executor must be"),
    ],
)
async def test_bad_settings_are_refused_at_start(
    launcher: Launcher, tmp_path: Path, env: dict[str, str], complaint: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        *launcher.command(),
        cwd=tmp_path,
        env=launcher.environ(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(proc, timeout=30)
    assert proc.returncode == 2, (out, err)
    assert complaint in err.decode()
    assert b"listening" not in out


# -- restart over SQLite ----------------------------------------------------------------------------


async def test_restart_after_sigkill_keeps_everything_and_marks_cut_off_work_interrupted(
    launcher: Launcher,
) -> None:
    # The thread executor: SIGKILL takes the running function down with the server, leaving nothing behind.
    first = await launcher.start("--executor", "thread", "--max-concurrent", "1")
    square = await register(first, "square", "workloads:square")
    fail = await register(first, "fail", "workloads:fail")
    sleeper = await register(first, "sleeper", "workloads:sleep")
    # A task updated twice (version 3) before the crash keeps its version.
    await register(first, "square", "workloads:identity")
    await register(first, "square", "workloads:square")

    results = {}
    for i in (2, 3, 4):
        response = await invoke(first, square, i)
        assert response.result.status == COMPLETED
        results[response.execution_id] = i * i
    failed_ids = []
    for _ in range(2):
        response = await invoke(first, fail, "bad")
        assert response.result.status == FAILED
        failed_ids.append(response.execution_id)
    # One slot: the first sleep is RUNNING when the server dies, the second still PENDING.
    cut_off = await invoke(first, sleeper, 60, mode=fpb.EXECUTION_MODE_ASYNC)
    queued = await invoke(first, sleeper, 60, mode=fpb.EXECUTION_MODE_ASYNC)
    assert cut_off.success
    assert queued.success
    assert queued.result.status == PENDING
    await wait_running(first)

    objects = ogrpc.ObjectServiceStub(first.channel)
    blob = bytes(range(256)) * 4096
    await objects.PutObject(opb.PutObjectRequest(key="blob", value=blob, metadata={"kind": "weights"}))
    await objects.PutObject(opb.PutObjectRequest(key="pinned", value=b"p"))
    await objects.PinObject(opb.PinObjectRequest(key="pinned"))
    await objects.RemoveObjectRef(opb.RemoveObjectRefRequest(key="pinned"))

    tasks_before = await first.fn.ListTasks(fpb.ListTasksRequest(include_details=True))
    executions_before = await first.fn.ListExecutions(fpb.ListExecutionsRequest())
    stats_before = await first.fn.GetStats(
        fpb.GetStatsRequest(include_task_stats=True, include_execution_stats=True)
    )
    assert stats_before.execution_stats.running_executions == 1
    assert stats_before.execution_stats.pending_executions == 1
    assert stats_before.execution_stats.completed_executions == 3
    assert stats_before.execution_stats.failed_executions == 2

    first.proc.kill()
    assert await first.wait_exit() == -signal.SIGKILL

    second = await launcher.start("--executor", "thread", "--max-concurrent", "1")
    tasks_after = await second.fn.ListTasks(fpb.ListTasksRequest(include_details=True))
    before = {t.task_id: t for t in tasks_before.tasks}
    after = {t.task_id: t for t in tasks_after.tasks}
    assert after.keys() == before.keys() == {square, fail, sleeper}
    for task_id in (square, fail):
        assert after[task_id] == before[task_id]
    assert after[square].metadata["version"] == "3"
    assert (after[square].execution_count, after[square].last_status) == (3, COMPLETED)
    assert (after[fail].execution_count, after[fail].last_status) == (2, FAILED)
    assert (after[sleeper].execution_count, after[sleeper].last_status) == (2, FAILED)

    executions_after = await second.fn.ListExecutions(fpb.ListExecutionsRequest())
    ids_before = [e.execution_id for e in executions_before.executions]
    assert [e.execution_id for e in executions_after.executions] == ids_before
    assert len(ids_before) == 7
    cut_off_ids = {cut_off.execution_id: RUNNING, queued.execution_id: PENDING}
    for old, new in zip(executions_before.executions, executions_after.executions, strict=True):
        if old.execution_id in cut_off_ids:
            assert old.status == cut_off_ids[old.execution_id]
            assert new.status == FAILED
            assert new.error_code == "INTERRUPTED"
            assert new.HasField("completed_at")
            assert new.metadata == old.metadata
        else:
            assert new == old
    for execution_id in cut_off_ids:
        status = await second.fn.GetExecutionStatus(
            fpb.GetExecutionStatusRequest(execution_id=execution_id, include_result=True)
        )
        assert status.found
        assert (status.result.status, status.result.error_code) == (FAILED, "INTERRUPTED")
    for execution_id, expected in results.items():
        done = await second.fn.GetExecutionStatus(
            fpb.GetExecutionStatusRequest(execution_id=execution_id, include_result=True)
        )
        assert (done.result.status, value(done.result)) == (COMPLETED, expected)

    stats = await second.fn.GetStats(
        fpb.GetStatsRequest(include_task_stats=True, include_execution_stats=True)
    )
    assert stats.service_stats.total_tasks == 3
    assert stats.service_stats.total_executions == 7
    assert dict(stats.task_stats.tasks_by_type) == {"python": 3}
    figures = stats.execution_stats
    assert (figures.running_executions, figures.pending_executions) == (0, 0)
    assert (figures.completed_executions, figures.failed_executions) == (3, 4)
    assert figures.success_rate_percent == pytest.approx(300 / 7)
    assert dict(figures.executions_by_function) == {"square": 3, "fail": 2, "sleeper": 2}
    assert [t.task_id for t in stats.task_stats.most_active_tasks] == [square, fail, sleeper]
    assert (stats.task_stats.active_tasks, stats.task_stats.idle_tasks) == (0, 3)

    # Objects are durable too, with their references, pins and metadata; the health figures count them.
    objects = ogrpc.ObjectServiceStub(second.channel)
    listed = await objects.ListObjects(opb.ListObjectsRequest(include_values=True))
    assert [(o.key, o.value, o.ref_count, o.pinned, dict(o.metadata)) for o in listed.objects] == [
        ("blob", blob, 1, False, {"kind": "weights"}),
        ("pinned", b"p", 0, True, {}),
    ]

    # The tasks still run after the restart.
    again = await invoke(second, square, 7)
    assert (again.result.status, value(again.result)) == (COMPLETED, 49)
    assert again.task_id == square
    health = await second.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.details.total_executions == 8
    assert health.details.task_count == 3
    assert (health.details.object_count, health.details.total_object_size) == (2, len(blob) + 1)


# -- a client that knows only the .proto files ------------------------------------------------------

_PROTO_CLIENT = r"""
import importlib.util
import json
import sys

gen, site_dirs, address = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.path[:] = [gen, *[p for p in sys.path if p and "site-packages" not in p], *site_dirs]
assert importlib.util.find_spec("spear_sdk") is None, "the repo must not be importable here"

import grpc
from google.protobuf import any_pb2, struct_pb2
from spearlet import function_pb2 as pb, function_pb2_grpc as pb_grpc

assert pb.__file__.startswith(gen), pb.__file__


def number(x):
    packed = any_pb2.Any()
    packed.Pack(struct_pb2.Value(number_value=x))
    return packed


with grpc.insecure_channel(address) as channel:
    stub = pb_grpc.FunctionServiceStub(channel)
    response = stub.InvokeFunction(
        pb.InvokeFunctionRequest(
            invocation_type=pb.INVOCATION_TYPE_NEW_TASK,
            task_name="hypot",
            artifact_spec=pb.ArtifactSpec(artifact_type="python", location="math:hypot"),
            parameters=[pb.FunctionParameter(value=number(3)), pb.FunctionParameter(value=number(4))],
            execution_mode=pb.EXECUTION_MODE_SYNC,
        ),
        timeout=30,
    )
    assert response.success, response
    out = struct_pb2.Value()
    assert response.result.result.Unpack(out), response.result.result.type_url
    print(out.number_value)
"""


@pytest.fixture
def generated_client(tmp_path: Path) -> Iterator[Path]:
    from grpc_tools import protoc

    gen = tmp_path / "gen"
    gen.mkdir()
    well_known = resources.files("grpc_tools") / "_proto"
    protos = sorted(str(p.relative_to(REPO / "proto")) for p in (REPO / "proto" / "spearlet").glob("*.proto"))
    assert protos == ["spearlet/function.proto", "spearlet/object.proto"]
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"-I{well_known}",
            f"--python_out={gen}",
            f"--grpc_python_out={gen}",
            *protos,
        ]
    )
    assert code == 0
    assert (gen / "spearlet" / "function_pb2_grpc.py").exists()
    yield gen


async def test_client_generated_from_the_proto_files_alone(
    launcher: Launcher, generated_client: Path, tmp_path: Path
) -> None:
    # The default (process) executor, kept to one warm worker.
    served = await launcher.start("--max-concurrent", "1")
    script = tmp_path / "proto_client.py"
    script.write_text(_PROTO_CLIENT)
    started = time.monotonic()
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",  # no PYTHONPATH, no user site, no script directory
        "-S",  # no site: the editable install's path hooks stay out
        str(script),
        str(generated_client),
        json.dumps(site.getsitepackages()),
        served.address,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(client, timeout=60)
    assert client.returncode == 0, err.decode()
    assert out.decode().strip() == "5.0"
    assert time.monotonic() - started < 60

    # The server recorded it like any other call, and shuts down cleanly with its worker.
    tasks = await served.fn.ListTasks(fpb.ListTasksRequest(include_details=True))
    assert [(t.task_name, t.artifact_spec.location, t.execution_count) for t in tasks.tasks] == [
        ("hypot", "math:hypot", 1)
    ]
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.output()
