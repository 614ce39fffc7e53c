"""Runs jobs on a Dask cluster: one asynchronous ``distributed.Client`` on the server's loop.

Each job (or each pipeline of a batch) is one Dask task, :func:`.runner.run_task`, whose key names the
execution and its attempt, then this executor and a count (``spear-{execution id}-a{attempt}-{token}-{n}``:
Dask returns the existing future for an equal key, so a retry needs a key of its own). The task holds
one ``spear_slot`` resource when the workers advertise it, and is never retried by Dask: the cluster runs
with ``allowed-failures=0`` so that a dead worker fails the task at once (``KilledWorker``), and the engine
decides whether to run it again.

What the task reports while it runs (started, logs, chunks, and each job's result) arrives as events of a
topic of this executor's own, pushed by the scheduler; see :mod:`.runner`. A call's outcome is resolved by
its result's event: the task's own result is fetched only when it carries more (a failure, a result too
large for an event). Cancelling a run cancels its future; the worker's :class:`.plugin.SpearletPlugin`
then kills the call's process.

A call at a time, the latency is set by Dask's batching: the client writes to the scheduler at most every
10 ms, and the scheduler to a worker every 5 ms. So the client here writes within 1 ms
(:func:`_quicken`), and a finished future is released together with the next submission, after it
(:meth:`DaskExecutor._park`), so that the scheduler's message dropping the old result does not hold back
the new task on its way to the worker.

When the scheduler cannot be reached the executor is unhealthy and jobs fail at once with a message that
says so; it keeps trying to connect again, and registers its plugin and topic again when it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from spearlet.engine.executors.base import (
    DEFAULT_LOG_LIMIT,
    FAILED,
    NOT_STARTED,
    STOPPED,
    WORKER_CRASHED,
    ClusterFigures,
    Executor,
    Job,
    Outcome,
    Pipeline,
    Sink,
)
from spearlet.engine.executors.dask import flow, runner
from spearlet.engine.executors.dask.cluster import SLOT_RESOURCE, ClusterInfo, default_workers
from spearlet.engine.executors.messages import ResultMessage, outcome_of

log = logging.getLogger(__name__)

#: How long a run waits for the events its task sent before the result (they travel another way).
_EVENTS_GRACE_S = 2.0
_CONNECT_TIMEOUT_S = 10.0
_RECONNECT_EVERY_S = 0.5
#: A reconnection attempt's own limit: the watcher tries again soon after.
_RECONNECT_TIMEOUT_S = 2.0
_WATCH_EVERY_S = 0.5
#: How long a cancelled run waits for the worker to confirm that its task stopped.
_STOP_WAIT_S = 2.0
#: How often the client writes to the scheduler at most. Dask's client waits 10 ms after each write
#: before the next: a call submitted just after the previous one's release would wait that long.
_SEND_INTERVAL_S = 0.001
#: How long finished tasks are kept when no call follows them (see ``_park``).
_RELEASE_IDLE_S = 0.05


@dataclass(eq=False)
class _Task:
    """One submitted Dask task: its jobs' sinks and outcomes, and what its events said so far."""

    key: str
    jobs: Sequence[Job]
    sinks: Sequence[Sink]
    outcomes: list[asyncio.Future[Outcome]]
    future: Any = None
    instance_id: str = ""
    #: Index of the job that last said it started (-1: none yet).
    running: int = -1
    events: int = 0
    #: Set whenever an event arrives (the end waits for the count the task reports).
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: Set once the worker says the stopped task's process is gone.
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False
    #: The worker's address (where chunks are acknowledged), the chunks the sinks took so far, the count
    #: last acknowledged, and whether a sink said it is behind (no acknowledgement until it catches up).
    address: str = ""
    taken: int = 0
    acked: int = 0
    held: bool = False


