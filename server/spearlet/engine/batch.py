"""Batches: many calls of one function in one request (``InvokeBatch``, the SDK's ``map``).

Each call is an execution of its own, with its record, lifecycle, logs, timeout, retries and cancel
switch, as if it had been invoked alone. What the calls share is the cost around them: the request is
validated and the task resolved once, records are written by group commit, and on the process executor a
chunk of calls goes to one warm worker as a pipeline (``ProcessExecutor.start_chunk``), so they run back
to back without a round trip each. Chunks are sized to about :data:`CHUNK_MS` of work, from the run times
seen so far, so a call waits little behind the others of its chunk.

Up to ``max_concurrent`` lanes each wait for a running slot like any invocation, then take the next chunk:
its records are created PENDING then, turn RUNNING when the worker starts each call, and end as usual.
Calls not yet taken have no record: a batch that is dropped leaves nothing behind for them.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.records import StoredExecution
from . import lifecycle as lc
from .executors import Executor, Job, Outcome, SubprocessRunner
from .executors.base import FAILED, NOT_STARTED, STOPPED, Chunk, Sink, job_for_call
from .live import LiveExecution

if TYPE_CHECKING:
    from .core import Engine

#: The work one chunk should hold, and its bounds in calls.
CHUNK_MS = 10.0
FIRST_CHUNK = 8
MAX_CHUNK = 256

#: Receives each call's index and terminal record, once stored.
OnResult = Callable[[int, StoredExecution], None]


@dataclass(eq=False)
class _Call:
    index: int
    args: Sequence[bytes]
    kwargs: dict[str, bytes]
    live: LiveExecution | None = None
    chunk: Chunk | None = None
    timer: asyncio.TimerHandle | None = None
    started: bool = False
    timed_out: bool = False

    @property
    def execution_id(self) -> str:
        assert self.live is not None
        return self.live.execution_id


class Batch:
    """Runs the calls of one batch request; built by ``Engine.start_batch``."""

    def __init__(
        self,
        engine: Engine,
        new_record: Callable[[], StoredExecution],
        job: Job,
        runner: Executor | SubprocessRunner,
        calls: Sequence[tuple[Sequence[bytes], dict[str, bytes]]],
        *,
        timeout_ms: int,
        max_retries: int,
        on_result: OnResult,
    ) -> None:
        self._engine = engine
        self._new_record = new_record
        self._job = job
        self._runner = runner
        self._timeout_ms = timeout_ms
        self._max_retries = max_retries
        self._on_result = on_result
        self._todo = deque(_Call(i, args, kwargs) for i, (args, kwargs) in enumerate(calls))
        self._lanes: set[asyncio.Task[None]] = set()
        self._waiting: set[asyncio.Task[None]] = set()  # lanes waiting for a running slot
        self._open: set[_Call] = set()  # taken, and not yet reported
        self._settled = asyncio.Event()
        self._dropped: str | None = None
        self._run_ms = 0.0  # per call, as seen in this batch (0: not known yet)
        #: The first store failure: the batch's caller gets it.
        self.error: BaseException | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(min(self._engine.scheduler.max_running, len(self._todo))):
            lane = loop.create_task(self._lane())
            self._lanes.add(lane)
            lane.add_done_callback(self._lanes.discard)

    async def wait(self) -> None:
        """Return once every call taken has been reported (or the batch failed)."""
        while self._lanes:
            await asyncio.wait(set(self._lanes))
        while self._open:
            self._settled.clear()
            await self._settled.wait()

    def drop(self, reason: str) -> None:
        """Take no more calls and cancel the ones under way (the caller went away)."""
        if self._dropped is not None:
            return
        self._dropped = reason
        waiting, self._todo = self._todo, deque()
        for call in waiting:
            if call.live is not None:  # sent back after a chunk was stopped
                self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, reason)
        for lane in self._waiting:
            lane.cancel()
        for call in list(self._open):
            if call.live is not None:
                call.live.request_cancel(reason)

    # -- lanes ----------------------------------------------------------------------------------------

    async def _lane(self) -> None:
        scheduler = self._engine.scheduler
        lane = asyncio.current_task()
        assert lane is not None
        while self._todo:
            self._waiting.add(lane)
            try:
                await scheduler.slot()
            except asyncio.CancelledError:
                return  # dropped while waiting: nothing was taken
            finally:
                self._waiting.discard(lane)
            try:
                await self._run(self._take())
            finally:
                scheduler.release()

    def _take(self) -> list[_Call]:
        size = FIRST_CHUNK if not self._run_ms else int(CHUNK_MS / max(self._run_ms, 0.001))
        share = -(-len(self._todo) // max(1, len(self._lanes)))  # keep every lane busy to the end
        size = max(1, min(size, MAX_CHUNK, share))
        calls = [self._todo.popleft() for _ in range(min(size, len(self._todo)))]
        for call in calls:
            if call.live is None:
                call.live = self._admit(call)
                self._open.add(call)
        return calls

    def _admit(self, call: _Call) -> LiveExecution:
        engine = self._engine
        record = self._new_record()
        live = LiveExecution(record, stream=False, log_limit_bytes=self._job.log_limit_bytes)
        engine.output.attach(live)
        live.stops_work = self._runner.stops_work
        live.waited = True  # the batch's caller gets every end as it comes
        live.on_cancel = self._canceller(call)
        engine.live[record.execution_id] = live
        live.created = live.stored = engine.executions.create(record)
        engine.stats.created(record)
        return live

    def _canceller(self, call: _Call) -> Callable[[], None]:
        def cancel() -> None:
            if call.chunk is not None:
                if call.started:
                    call.chunk.stop()
                # else: stopped when its worker starts it, so the calls ahead of it are not disturbed
            elif call in self._todo:  # sent back to wait for another chunk
                self._todo.remove(call)
                self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, self._reason(call))

        return cancel

    async def _run(self, calls: list[_Call]) -> None:
        runnable: list[_Call] = []
        for call in calls:
            live = call.live
            assert live is not None
            if live.cancel_reason is not None:
                self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, self._reason(call))
            else:
                runnable.append(call)
        if not runnable:
            return
        jobs = [job_for_call(self._job, c.execution_id, c.args, c.kwargs) for c in runnable]
        sinks: list[Sink] = [_CallSink(self, c) for c in runnable]
        began = time.perf_counter()
        chunk = await self._start_chunk(jobs, sinks)
        for call in runnable:
            call.chunk = chunk
        retry: list[_Call] = []
        for call, fut in zip(runnable, chunk.outcomes, strict=True):
            outcome = await fut
            call.chunk = None
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
            if self._resolve(call, outcome):
                retry.append(call)
        ran = len(runnable) - len(retry)
        if ran:
            self._run_ms = (time.perf_counter() - began) * 1000 / ran
        self._todo.extendleft(reversed(retry))

    async def _start_chunk(self, jobs: list[Job], sinks: list[Sink]) -> Chunk:
        start_chunk = getattr(self._runner, "start_chunk", None)
        if start_chunk is not None:
            chunk: Chunk = await start_chunk(jobs, sinks)
            return chunk
        return _one_by_one(self._runner, jobs, sinks)

    def _resolve(self, call: _Call, outcome: Outcome) -> bool:
        """End the call by its outcome; True when it is to run again."""
        live = call.live
        assert live is not None
        code = outcome.error_code
        call.started = False
        stopped = code in (STOPPED, NOT_STARTED)
        if stopped and call.timed_out:
            self._end(call, lc.TIMEOUT, lc.TIMEOUT_CODE, f"timed out after {self._timeout_ms} ms")
        elif stopped and (live.cancel_reason is not None or self._dropped is not None):
            self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, self._reason(call))
        elif stopped:  # stopped for another call's sake, or never reached: its turn comes again
            return True
        elif outcome.worker_lost and live.record.attempt <= self._max_retries:
            live.log(f"[attempt {live.record.attempt} lost: {outcome.error_message}; retrying]\n")
            return True
        else:
            self._engine._end_outcome(live, outcome)
            self._report(call)
        return False

    def _reason(self, call: _Call) -> str:
        assert call.live is not None
        return call.live.cancel_reason or self._dropped or "cancelled"

    def _end(self, call: _Call, status: int, code: str, message: str) -> None:
        assert call.live is not None
        self._engine._end(call.live, status, code, message)
        self._report(call)

    def _report(self, call: _Call) -> None:
        live = call.live
        assert live is not None

        def stored(future: asyncio.Future[None]) -> None:
            error = _error(live.created) or _error(future)  # (the first write holds the task index entry)
            if error is not None:
                self._fail(call, error)
                return
            self._engine._release(live)
            self._settle(call)
            self._on_result(call.index, live.record)

        live.stored.add_done_callback(stored)

    def _fail(self, call: _Call, exc: BaseException) -> None:
        assert call.live is not None
        self._engine._drop(call.live, exc)
        self._settle(call)
        if self.error is None:
            self.error = exc
            self.drop("the batch could not be stored")

    def _settle(self, call: _Call) -> None:
        self._open.discard(call)
        if not self._open:
            self._settled.set()

    # -- the running call's sink ----------------------------------------------------------------------

    def started(self, call: _Call, instance_id: str) -> None:
        live = call.live
        assert live is not None
        record = live.record
        record.instance_id = instance_id
        now = time.time()
        if record.started_at is None:
            record.started_at = now
            record.queue_time_ms = (now - record.created_at) * 1000
        record.attempt += 1
        call.started = True
        self._engine._transition(live, lc.RUNNING)
        if live.cancel_reason is not None and call.chunk is not None:
            call.chunk.stop()  # cancelled while it waited in its chunk
            return
        if self._timeout_ms > 0:
            call.timer = asyncio.get_running_loop().call_later(self._timeout_ms / 1000, self._time_out, call)

    def _time_out(self, call: _Call) -> None:
        call.timer = None
        if call.chunk is not None:
            call.timed_out = True
            call.chunk.stop()


class _CallSink:
    """The executor's view of one call of a chunk."""

    __slots__ = ("_batch", "_call")

    def __init__(self, batch: Batch, call: _Call) -> None:
        self._batch = batch
        self._call = call

    def started(self, instance_id: str) -> None:
        self._batch.started(self._call, instance_id)

    def chunk(self, data: bytes) -> bool:
        return True  # a batch call's values are its result, never streamed

    async def writable(self) -> None:
        return None

    def log(self, text: str) -> None:
        assert self._call.live is not None
        self._call.live.log(text)


def _error(future: asyncio.Future[None]) -> BaseException | None:
    if not future.done():
        return None
    return asyncio.CancelledError() if future.cancelled() else future.exception()


def _one_by_one(runner: Executor | SubprocessRunner, jobs: list[Job], sinks: list[Sink]) -> Chunk:
    """A chunk for a runner without pipelines: its jobs run one after another."""
    loop = asyncio.get_running_loop()
    outcomes: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in jobs]

    async def run_all() -> None:
        for index, (job, sink) in enumerate(zip(jobs, sinks, strict=True)):
            try:
                outcome = await runner.run(job, sink)
            except asyncio.CancelledError:
                for later, fut in enumerate(outcomes[index:]):
                    fut.set_result(Outcome(FAILED, error_code=STOPPED if later == 0 else NOT_STARTED))
                return
            outcomes[index].set_result(outcome)

    task = loop.create_task(run_all())

    def stop() -> None:
        task.cancel()

    return Chunk(outcomes, stop)
