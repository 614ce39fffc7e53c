"""The Dask executor on a real cluster: what only it does (the contract tests run on it too, in
test_executors.py). The session's cluster is ``dask scheduler`` and two ``dask worker`` processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from dask_cluster import DaskCluster, require_distributed
from processes import pid_dead, pid_gone
from spearlet.engine.executors import (
    BAD_ARGUMENTS,
    COMPLETED,
    FAILED,
    OUT_OF_MEMORY,
    WORKER_CRASHED,
    Artifact,
    create_executor,
)
from spearlet.engine.executors.base import NOT_STARTED, RESULT_TOO_LARGE, STOPPED, Executor
from spearlet.engine.executors.dask import flow
from test_executors import DEADLINE_S, SCRIPT, Recorder, eventually, job, python, result, run, sleeping_pid

from spear_sdk.wire import refs


@pytest.fixture
async def dask(dask_cluster: DaskCluster) -> AsyncIterator[Executor]:
    executor = create_executor("dask", 0, address=dask_cluster.address)
    await executor.start()
    yield executor
    await executor.close()


async def _pid_of_running_call(sink: Recorder) -> int:
    await eventually(lambda: sink.text.strip().isdigit())
    return int(sink.text.strip())


async def test_the_cluster_is_described(dask: Executor) -> None:
    cluster = dask.cluster()
    assert cluster is not None and cluster.reachable and dask.healthy
    assert (cluster.workers, cluster.threads, cluster.slots) == (2, 2, 2)
    assert cluster.worker_names == ("dask-w1", "dask-w2")
    assert cluster.memory_limit_bytes > 0 and cluster.memory_used_bytes > 0


async def test_cancel_kills_the_running_call(dask: Executor, figures: Callable[[str, object], None]) -> None:
    sink = Recorder()
    task = asyncio.ensure_future(dask.run(job(python("print_pid_then_sleep"), 30), sink))
    pid = await _pid_of_running_call(sink)
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pid_gone(pid)  # the worker killed and reaped it before the cancellation came through
    figures("cancel to call gone, ms", (time.monotonic() - cancelled_at) * 1000)
    assert result((await run(dask, job(python("add"), 2, 2, job_execution_id="after")))[0]) == 4


async def test_the_worker_enforces_the_deadline_by_itself(dask: Executor) -> None:
    # Nobody cancels this run: the worker stops it a moment past its limit.
    sink = Recorder()
    # (a 30 s sleep: a run that is not stopped cannot end within the deadline)
    outcome = await asyncio.wait_for(
        dask.run(job(python("print_pid_then_sleep"), 30, job_timeout_ms=200), sink), DEADLINE_S
    )
    assert (outcome.status, outcome.error_code) == (FAILED, WORKER_CRASHED)
    assert "past its 200 ms limit" in outcome.error_message
    assert pid_gone(int(sink.text.strip()))


async def test_the_worker_enforces_a_programs_deadline_by_itself(dask: Executor, tmp_path: Path) -> None:
    tool = tmp_path / "tool.py"
    tool.write_text(SCRIPT)
    artifact = Artifact("process", sys.executable, function_name="sleep", metadata={"args": f'["{tool}"]'})
    sink = Recorder()
    outcome = await dask.run(job(artifact, job_timeout_ms=200), sink)
    assert (outcome.status, outcome.error_code) == (FAILED, WORKER_CRASHED)
    assert "past its 200 ms limit" in outcome.error_message and outcome.instance_id.startswith("dask-w")
    assert pid_gone(await sleeping_pid(sink))


class SlowReader(Recorder):
    """A sink whose reader is behind from the first chunk until ``catch_up`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.catch_up = asyncio.Event()

    def chunk(self, data: bytes) -> bool:
        super().chunk(data)
        return self.catch_up.is_set()

    async def writable(self) -> None:
        await self.catch_up.wait()


def _handed_over(progress: Path) -> int:
    return int(progress.read_text() or 0) if progress.exists() else 0


async def test_a_slow_reader_holds_the_stream_back_on_the_worker(dask: Executor, tmp_path: Path) -> None:
    progress = tmp_path / "progress"
    count, size = 300, 64 << 10
    sink = SlowReader()
    streaming = asyncio.ensure_future(
        dask.run(job(python("blobs"), count, size, str(progress), job_stream=True), sink)
    )
    await eventually(lambda: len(sink.chunks) >= flow.WINDOW_CHUNKS)
    # Held there: the function may get a pipe's worth ahead, never near the end (unbounded, it would be
    # done in a fraction of this second).
    bound = flow.WINDOW_CHUNKS + 8
    watched_until = time.monotonic() + 1.0
    while time.monotonic() < watched_until:
        assert len(sink.chunks) == flow.WINDOW_CHUNKS and _handed_over(progress) <= bound
        await asyncio.sleep(0.05)
    sink.catch_up.set()
    outcome = await asyncio.wait_for(streaming, DEADLINE_S)
    assert outcome.status == COMPLETED
    assert [int.from_bytes(chunk[:4], "big") for chunk in sink.chunks] == list(range(count))  # type: ignore[index]


async def test_a_stream_held_back_by_its_reader_stops_at_once(
    dask: Executor, tmp_path: Path, figures: Callable[[str, object], None]
) -> None:
    sink = SlowReader()
    streaming = asyncio.ensure_future(
        dask.run(job(python("blobs"), 10**9, 1024, str(tmp_path / "progress"), job_stream=True), sink)
    )
    await eventually(lambda: len(sink.chunks) >= flow.WINDOW_CHUNKS)
    cancelled_at = time.monotonic()
    streaming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(streaming, DEADLINE_S)  # not held up by the reader that never catches up
    figures("cancel of a held-back stream, ms", (time.monotonic() - cancelled_at) * 1000)
    assert result((await run(dask, job(python("add"), 1, 1, job_execution_id="next")))[0]) == 2


async def test_values_by_reference_where_the_objects_are_not_fail_saying_so(dask: Executor) -> None:
    # The server's object directory as a worker on another machine sees it: not at all.
    elsewhere: dict[str, Any] = {"job_object_dir": "/nonexistent/spear-objects", "job_inline_limit": 1024}
    by_reference = replace(
        job(python("echo"), **elsewhere), args=[refs.ref_any("spear/x").SerializeToString()]
    )
    bad, _ = await run(dask, by_reference)
    assert bad.error_code == BAD_ARGUMENTS and "is not on this machine" in bad.error_message
    assert "/nonexistent/spear-objects" in bad.error_message
    streamed = job(python("blobs"), 2, 4096, "/dev/null", job_stream=True, **elsewhere)
    large, sink = await run(dask, streamed)
    assert large.error_code == RESULT_TOO_LARGE and "past the inline limit of 1024" in large.error_message
    assert "is not on this machine" in large.error_message and sink.chunks == []


async def test_memory_limit_and_peak_memory(dask: Executor) -> None:
    small, _ = await run(dask, job(python("add"), 1, 2))
    big, _ = await run(dask, job(python("allocate"), 50, job_execution_id="big"))
    assert result(big) == 50 << 20
    assert big.memory_used_bytes > small.memory_used_bytes + (40 << 20)
    limited, _ = await run(dask, job(python("allocate"), 200, job_memory_limit_mb=50))
    assert limited.error_code == OUT_OF_MEMORY and "50 MiB" in limited.error_message


async def test_a_pipeline_runs_on_the_cluster_and_stops_at_the_running_call(dask: Executor) -> None:
    jobs = [job(python("add"), n, 1, job_execution_id=f"p{n}", job_announce_start=True) for n in range(5)]
    sinks = [Recorder() for _ in jobs]
    pipeline = await dask.start_pipeline(jobs, sinks)  # type: ignore[attr-defined]
    outcomes = [await fut for fut in pipeline.outcomes]
    assert [result(o) for o in outcomes] == [1, 2, 3, 4, 5]
    assert all(s.instance_id in ("dask-w1", "dask-w2") for s in sinks)

    slow = [job(python("sleep"), 30 if n == 1 else 0, job_execution_id=f"s{n}") for n in range(3)]
    sinks = [Recorder() for _ in slow]
    pipeline = await dask.start_pipeline(slow, sinks)  # type: ignore[attr-defined]
    first = await pipeline.outcomes[0]
    assert first.status == COMPLETED
    await asyncio.wait_for(sinks[1].began.wait(), DEADLINE_S)
    pipeline.stop()
    codes = [(await fut).error_code for fut in pipeline.outcomes[1:]]
    assert codes == [STOPPED, NOT_STARTED]


async def test_a_long_pipeline_does_not_stall_on_full_pipes(dask: Executor) -> None:
    # More jobs than a pipe holds, each answered before the next is read: the worker's thread must read
    # the answers while the rest of the jobs are still being written.
    jobs = [
        job(python("add"), n, 1, job_execution_id=f"long{n}", job_announce_start=True) for n in range(1500)
    ]
    pipeline = await dask.start_pipeline(jobs, [Recorder() for _ in jobs])  # type: ignore[attr-defined]
    outcomes = await asyncio.wait_for(asyncio.gather(*pipeline.outcomes), 60)
    assert [result(o) for o in outcomes] == list(range(1, 1501))


async def test_a_killed_worker_loses_the_call_and_the_cluster_heals(
    dask: Executor, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    marker = tmp_path / "killed"
    outcome, _ = await run(dask, job(python("kill_host_once"), str(marker)))
    assert (outcome.status, outcome.error_code) == (FAILED, WORKER_CRASHED) and outcome.worker_lost
    assert "died" in outcome.error_message
    await eventually(lambda: pid_dead(int(marker.read_text())))
    await asyncio.to_thread(dask_cluster.wait_workers, 2)  # the nanny starts the worker again
    again, _ = await run(dask, job(python("kill_host_once"), str(marker), job_attempt=2))
    assert result(again) == "recovered"


async def test_sigkill_of_a_worker_mid_call(dask: Executor, dask_cluster: DaskCluster) -> None:
    sink = Recorder()
    task = asyncio.ensure_future(dask.run(job(python("print_pid_then_sleep"), 30), sink))
    child = await _pid_of_running_call(sink)
    pids = await asyncio.to_thread(dask_cluster.worker_pids)
    os.kill(pids[sink.instance_id.removeprefix("dask-")], signal.SIGKILL)
    outcome = await asyncio.wait_for(task, DEADLINE_S)
    assert (outcome.status, outcome.error_code) == (FAILED, WORKER_CRASHED)
    await eventually(lambda: pid_gone(child))  # it dies with its worker
    await asyncio.to_thread(dask_cluster.wait_workers, 2)


async def test_scheduler_lost_then_back(tmp_path: Path, figures: Callable[[str, object], None]) -> None:
    require_distributed()
    cluster = DaskCluster(tmp_path, workers=1)
    await asyncio.to_thread(cluster.start)
    executor = create_executor("dask", 0, address=cluster.address)
    try:
        await executor.start()
        assert result((await run(executor, job(python("add"), 1, 1)))[0]) == 2
        cluster.kill_scheduler()
        await eventually(lambda: not executor.healthy)
        started = time.monotonic()
        # Fails, and says why, rather than wait for a scheduler that comes back only when told below.
        outcome, _ = await asyncio.wait_for(
            run(executor, job(python("add"), 1, 2, job_execution_id="down")), DEADLINE_S
        )
        figures("call with the scheduler down, ms", (time.monotonic() - started) * 1000)
        assert outcome.error_code == WORKER_CRASHED and "cannot be reached" in outcome.error_message
        await asyncio.to_thread(cluster.start_scheduler)
        await asyncio.to_thread(cluster.start_workers)  # Dask workers shut down with their scheduler
        await eventually(lambda: executor.healthy, timeout=30)
        back, _ = await run(executor, job(python("add"), 2, 2, job_execution_id="back"))
        assert result(back) == 4
    finally:
        await executor.close()
        cluster.close()