class DaskExecutor(Executor):
    """Runs each job as a task on a Dask cluster (``address``), or on a local cluster it starts."""

    name = "dask"
    stops_work = True
    limits_memory = True
    runs_processes = True

    def __init__(
        self,
        size: int = 0,
        *,
        address: str = "",
        log_limit_bytes: int = DEFAULT_LOG_LIMIT,
        connect_timeout_s: float = _CONNECT_TIMEOUT_S,
    ) -> None:
        """``address``: a scheduler (``tcp://HOST:PORT``); empty: start a local cluster of ``size`` worker
        processes (default: one per CPU). ``log_limit_bytes`` caps every job's own limit."""
        self._address = address
        self._local_workers = size or default_workers()
        self._log_cap = log_limit_bytes
        self._connect_timeout_s = connect_timeout_s
        self._token = uuid.uuid4().hex[:8]
        self._topic = f"spearlet-{self._token}"
        self._cluster: Any = None
        self._client: Any = None
        self._info = ClusterInfo()
        self._use_slots = False
        self._tasks: dict[str, _Task] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._reachable = False
        self._last_error = ""
        self._closed = False
        self._submitted = 0
        #: The tasks that await each Dask future, cancel them, acknowledge chunks: kept until they end.
        self._waiters: set[asyncio.Task[None]] = set()
        #: Finished futures not yet released (``_park``), and the timer that releases them when idle.
        self._parked: list[Any] = []
        self._release_timer: asyncio.TimerHandle | None = None

    # -- Executor -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        try:
            if not self._address:
                from spearlet.engine.executors.dask.cluster import start_local_cluster

                self._cluster = await start_local_cluster(self._local_workers)
                self._address = self._cluster.scheduler_address
            await self._connect(self._connect_timeout_s)
        except BaseException:
            await self.close()
            raise
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def run(self, job: Job, sink: Sink) -> Outcome:
        (outcome,), stop, task = self._submit([job], [sink])
        try:
            return await outcome
        except asyncio.CancelledError:
            if task is not None and (not outcome.done() or outcome.cancelled()):
                stop()
                if task.running >= 0:
                    # The work stops for real before the cancellation goes on: the worker says when the
                    # call's process is gone (a task that had not started never will).
                    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                        await asyncio.wait_for(task.gone.wait(), _STOP_WAIT_S)
            raise

    async def start_pipeline(self, jobs: Sequence[Job], sinks: Sequence[Sink]) -> Pipeline:
        outcomes, stop, _ = self._submit(jobs, sinks)
        return Pipeline(outcomes, stop)

    async def close(self) -> None:
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for task in list(self._tasks.values()):
            self._finish(task, None, "", "the Dask executor was closed")
        self._release_parked()
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):
                await cluster.close()

    def worker_pids(self) -> list[int]:
        return []  # the workers are the cluster's, not this server's

    @property
    def healthy(self) -> bool:
        return self._reachable

    def cluster(self) -> ClusterFigures:
        info = self._info
        return ClusterFigures(
            address=self._address,
            reachable=self._reachable,
            workers=info.workers,
            threads=info.threads,
            slots=info.slots,
            memory_limit_bytes=info.memory_limit_bytes,
            memory_used_bytes=info.memory_used_bytes,
            worker_names=tuple(f"dask-{name}" for name in info.names),
        )

    # -- submitting -----------------------------------------------------------------------------------------

    def _submit(
        self, jobs: Sequence[Job], sinks: Sequence[Sink]
    ) -> tuple[list[asyncio.Future[Outcome]], Any, _Task | None]:
        loop = asyncio.get_running_loop()
        outcomes: list[asyncio.Future[Outcome]] = [loop.create_future() for _ in jobs]
        client = self._client
        if client is None or not self._reachable or client.status != "running":
            failed = Outcome(FAILED, error_code=WORKER_CRASHED, error_message=self._unreachable())
            for fut in outcomes:
                fut.set_result(failed)
            return outcomes, lambda: None, None
        # A pipeline's jobs wait behind each other: each must say when it starts (a batch's always do).
        announce = len(jobs) > 1
        capped = [
            job
            if job.log_limit_bytes <= self._log_cap and (job.announce_start or not announce)
            else replace(
                job,
                log_limit_bytes=min(job.log_limit_bytes, self._log_cap),
                announce_start=job.announce_start or announce,
            )
            for job in jobs
        ]
        first = capped[0]
        # The execution and its attempt, then this executor and a count: an equal key would get the
        # existing future, and another spearlet on the cluster, or a batch's call that comes back not
        # started, may have the same id and attempt.
        self._submitted += 1
        key = f"{runner.KEY_PREFIX}{first.execution_id}-a{first.attempt}-{self._token}-{self._submitted}"
        spec = runner.TaskSpec(self._topic, capped)
        task = _Task(key, capped, sinks, outcomes)
        self._tasks[key] = task
        task.future = client.submit(
            runner.run_task,
            pickle.dumps(spec, pickle.HIGHEST_PROTOCOL),  # bytes: a string equal to a key would be swapped
            key=key,
            pure=False,
            retries=0,
            resources={SLOT_RESOURCE: 1} if self._use_slots else None,
        )
        self._release_parked()  # after the submission: the scheduler sends the new task out first
        self._spawn(self._await_task(task))
        return outcomes, lambda: self._stop(task), task

    async def _await_task(self, task: _Task) -> None:
        result: runner.TaskResult | None = None
        error = ""
        future = task.future
        try:
            await future.exception()  # until it ends, fetching nothing
            if future.status != "finished" or not all(fut.done() for fut in task.outcomes):
                # A failure, or results too large for events: what the task returned says more.
                result = await future
        except asyncio.CancelledError:
            if not task.stopped:
                error = "the Dask executor lost the task (the scheduler connection was lost)"
        except Exception as exc:
            error = self._describe_failure(exc)
        if result is not None and result[3] > task.events:
            # Events travel through the scheduler, the result straight from the worker: let them arrive.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._events_reach(task, result[3]), _EVENTS_GRACE_S)
        self._finish(task, result, error, "")
        self._park(future)

    def _park(self, future: Any) -> None:
        """Keep a finished future until just after the next submission (or :data:`_RELEASE_IDLE_S`): its
        release makes the scheduler tell the worker to drop the result, and a task for that worker sent
        just after that message would wait out the scheduler's batching interval (5 ms) behind it."""
        self._parked.append(future)
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_later(_RELEASE_IDLE_S, self._release_parked)

    def _release_parked(self) -> None:
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        parked, self._parked = self._parked, []
        for future in parked:
            future.release()

    async def _events_reach(self, task: _Task, count: int) -> None:
        while task.events < count:
            task.arrived.clear()
            await task.arrived.wait()

    def _finish(self, task: _Task, result: runner.TaskResult | None, error: str, closing: str) -> None:
        """Resolve every outcome the task's events have not: from its result, or from why it failed."""
        if task.stopped and not task.gone.is_set() and not closing:
            # Its "gone" event may still come: keep listening a while.
            asyncio.get_running_loop().call_later(_STOP_WAIT_S, self._forget, task)
        else:
            self._forget(task)
        if result is not None:
            instance_id, results, died, _ = result
            task.instance_id = instance_id
            for index, ended in results.items():
                self._resolve(task, index, ended)
            error = died
        lost_at = next((i for i, fut in enumerate(task.outcomes) if not fut.done()), None)
        if lost_at is None:
            return
        message = closing or error or "the Dask task ended without a result"
        for index in range(lost_at, len(task.outcomes)):
            fut = task.outcomes[index]
            if fut.done():
                continue
            if index == lost_at:
                self._started(task, index)
                fut.set_result(
                    Outcome(
                        FAILED, error_code=WORKER_CRASHED, error_message=message, instance_id=task.instance_id
                    )
                )
            else:
                fut.set_result(Outcome(FAILED, error_code=NOT_STARTED, instance_id=task.instance_id))

    def _forget(self, task: _Task) -> None:
        if self._tasks.get(task.key) is task:
            del self._tasks[task.key]

    def _resolve(self, task: _Task, index: int, message: ResultMessage) -> None:
        fut = task.outcomes[index]
        if fut.done():
            return
        self._started(task, index)
        fut.set_result(outcome_of(message, task.instance_id))

    def _started(self, task: _Task, index: int) -> None:
        """Tell a job's sink where it runs, if its events have not yet (a job sent alone says nothing)."""
        if index > task.running and task.instance_id:
            task.running = index
            task.sinks[index].started(task.instance_id)

    def _stop(self, task: _Task) -> None:
        """Cancel the task: the running job ends STOPPED, the ones behind it NOT_STARTED; the worker's
        plugin kills the call's process."""
        if task.stopped:
            return
        task.stopped = True
        for index, fut in enumerate(task.outcomes):
            if not fut.done():
                code = STOPPED if index <= max(task.running, 0) else NOT_STARTED
                fut.set_result(Outcome(FAILED, error_code=code, instance_id=task.instance_id))
        client = self._client
        if client is not None and task.future is not None:
            self._spawn(self._cancel(client, task))

    async def _cancel(self, client: Any, task: _Task) -> None:
        with contextlib.suppress(Exception):
            await client.cancel([task.future], force=True)

    # -- events ------------------------------------------------------------------------------------------

    def _on_event(self, event: tuple[float, Any]) -> None:
        key, items = event[1]
        task = self._tasks.get(key)
        if task is None:
            return
        task.events += 1
        task.arrived.set()
        for index, kind, payload in items:
            try:
                self._dispatch(task, index, kind, payload)
            except Exception:  # the engine's bug must not take the client's event handling down
                log.exception("the sink of Dask task %s failed", key)

    def _dispatch(self, task: _Task, index: int, kind: str, payload: Any) -> None:
        if kind == runner.EVENT_STARTED:
            task.instance_id, task.address = payload
            self._started(task, index)
        elif kind == runner.EVENT_STOPPED:
            task.gone.set()
            if task.outcomes[-1].done():
                self._forget(task)
        elif kind == runner.EVENT_RESULT:
            self._resolve(task, index, tuple(payload))
        elif task.outcomes[index].done():
            return
        elif kind == runner.EVENT_LOG:
            task.sinks[index].log(payload)
        elif kind == runner.EVENT_CHUNK:
            task.taken += 1
            if not task.sinks[index].chunk(payload) and not task.held:
                task.held = True
                self._spawn(self._resume(task, task.sinks[index]))
            elif not task.held and task.taken - task.acked >= flow.ACK_EVERY:
                self._acknowledge(task)

    async def _resume(self, task: _Task, sink: Sink) -> None:
        await sink.writable()
        task.held = False
        self._acknowledge(task)

    def _acknowledge(self, task: _Task) -> None:
        """Tell the worker that the chunks so far were taken: it may send that many more (:mod:`.flow`)."""
        client = self._client
        if client is None or not task.address or task.taken == task.acked:
            return
        task.acked = task.taken
        self._spawn(self._grant(client, task.address, task.key, task.taken))

    async def _grant(self, client: Any, address: str, key: str, taken: int) -> None:
        with contextlib.suppress(Exception):  # the worker or the task is gone: nobody waits for it
            await client.run(runner.grant, key, taken, workers=[address])

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` on the side, kept until it ends."""
        helper = asyncio.get_running_loop().create_task(work)
        self._waiters.add(helper)
        helper.add_done_callback(self._waiters.discard)

    # -- the connection ----------------------------------------------------------------------------------

    async def _connect(self, timeout_s: float) -> None:
        """Connect (again): a client, the worker plugin, the event topic, the cluster's figures."""
        from distributed import Client

        from spearlet.engine.executors.dask.plugin import PLUGIN_NAME, SpearletPlugin

        client = await Client(  # type: ignore[no-untyped-call]
            self._address, asynchronous=True, timeout=timeout_s
        )
        try:
            _quicken(client)
            await client.register_plugin(SpearletPlugin(), name=PLUGIN_NAME)
            client.subscribe_topic(self._topic, self._on_event)
            await self._refresh(client)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.close()
            raise
        self._client = client
        self._reachable = True
        self._last_error = ""

    async def _refresh(self, client: Any) -> None:
        identity = await client.scheduler.identity()
        info = ClusterInfo.of(identity)
        self._info = info
        self._use_slots = info.slot_resources > 0

    async def _watch(self) -> None:
        """Keep the figures fresh; notice a lost scheduler and connect again once it is back."""
        while not self._closed:
            await asyncio.sleep(_WATCH_EVERY_S if self._reachable else _RECONNECT_EVERY_S)
            client = self._client
            if client is not None and client.status == "running":
                try:
                    await asyncio.wait_for(self._refresh(client), self._connect_timeout_s)
                    continue
                except Exception as exc:
                    self._last_error = f"{type(exc).__name__}: {exc}"
            if self._reachable:
                log.warning("lost the Dask scheduler at %s; connecting again", self._address)
            self._reachable = False
            if client is not None:
                self._client = None
                with contextlib.suppress(Exception):
                    await client.close(timeout=1)
            try:
                await self._connect(_RECONNECT_TIMEOUT_S)
                log.warning("connected to the Dask scheduler at %s again", self._address)
            except Exception as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"

    def _unreachable(self) -> str:
        reason = f" ({self._last_error})" if self._last_error else ""
        return f"the Dask scheduler at {self._address} cannot be reached{reason}; retrying the connection"

    def _describe_failure(self, exc: BaseException) -> str:
        name = type(exc).__name__
        if name == "KilledWorker":
            return f"the Dask worker running the function died: {exc}"
        if isinstance(exc, runner.Stopped):
            return str(exc)
        return f"the Dask task failed: {name}: {exc}"


def _quicken(client: Any) -> None:
    """Have ``client`` write to the scheduler within :data:`_SEND_INTERVAL_S` of the last write rather
    than Dask's 10 ms: one call at a time sends one message per call, and would wait out most of that
    interval behind the previous call's release. A burst of submissions still goes out in few writes."""
    stream = getattr(client, "scheduler_comm", None)
    if stream is not None and hasattr(stream, "interval"):
        stream.interval = _SEND_INTERVAL_S
