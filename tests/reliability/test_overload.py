"""R3: ten times more callers than the server has places, for a bounded time. Accepted calls finish, the
rest get RESOURCE_EXHAUSTED with a retry hint, nothing deadlocks, memory stays bounded, and health says
``degraded`` meanwhile and ``healthy`` after (R3). And the overload of one stream: a reader that
stops reading holds the function back instead of filling the server's memory."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from harness import HarnessFactory, params, poll
from processes import tree_rss
from served import Launcher, Served
from soak import SOAK, Record, scale
from spearlet.engine.chunks import MAX_BYTES

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb

pytestmark = pytest.mark.timeout(3600 if SOAK else 120)

SLOTS, QUEUE = 2, 8
CALLERS = 10 * (SLOTS + QUEUE)
SECONDS = scale(4, 60)
RUN_S = 0.05
RETRY_AFTER = "retry-after-ms"
#: What the server process and its workers may grow by under overload.
MEMORY_BOUND = 64 << 20
COMPLETED = fpb.EXECUTION_STATUS_COMPLETED


@dataclass
class Tally:
    accepted: list[str] = field(default_factory=list)  # async executions to see finish
    completed_sync: int = 0
    refused: int = 0
    hints: list[int] = field(default_factory=list)
    health: list[str] = field(default_factory=list)
    peak_rss: int = 0


async def caller(served: Served, task_id: str, tally: Tally, until: float, obeys_hint: bool) -> None:
    """Calls without pause (or, if ``obeys_hint``, waits as long as a refusal says) until ``until``."""
    while time.monotonic() < until:
        mode = random.choice((fpb.EXECUTION_MODE_SYNC, fpb.EXECUTION_MODE_ASYNC))
        request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(RUN_S), execution_mode=mode)
        try:
            response = await served.fn.InvokeFunction(request, timeout=60)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            hint = int(dict(exc.trailing_metadata() or ())[RETRY_AFTER])
            assert f"retry after {hint} ms" in (exc.details() or "")
            tally.refused += 1
            tally.hints.append(hint)
            if obeys_hint:
                await asyncio.sleep(hint / 1000)
            continue
        if mode == fpb.EXECUTION_MODE_SYNC:
            assert response.result.status == COMPLETED, response
            tally.completed_sync += 1
        else:
            tally.accepted.append(response.execution_id)


async def watcher(served: Served, tally: Tally, until: float) -> None:
    """Samples health and the server's memory while the overload lasts."""
    while time.monotonic() < until:
        health = await served.fn.GetHealth(fpb.GetHealthRequest(), timeout=10)
        tally.health.append(health.status)
        tally.peak_rss = max(tally.peak_rss, tree_rss(served.proc.pid))
        await asyncio.sleep(0.1)


