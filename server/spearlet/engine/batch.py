"""Batches: many calls of one function in one request (``InvokeBatch``, the SDK's ``map``).

Each call is an execution of its own, with its record, lifecycle, logs, timeout, retries and cancel
switch, as if it had been invoked alone, and goes through the same steps of the :class:`.ledger.Ledger`
(admit, start, end, settle). What the calls share is the cost around them: the request is validated and
the task resolved once, records are written by group commit, and on the process executor a pipeline of
calls goes to one warm worker (``ProcessExecutor.start_pipeline``), so they run back to back without a
round trip each. Pipelines are sized to about :data:`PIPELINE_MS` of work, from the run times seen so far,
so a call waits little behind the others of its pipeline.

Up to ``max_concurrent`` lanes each wait for a running slot like any invocation, then take the next
pipeline: its records are admitted PENDING then, start RUNNING when the worker starts each call, and end as
usual. Calls not yet taken have no record: a batch that is dropped leaves nothing behind for them.

Calls submitted one by one (``InvokeMany``) run the same way when several of one function come together
(:meth:`Batch.admit_all`): then every call is admitted at once, its record written and its id returned
before it runs, and each holds a queue place until a pipeline takes it, as a single invocation would. Their
ends go to whoever watches them; nobody waits for the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from ..store.records import StoredExecution
from . import lifecycle as lc
from .by_reference import needs_adoption
from .executors import Executor, Job, Outcome, SubprocessRunner
from .executors.base import FAILED, NOT_STARTED, STOPPED, Pipeline, Sink, job_for_call
from .ledger import Ledger
from .live import LiveExecution
from .scheduler import Scheduler

#: The work one pipeline should hold, and its bounds in calls.
PIPELINE_MS = 10.0
FIRST_PIPELINE = 8
MAX_PIPELINE = 256

#: Receives each call's index and terminal record, once stored.
OnResult = Callable[[int, StoredExecution], None]


@dataclass(eq=False)
class _Call:
    index: int
    args: Sequence[bytes]
    kwargs: dict[str, bytes]
    live: LiveExecution | None = None
    pipeline: Pipeline | None = None
    timer: asyncio.TimerHandle | None = None
    started: bool = False
    #: When its worker started it (``time.perf_counter()``; 0: not yet).
    started_at: float = 0.0
    timed_out: bool = False

    @property
    def execution_id(self) -> str:
        assert self.live is not None
        return self.live.execution_id


class Batch:
    """Runs the calls of one batch request; built by ``Engine.start_batch``."""

    def __init__(
        self,
        ledger: Ledger,
        scheduler: Scheduler,
        new_record: Callable[[], StoredExecution],
        job: Job,
        runner: Executor | SubprocessRunner,
        calls: Sequence[tuple[Sequence[bytes], dict[str, bytes]]],
        *,
        timeout_ms: int,
        max_retries: int,
        on_result: OnResult | None = None,
        adopt: Callable[[Outcome, str], Awaitable[Outcome]] | None = None,
    ) -> None:
        self._ledger = ledger
        #: Makes a result that came back by reference an object (see ``by_reference``).
        self._adopt = adopt
        self._scheduler = scheduler
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
        #: The calls were admitted one by one (:meth:`admit_all`): each waiting call holds a queue place.
        self._placed = False
        self._run_ms = 0.0  # per call, as seen in this batch (0: not known yet)
        #: The first store failure: the batch's caller gets it.
        self.error: BaseException | None = None

    def admit_all(self) -> list[LiveExecution]:
        """Admit every call now, in order, for calls submitted one by one: their records go to the store
        and their ends to their watchers. The caller took a queue place for each (``Scheduler.admit``);
        they are given back as pipelines take the calls."""
        self._placed = True
        lives = []
        for call in self._todo:
            call.live = self._admit(call, waited=False)
            self._open.add(call)
            lives.append(call.live)
        return lives

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(min(self._scheduler.max_running, len(self._todo))):
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
        self._give_places(len(waiting))
        for call in waiting:
            if call.live is not None:  # sent back after a pipeline was stopped
                self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, reason)
        for lane in self._waiting:
            lane.cancel()
        for call in list(self._open):
            if call.live is not None:
                call.live.request_cancel(reason)

    # -- lanes ----------------------------------------------------------------------------------------

    async def _lane(self) -> None:
        scheduler = self._scheduler
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
        size = FIRST_PIPELINE if not self._run_ms else int(PIPELINE_MS / max(self._run_ms, 0.001))
        share = -(-len(self._todo) // max(1, len(self._lanes)))  # keep every lane busy to the end
        size = max(1, min(size, MAX_PIPELINE, share))
        calls = [self._todo.popleft() for _ in range(min(size, len(self._todo)))]
        self._give_places(len(calls))  # the lane's slot runs them now
        for call in calls:
            if call.live is None:
                call.live = self._admit(call)
                self._open.add(call)
        return calls

    def _give_places(self, count: int) -> None:
        if self._placed and count:
            self._scheduler.withdraw(count)

    def _admit(self, call: _Call, *, waited: bool = True) -> LiveExecution:
        live = self._ledger.admit(
            self._new_record(),
            stream=False,
            stops_work=self._runner.stops_work,
            waited=waited,  # a batch's caller gets every end as it comes
        )
        live.on_cancel = self._canceller(call)
        return live

    def _canceller(self, call: _Call) -> Callable[[], None]:
        def cancel() -> None:
            if call.pipeline is not None:
                if call.started:
                    call.pipeline.stop()
                # else: stopped when its worker starts it, so the calls ahead of it are not disturbed
            elif call in self._todo:  # not taken yet, or sent back to wait for another pipeline
                self._todo.remove(call)
                self._give_places(1)
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
        for index, call in enumerate(runnable):
            assert call.live is not None
            if call.live.record.attempt:  # ran before and lost its worker: this is the next attempt
                jobs[index] = replace(jobs[index], attempt=call.live.record.attempt + 1)
        sinks: list[Sink] = [_CallSink(self, c) for c in runnable]
        began = time.perf_counter()
        pipeline = await self._start_pipeline(jobs, sinks)
        for call in runnable:
            call.pipeline = pipeline
        retry: list[_Call] = []
        for call, fut in zip(runnable, pipeline.outcomes, strict=True):
            outcome = await fut
            if self._adopt is not None and needs_adoption(outcome):
                outcome = await self._adopt(outcome, call.execution_id)
            call.pipeline = None
            if call.timer is not None:
                call.timer.cancel()
                call.timer = None
            if self._resolve(call, outcome):
                retry.append(call)
        ran = len(runnable) - len(retry)
        if ran:
            # From the first start, not the send: on a remote cluster the way there is no run time.
            began = min((c.started_at for c in runnable if c.started_at), default=began)
            self._run_ms = (time.perf_counter() - began) * 1000 / ran
        for call in runnable:
            call.started_at = 0.0
        if self._placed and retry:
            self._scheduler.readmit(len(retry))
        self._todo.extendleft(reversed(retry))

    async def _start_pipeline(self, jobs: list[Job], sinks: list[Sink]) -> Pipeline:
        start_pipeline = getattr(self._runner, "start_pipeline", None)
        if start_pipeline is not None:
            pipeline: Pipeline = await start_pipeline(jobs, sinks)
            return pipeline
        return _one_by_one(self._runner, jobs, sinks)

    def _resolve(self, call: _Call, outcome: Outcome) -> bool:
        """End the call by its outcome; True when it is to run again."""
        live = call.live
        assert live is not None
        code = outcome.error_code
        call.started = False
        stopped = code in (STOPPED, NOT_STARTED)
        if stopped and call.timed_out:
            self._end(call, lc.TIMEOUT, lc.TIMEOUT_CODE, lc.timeout_message(self._timeout_ms))
        elif stopped and (live.cancel_reason is not None or self._dropped is not None):
            self._end(call, lc.CANCELLED, lc.CANCELLED_CODE, self._reason(call))
        elif stopped or self._ledger.retries(live, outcome, self._max_retries):
            return True  # stopped for another call's sake, never reached, or lost: its turn comes again
        else:
            self._ledger.end(live, 0, outcome=outcome)
            self._report(call)
        return False

    def _reason(self, call: _Call) -> str:
        assert call.live is not None
        return call.live.cancel_reason or self._dropped or "cancelled"

    def _end(self, call: _Call, status: int, code: str, message: str) -> None:
        assert call.live is not None
        self._ledger.end(call.live, status, code, message)
        self._report(call)

    def _report(self, call: _Call) -> None:
        """Once the call has settled, hand its terminal record to the caller (or fail the batch)."""
        live = call.live
        assert live is not None

        def settled(error: BaseException | None) -> None:
            self._open.discard(call)
            if not self._open:
                self._settled.set()
            if error is None:
                if self._on_result is not None:
                    self._on_result(call.index, live.record)
            elif self.error is None:
                self.error = error
                self.drop("the batch could not be stored")

        self._ledger.settle_later(live, settled)

    # -- the running call's sink ----------------------------------------------------------------------

    def started(self, call: _Call, instance_id: str) -> None:
        live = call.live
        assert live is not None
        call.started = True
        call.started_at = time.perf_counter()
        self._ledger.start(live, instance_id)
        if live.cancel_reason is not None and call.pipeline is not None:
            call.pipeline.stop()  # cancelled while it waited in its pipeline
            return
        if self._timeout_ms > 0:
            call.timer = asyncio.get_running_loop().call_later(self._timeout_ms / 1000, self._time_out, call)

    def _time_out(self, call: _Call) -> None:
        call.timer = None
        if call.pipeline is not None:
            call.timed_out = True
            call.pipeline.stop()


class _CallSink:
    """The executor's view of one call of a pipeline."""

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


def _one_by_one(runner: Executor | SubprocessRunner, jobs: list[Job], sinks: list[Sink]) -> Pipeline:
    """A pipeline for a runner without pipelines of its own: its jobs run one after another."""
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

    return Pipeline(outcomes, stop)
