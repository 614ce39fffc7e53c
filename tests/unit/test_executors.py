"""Executors run real functions: results, streams, failures, captured output, cancellation, pool healing.

Every test runs real worker processes or threads; functions come from ``workloads`` (importable by
the workers through the test process's ``sys.path``) or are cloudpickled here.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
import workloads
from processes import pid_dead, pid_gone, worker_pid
from spearlet.engine.executors import (
    ARTIFACT_LOAD_FAILED,
    BAD_ARGUMENTS,
    COMPLETED,
    EXCEPTION,
    FAILED,
    PROCESS_EXIT,
    PROCESS_OUTPUT_INVALID,
    RESULT_NOT_SERIALIZABLE,
    WORKER_CRASHED,
    Artifact,
    Executor,
    Job,
    Outcome,
    ProcessExecutor,
    SubprocessRunner,
    ThreadExecutor,
    create_executor,
    worker_process,
)

from spear_sdk.wire import codec

DEADLINE_S = 10.0


class Recorder:
    """A Sink that keeps everything it is told."""

    def __init__(self) -> None:
        self.instance_id = ""
        self.logs: list[str] = []
        self.chunks: list[object] = []
        self.began = asyncio.Event()

    def started(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.began.set()

    def chunk(self, data: bytes) -> bool:
        self.chunks.append(codec.decode_bytes(data))
        return True

    async def writable(self) -> None:
        return None

    def log(self, text: str) -> None:
        self.logs.append(text)

    @property
    def text(self) -> str:
        return "".join(self.logs)


def python(name: str, **kw: Any) -> Artifact:
    return Artifact(type="python", location=f"workloads:{name}", cache_key=f"test:{name}", **kw)


def job(artifact: Artifact, *args: object, **kwargs: Any) -> Job:
    """A job calling ``artifact(*args, **kwargs)``; ``job_<field>=`` keywords set the Job's other fields."""
    options = {key[4:]: kwargs.pop(key) for key in list(kwargs) if key.startswith("job_")}
    plain = Job(
        execution_id="e1",
        artifact=artifact,
        args=[codec.encode_bytes(a) for a in args],
        kwargs={k: codec.encode_bytes(v) for k, v in kwargs.items()},
        exact_results=True,
    )
    return replace(plain, **options)


async def run(executor: Executor | SubprocessRunner, j: Job) -> tuple[Outcome, Recorder]:
    sink = Recorder()
    outcome = await executor.run(j, sink)
    return outcome, sink


def result(outcome: Outcome) -> object:
    assert outcome.status == COMPLETED, outcome
    return None if outcome.result is None else codec.decode_bytes(outcome.result)