async def test_ten_times_over_capacity(launcher: Launcher, figures: Record) -> None:
    served = await launcher.start("--max-concurrent", str(SLOTS), "--max-queued", str(QUEUE))
    registered = await served.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="sleep",
            artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:sleep"),
        )
    )
    task_id = registered.task.task_id
    for _ in range(SLOTS + QUEUE):  # warm up: the workers, and the run-time estimate behind the hint
        warm = await served.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(RUN_S))
        )
        assert warm.result.status == COMPLETED
    baseline_rss = tree_rss(served.proc.pid)

    tally = Tally()
    until = time.monotonic() + SECONDS
    began = time.monotonic()
    await asyncio.gather(
        watcher(served, tally, until),
        *(caller(served, task_id, tally, until, obeys_hint=n % 2 == 0) for n in range(CALLERS)),
    )

    # No deadlock: everything accepted finishes, and a new call goes straight through.
    await poll(lambda: _finished(served, tally.accepted), timeout=60, what="accepted calls to finish")
    drained = time.monotonic() - began
    assert tally.refused > 0 and tally.accepted and tally.completed_sync
    after = await served.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(0.0)), timeout=10
    )
    assert after.result.status == COMPLETED

    # Refused calls left no record: the server counts exactly what it accepted.
    stats = await served.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))
    accepted_total = SLOTS + QUEUE + len(tally.accepted) + tally.completed_sync + 1
    assert stats.service_stats.total_executions == accepted_total
    assert stats.execution_stats.completed_executions == accepted_total

    assert "degraded" in tally.health, tally.health
    await poll(lambda: _healthy(served), what="health to come back")
    growth = tally.peak_rss - baseline_rss
    assert growth < MEMORY_BOUND, f"the server grew by {growth >> 20} MiB"
    hints = sorted(tally.hints)
    figures("callers / places", f"{CALLERS} / {SLOTS + QUEUE}")
    figures("overload seconds", SECONDS)
    figures("accepted", accepted_total - SLOTS - QUEUE - 1)
    figures("refused with RESOURCE_EXHAUSTED", tally.refused)
    figures("retry-after-ms median", hints[len(hints) // 2])
    figures("server+workers RSS growth MiB", round(growth / (1 << 20), 1))
    figures("degraded health samples", f"{tally.health.count('degraded')}/{len(tally.health)}")
    figures("seconds until drained", round(drained, 1))


async def _finished(served: Served, execution_ids: list[str]) -> bool:
    for execution_id in execution_ids:
        status = await served.fn.GetExecutionStatus(fpb.GetExecutionStatusRequest(execution_id=execution_id))
        if status.result.status != COMPLETED:
            return False
    return True


async def _healthy(served: Served) -> bool:
    return (await served.fn.GetHealth(fpb.GetHealthRequest())).status == "healthy"


# -- a reader that stops reading ------------------------------------------------------------------------

BLOBS_SCRIPT = """
import json, sys
count, size, progress = json.load(sys.stdin)["args"]
for i in range(int(count)):
    print(json.dumps([i, "x" * int(size)]), flush=True)
    with open(progress, "w") as handle:
        handle.write(str(i + 1))
"""


@pytest.mark.parametrize("runner", ["process pool", "thread", "process artifact"])
async def test_a_stalled_stream_reader_holds_the_function_back(
    make_harness: HarnessFactory, tmp_path: Path, runner: str, figures: Record
) -> None:
    h = await make_harness(executor="thread" if runner == "thread" else "process", max_concurrent=1)
    if runner == "process artifact":
        script = tmp_path / "blobs.py"
        script.write_text(BLOBS_SCRIPT)
        task_id = await h.register(
            sys.executable, artifact_type="process", metadata={"args": json.dumps([str(script)])}
        )
    else:
        task_id = await h.register("workloads:blobs")
    count, size = 2000, 32 << 10  # 62.5 MiB in all, four times what the server may hold for the reader
    progress = tmp_path / "progress"
    call = h.fn.StreamFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(count, size, str(progress)))
    )
    chunks = [await call.read()]
    buffered = h.server.engine.live[chunks[0].execution_id].chunks
    assert buffered is not None

    async def full() -> bool:
        return buffered.size_bytes >= MAX_BYTES

    await poll(full, what="the stream's buffer to fill up")
    # Only time can show that something stopped: an unthrottled function would be done within moments.
    assert not await _within(1.0, lambda: _produced(progress) >= count), "the function was not held back"
    held_at = _produced(progress)
    assert held_at < count // 2
    assert buffered.size_bytes <= 2 * MAX_BYTES

    # Reading again lets it go on, and every chunk arrives once, in order.
    while not (message := await call.read()).is_final:
        chunks.append(message)
    assert message.status == fpb.EXECUTION_STATUS_COMPLETED, message
    assert [_number(codec.decode(m.chunk_data)) for m in chunks] == list(range(count))
    figures(f"{runner}: chunks handed over while the reader stalled (of {count})", held_at)


async def _within(seconds: float, check: Callable[[], bool]) -> bool:
    """Whether ``check`` comes true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(0.02)
    return check()


def _produced(progress: Path) -> int:
    try:
        return int(progress.read_text() or 0)
    except (FileNotFoundError, ValueError):  # not written yet, or caught mid-write
        return 0


def _number(chunk: object) -> int:
    if isinstance(chunk, bytes):
        return int.from_bytes(chunk[:4], "big")
    assert isinstance(chunk, list)
    return int(chunk[0])