async def eventually(predicate: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


@pytest.fixture
async def process_executor() -> AsyncIterator[ProcessExecutor]:
    executor = ProcessExecutor(2)
    await executor.start()
    yield executor
    await executor.close()


@pytest.fixture(params=["process", "thread", "dask"])
async def executor(request: pytest.FixtureRequest) -> AsyncIterator[Executor]:
    options: dict[str, Any] = {}
    if request.param == "dask":  # a real cluster: a scheduler and two workers of the session
        options["address"] = request.getfixturevalue("dask_cluster").address
    executor = create_executor(request.param, 2, **options)
    await executor.start()
    yield executor
    await executor.close()


# -- every executor ----------------------------------------------------------------------------------


async def test_python_artifact_returns_the_result(executor: Executor) -> None:
    outcome, sink = await run(executor, job(python("add"), 2, b=3))
    assert result(outcome) == 5
    assert outcome.instance_id == sink.instance_id
    assert outcome.instance_id.startswith(f"{executor.name.replace('process', 'worker')}-")
    assert outcome.cpu_time_ms >= 0


async def test_function_name_and_dotted_attributes(executor: Executor) -> None:
    outcome, _ = await run(executor, job(Artifact("python", "workloads:Tools.double"), 21))
    assert result(outcome) == 42
    by_name = Artifact("python", "workloads:ignored", function_name="add")
    assert result((await run(executor, job(by_name, 1, 2)))[0]) == 3
    assert result((await run(executor, job(python("async_double"), 4)))[0]) == 8


async def test_pickle_artifacts(executor: Executor) -> None:
    offset = 10
    closure = Artifact(
        "pickle", "object://f", payload=cloudpickle.dumps(lambda x: x + offset), function_name="f"
    )
    assert result((await run(executor, job(closure, 5)))[0]) == 15
    table = cloudpickle.dumps({"inc": lambda x: x + 1, "neg": lambda x: -x})
    for name, expected in (("inc", 8), ("neg", -7)):
        many = Artifact("pickle", "object://t", payload=table, function_name=name, cache_key=f"t:{name}")
        assert result((await run(executor, job(many, 7)))[0]) == expected


async def test_stream_sends_each_yielded_value(executor: Executor) -> None:
    outcome, sink = await run(executor, job(python("countdown"), 5, job_stream=True))
    assert outcome.status == COMPLETED and outcome.result is None
    assert sink.chunks == [5, 4, 3, 2, 1]
    single, sink = await run(executor, job(python("add"), 1, 1, job_stream=True))
    assert single.result is None and sink.chunks == [2]
    collected, sink = await run(executor, job(python("countdown"), 3))
    assert result(collected) == [3, 2, 1] and sink.chunks == []


async def test_exception_is_a_result_with_its_traceback_in_the_logs(executor: Executor) -> None:
    outcome, sink = await run(executor, job(python("fail"), "boom"))
    assert (outcome.status, outcome.error_code, outcome.error_message) == (
        FAILED,
        EXCEPTION,
        "ValueError: boom",
    )
    assert "Traceback (most recent call last)" in sink.text
    assert "workloads.py" in sink.text and "call.py" not in sink.text
    midway, sink = await run(executor, job(python("fail_midway"), 1, job_stream=True))
    assert midway.error_message == "RuntimeError: stopped midway" and sink.chunks == [1]


async def test_bad_arguments(executor: Executor) -> None:
    missing, _ = await run(executor, job(python("square")))
    assert missing.error_code == BAD_ARGUMENTS and "'x'" in missing.error_message
    extra, _ = await run(executor, job(python("add"), 1, 2, c=3))
    assert extra.error_code == BAD_ARGUMENTS
    garbage = Job("e1", python("add"), args=[b"\xff\xff", codec.encode_bytes(1)])
    assert (await run(executor, garbage))[0].error_code == BAD_ARGUMENTS
    refused = Job(
        "e1", python("add"), args=[codec.encode_bytes((1,)), codec.encode_bytes(1)], allow_pickle=False
    )
    outcome, _ = await run(executor, refused)
    assert outcome.error_code == BAD_ARGUMENTS and "pickle" in outcome.error_message


async def test_result_not_serializable(executor: Executor) -> None:
    outcome, _ = await run(executor, job(python("make_lock")))
    assert outcome.error_code == RESULT_NOT_SERIALIZABLE and "lock" in outcome.error_message


@pytest.mark.parametrize(
    ("artifact", "expected"),
    [
        (Artifact("python", "no_such_module_xyz:f"), "cannot import module 'no_such_module_xyz'"),
        (Artifact("python", "workloads:missing"), "has no attribute 'missing'"),
        (Artifact("python", "workloads:not_callable"), "is not callable"),
        (Artifact("python", "workloads"), "package.module:attr"),
        (Artifact("pickle", "object://x", payload=b"not a pickle"), "cannot unpickle"),
        (Artifact("pickle", "object://x"), "no payload"),
        (Artifact("pickle", "object://x", payload=cloudpickle.dumps({"a": len}), function_name="b"), "'b'"),
    ],
)
async def test_load_failures(executor: Executor, artifact: Artifact, expected: str) -> None:
    outcome, _ = await run(executor, job(artifact))
    assert outcome.error_code == ARTIFACT_LOAD_FAILED
    assert expected in outcome.error_message


async def test_output_is_captured_and_truncated(executor: Executor) -> None:
    outcome, sink = await run(executor, job(python("print_lines"), 200, 9, job_log_limit_bytes=1000))
    assert result(outcome) == 200
    marker = "[... output truncated at 1000 bytes ...]\n"
    assert sink.text.startswith("........0\n........1\n")
    assert sink.text.count(marker) == 1 and sink.text.endswith(marker)
    assert len(sink.text) - len(marker) <= 1001
    errors, sink = await run(executor, job(python("print_lines"), 2, 3, "stderr"))
    assert result(errors) == 2 and sink.text == "..0\n..1\n"


async def test_printing_in_a_tight_loop_is_coalesced(executor: Executor) -> None:
    outcome, sink = await run(executor, job(python("print_lines"), 50_000, 5))
    assert result(outcome) == 50_000
    assert sink.text.count("\n") == 50_000
    assert len(sink.logs) < 100  # forwarded in a few pieces, not one message per line


async def test_environment_applies_to_that_run_only(executor: Executor) -> None:
    name = "SPEAR_EXECUTOR_TEST_VAR"
    with_env, _ = await run(executor, job(python("getenv"), name, job_environment={name: "42"}))
    assert result(with_env) == "42"
    without, _ = await run(executor, job(python("getenv"), name))
    assert result(without) is None
    assert name not in os.environ


# -- the process pool ---------------------------------------------------------------------------------


async def test_crashed_worker_fails_its_job_and_the_pool_heals(process_executor: ProcessExecutor) -> None:
    before = set(process_executor.worker_pids())
    outcome, sink = await run(process_executor, job(python("crash"), 3))
    assert (outcome.status, outcome.error_code) == (FAILED, WORKER_CRASHED)
    assert "exited with code 3" in outcome.error_message and outcome.worker_lost
    assert pid_gone(worker_pid(sink.instance_id))
    assert result((await run(process_executor, job(python("add"), 1, 2)))[0]) == 3
    await eventually(lambda: len(process_executor.worker_pids()) == 2)
    assert set(process_executor.worker_pids()) != before and process_executor.healthy


async def test_cancel_kills_the_worker_at_once_and_the_pool_heals(
    process_executor: ProcessExecutor, figures: Callable[[str, object], None]
) -> None:
    sink = Recorder()
    task = asyncio.ensure_future(process_executor.run(job(python("sleep"), 30), sink))
    await asyncio.wait_for(sink.began.wait(), DEADLINE_S)
    pid = worker_pid(sink.instance_id)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid_gone(pid)  # killed and reaped before the cancellation came through
    figures("cancel to worker gone, ms", (time.monotonic() - cancelled_at) * 1000)
    assert result((await run(process_executor, job(python("add"), 2, 2)))[0]) == 4
    await eventually(lambda: len(process_executor.worker_pids()) == 2)
    assert pid not in process_executor.worker_pids()


async def test_fresh_instance_runs_in_a_new_worker_that_is_retired(process_executor: ProcessExecutor) -> None:
    warm = set(process_executor.worker_pids())
    outcome, _ = await run(process_executor, job(python("pid"), job_fresh_instance=True))
    fresh = result(outcome)
    assert isinstance(fresh, int) and fresh not in warm and outcome.instance_id == f"worker-{fresh}"
    assert pid_gone(fresh)
    assert set(process_executor.worker_pids()) == warm


async def test_peak_memory_is_measured_per_job(process_executor: ProcessExecutor) -> None:
    small, _ = await run(process_executor, job(python("add"), 1, 2))
    big, _ = await run(process_executor, job(python("allocate"), 50))
    assert result(big) == 50 << 20
    assert small.memory_used_bytes > 0
    assert big.memory_used_bytes > small.memory_used_bytes + (40 << 20)
    after, _ = await run(process_executor, job(python("add"), 1, 2))
    assert after.memory_used_bytes < big.memory_used_bytes  # the peak is reset between jobs


async def test_large_values_cross_the_pipe(process_executor: ProcessExecutor) -> None:
    big = os.urandom(24 << 20)  # larger than a socket buffer: partial sends and many reads
    outcome, _ = await run(process_executor, job(python("identity"), big))
    assert result(outcome) == big


async def test_close_leaves_no_process_behind() -> None:
    executor = ProcessExecutor(2)
    await executor.start()
    outcome, _ = await run(executor, job(python("spawn_sleeper")))
    grandchild = result(outcome)
    assert isinstance(grandchild, int)
    workers = executor.worker_pids()
    await executor.close()
    assert all(pid_gone(pid) for pid in workers)
    assert not {child.pid for child in psutil.Process().children(recursive=True)} & {*workers, grandchild}
    await eventually(lambda: pid_dead(grandchild))  # killed with its worker's process group
    assert executor.worker_pids() == []


async def test_pool_that_cannot_start_reports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_process, "WORKER_MODULE", "spearlet.no_such_worker_module")
    executor = ProcessExecutor(1)
    with pytest.raises(RuntimeError, match="no worker process could be started"):
        await executor.start()
    assert not executor.healthy and executor.worker_pids() == []


def test_create_executor_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown executor"):
        create_executor("fiber", 1)


# -- the thread executor ---------------------------------------------------------------------------------


async def test_threads_capture_output_per_thread() -> None:
    executor = ThreadExecutor(2)
    await executor.start()
    try:
        (first, one), (second, two) = await asyncio.gather(
            run(executor, job(python("print_lines"), 300, 4)),
            run(executor, job(python("print_lines"), 300, 7)),
        )
        assert result(first) == result(second) == 300
        assert {len(line) for line in one.text.splitlines()} == {4}
        assert {len(line) for line in two.text.splitlines()} == {7}
        assert one.instance_id != two.instance_id
    finally:
        await executor.close()


async def test_overlapping_threads_leave_the_environment_as_it_was() -> None:
    """The second job starts while the first runs and ends after it: the variable both set is gone at the
    end, not put back to the first job's value by the second."""
    name = "SPEAR_EXECUTOR_OVERLAP_VAR"
    executor = ThreadExecutor(2)
    await executor.start()
    try:
        first = asyncio.ensure_future(run(executor, job(python("sleep"), 0.3, job_environment={name: "a"})))
        await eventually(lambda: os.environ.get(name) == "a")
        second = await run(executor, job(python("sleep"), 0.6, job_environment={name: "b"}))
        assert result((await first)[0]) == 0.3 and result(second[0]) == 0.6
        assert name not in os.environ
    finally:
        await executor.close()


async def test_cancelled_thread_is_abandoned_and_its_output_dropped() -> None:
    workloads.gate.clear()
    executor = ThreadExecutor(1)
    await executor.start()
    try:
        sink = Recorder()
        task = asyncio.ensure_future(executor.run(job(python("wait_for_gate"), "late"), sink))
        await asyncio.wait_for(sink.began.wait(), DEADLINE_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not executor.stops_work
        # The pool serves while the abandoned thread still runs (it grows a thread for that).
        assert result((await run(executor, job(python("add"), 1, 1)))[0]) == 2
        abandoned = int(sink.instance_id.removeprefix("thread-"))
        workloads.gate.set()
        # Once done, the abandoned thread ends (the pool has its one idle thread): by then its output and
        # its outcome have been handed to the loop, and dropped.
        await eventually(lambda: abandoned not in {t.ident for t in threading.enumerate()})
        assert sink.logs == []
        assert result((await run(executor, job(python("add"), 2, 2)))[0]) == 4
    finally:
        workloads.gate.set()
        await executor.close()


async def test_an_abandoned_stream_ends_at_its_next_chunk(tmp_path: Path) -> None:
    # The threads themselves, not their idents: a thread that ends frees its ident for the next one.
    before = set(threading.enumerate())

    def threads_of_the_pool() -> int:
        return sum(1 for t in threading.enumerate() if t not in before and t.name.startswith("spearlet-job"))

    executor = ThreadExecutor(1)
    await executor.start()
    try:
        sink = Recorder()
        endless = job(python("blobs"), 10**12, 4, str(tmp_path / "progress"), job_stream=True)
        task = asyncio.ensure_future(executor.run(endless, sink))
        await eventually(lambda: len(sink.chunks) > 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert result((await run(executor, job(python("add"), 1, 1)))[0]) == 2
        # Were the endless generator still running, its thread could never rejoin the pool of one.
        await eventually(lambda: threads_of_the_pool() == 1)
    finally:
        await executor.close()


# -- process artifacts ---------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    request = json.loads(sys.stdin.read())
    function = request["function"]
    if function == "echo":
        print(json.dumps({"args": request["args"], "kwargs": request["kwargs"]}))
    elif function == "stream":
        for i in range(3):
            print(json.dumps(i), flush=True)
    elif function == "fail":
        sys.stderr.write("oops\\n")
        sys.exit(3)
    elif function == "garbage":
        print("this is not json")
    elif function == "env":
        print(json.dumps(os.environ.get("SPEAR_EXECUTOR_TEST_VAR")))
    elif function == "chatty":
        sys.stderr.write("e" * request["args"][0])
        print(json.dumps("done"))
    elif function == "long":
        print(json.dumps("x" * request["args"][0]), end="")  # and no newline at the end
    elif function == "sleep":
        sys.stderr.write(f"sleeping {os.getpid()}\\n")
        sys.stderr.flush()
        time.sleep(30)
    """
)


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], Artifact]:
    path = tmp_path / "tool.py"
    path.write_text(SCRIPT)
    return lambda function: Artifact(
        "process", sys.executable, function_name=function, metadata={"args": f'["{path}"]'}
    )


ProgramRunner = Executor | SubprocessRunner


@pytest.fixture(params=["server", "dask"])
async def programs(request: pytest.FixtureRequest) -> AsyncIterator[ProgramRunner]:
    """What runs ``process`` artifacts: the server's own runner, or the Dask executor, on its workers."""
    if request.param == "server":
        runner = SubprocessRunner()
        yield runner
        await runner.close()
        return
    executor = create_executor("dask", 0, address=request.getfixturevalue("dask_cluster").address)
    assert executor.runs_processes
    await executor.start()
    yield executor
    await executor.close()


async def sleeping_pid(sink: Recorder) -> int:
    """The pid the script's ``sleep`` says it has, once it says so."""
    await eventually(lambda: sink.text.endswith("\n") and sink.text.startswith("sleeping "))
    return int(sink.text.split()[1])


def _where(runner: ProgramRunner) -> str:
    """The instance id a program's run gets: its process locally, the Dask worker on the cluster."""
    return "dask-w" if isinstance(runner, Executor) else "process-"


async def test_process_artifact_gets_its_arguments_and_returns_the_last_line(
    programs: ProgramRunner, script: Callable[[str], Artifact]
) -> None:
    outcome, sink = await run(programs, job(script("echo"), 1, "a", 2.0, 2.5, flag=True))
    echoed = result(outcome)
    assert echoed == {"args": [1, "a", 2, 2.5], "kwargs": {"flag": True}}
    assert isinstance(echoed, dict) and type(echoed["args"][2]) is int  # an integral double is sent as 2
    assert sink.instance_id == outcome.instance_id and outcome.instance_id.startswith(_where(programs))
    env, _ = await run(programs, job(script("env"), job_environment={"SPEAR_EXECUTOR_TEST_VAR": "7"}))
    assert result(env) == "7"


async def test_process_artifact_streams_lines(
    programs: ProgramRunner, script: Callable[[str], Artifact]
) -> None:
    outcome, sink = await run(programs, job(script("stream"), job_stream=True))
    assert outcome.status == COMPLETED and outcome.result is None
    assert sink.chunks == [0, 1, 2]


async def test_process_artifact_lines_longer_than_the_read_buffer(
    programs: ProgramRunner, script: Callable[[str], Artifact]
) -> None:
    outcome, _ = await run(programs, job(script("long"), 5 << 20))
    assert result(outcome) == "x" * (5 << 20)


async def test_process_artifact_output_is_capped(
    programs: ProgramRunner, script: Callable[[str], Artifact]
) -> None:
    outcome, sink = await run(programs, job(script("chatty"), 4096, job_log_limit_bytes=1000))
    assert result(outcome) == "done"
    assert sink.text.startswith("e" * 1000) and "output truncated at 1000 bytes" in sink.text
    assert len(sink.text) < 1100


async def test_process_artifact_failures(programs: ProgramRunner, script: Callable[[str], Artifact]) -> None:
    runner = programs
    failed, sink = await run(runner, job(script("fail")))
    assert (failed.error_code, failed.error_message) == (PROCESS_EXIT, "process exited with status 3")
    assert sink.text == "oops\n"
    garbage, _ = await run(runner, job(script("garbage")))
    assert garbage.error_code == PROCESS_OUTPUT_INVALID and "line 1" in garbage.error_message
    missing, _ = await run(runner, job(Artifact("process", "no-such-executable-xyz")))
    assert missing.error_code == ARTIFACT_LOAD_FAILED
    bad_args = Artifact("process", sys.executable, metadata={"args": "not a list"})
    assert (await run(runner, job(bad_args)))[0].error_code == ARTIFACT_LOAD_FAILED
    not_json, _ = await run(runner, job(script("echo"), b"raw bytes"))
    assert not_json.error_code == BAD_ARGUMENTS


async def test_cancelling_a_process_artifact_kills_it(
    programs: ProgramRunner, script: Callable[[str], Artifact], figures: Callable[[str, object], None]
) -> None:
    sink = Recorder()
    task = asyncio.ensure_future(programs.run(job(script("sleep")), sink))
    pid = await sleeping_pid(sink)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid_gone(pid)  # killed and reaped before the cancellation came through
    figures("cancel to program gone, ms", (time.monotonic() - cancelled_at) * 1000)
    again, _ = await run(programs, job(script("echo"), 1))
    assert result(again) == {"args": [1], "kwargs": {}}


async def test_a_cancel_during_the_start_kills_the_process_once_it_exists(
    script: Callable[[str], Artifact],
) -> None:
    """The process starts in a thread: cancelled meanwhile (twice, the second during the clean-up), the run
    kills and reaps it before the cancellation goes on, and leaves no thread behind."""
    before = {child.pid for child in psutil.Process().children()}
    runner = SubprocessRunner()
    for _ in range(5):
        sink = Recorder()
        task = asyncio.ensure_future(runner.run(job(script("sleep")), sink))
        await asyncio.sleep(0)  # the start is under way
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert {child.pid for child in psutil.Process().children()} <= before
    await eventually(lambda: not any(t.name == "spearlet-process-start" for t in threading.enumerate()))
    await runner.close()
