"""The engine: validates invocations, resolves their tasks, and runs them through the lifecycle.

The lifecycle itself (the live executions, their records, the figures) is the :class:`.ledger.Ledger`'s;
the engine drives it for single invocations, :mod:`.batch` for batches. Every state is stored before
anything reports it (see docs/design.md).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from google.protobuf import any_pb2

from spear_sdk.wire import codec
from spear_sdk.wire.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)

from ..config import Config
from ..objects import ObjectRepository
from ..stats import ExecutionFigures, StatsTracker
from ..store import KvStore
from ..store.notices import CANCEL, ENDED, RESYNC, TAKEN_OVER, TASK, Notice
from ..store.records import StoredArtifact, StoredExecution, StoredTask
from ..store.shared import FunctionRuns, Orphan, SharedKvStore
from . import by_reference
from . import lifecycle as lc
from .batch import Batch, OnResult
from .executions import ExecutionStore
from .executors import Artifact, Executor, Job, SubprocessRunner, create_executor
from .executors.base import ARTIFACT_LOAD_FAILED, job_for_call
from .figures import Figures, SharedEstimates, of_counts
from .handover import StoredCall
from .ids import id_floor, new_id
from .leases import LeaseKeeper
from .ledger import Ledger
from .live import LiveExecution
from .output import OutputHub
from .scheduler import Scheduler
from .tasks import MEMORY_LIMIT_MB, OBJECT_SCHEME, Registration, TaskRegistry, memory_limit_mb

log = logging.getLogger(__name__)

#: ``ExecutionContext.headers["accept"]`` value by which a Python client asks for exact Python results.
PYTHON_ACCEPT = "application/x-python-pickle"


@dataclass
class Invocation:
    """One validated InvokeFunction/StreamFunction request, free of wire types but for the values."""

    task_id: str = ""
    task_name: str = ""
    task_description: str = ""
    artifact: StoredArtifact | None = None
    existing_task: bool = False
    create_if_not_exists: bool = False
    function_name: str = ""
    params: list[tuple[str, any_pb2.Any]] = field(default_factory=list)
    mode: int = 0
    stream: bool = False
    execution_id: str = ""
    environment: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    session_id: str = ""
    user_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    timeout_ms: int = 0
    max_retries: int = 0
    force_new_instance: bool = False
    #: Objects the parameters refer to, held while the execution runs.
    object_refs: list[str] = field(default_factory=list)

    def settings(self) -> tuple[Any, ...]:
        """Everything but the arguments: calls with equal settings can run as one batch."""
        return (
            self.task_id,
            self.task_name,
            self.task_description,
            self.artifact,
            self.existing_task,
            self.create_if_not_exists,
            self.function_name,
            self.mode,
            self.environment,
            self.headers,
            self.session_id,
            self.user_id,
            self.metadata,
            self.timeout_ms,
            self.max_retries,
        )

    @property
    def plain(self) -> bool:
        """A call that may join a batch: not streamed, no id of its own, no fresh worker, no objects to
        hold while it runs."""
        return not (self.stream or self.execution_id or self.force_new_instance or self.object_refs)


@dataclass(frozen=True)
class CancelResult:
    success: bool
    final_status: int
    message: str


class Engine:
    """What the RPC handlers call: tasks, invocations (single and batched), cancels, and reads of
    executions that see the live state but report only what is stored.

    It owns the task registry, the scheduler (running slots and the queue), the executor and the
    subprocess runner; the :class:`Ledger` owns the executions. Handlers use its methods only."""

    def __init__(self, config: Config, store: KvStore, objects: ObjectRepository) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self.tasks = TaskRegistry(store)
        self.executions = ExecutionStore(store)
        # Without max_concurrent (the dask executor's default) the slots are known once the executor starts.
        self.scheduler = Scheduler(config.max_concurrent or 1, config.max_queued)
        self.output = OutputHub()
        self.ledger = Ledger(self.executions, StatsTracker(), config.log_limit_bytes, self.output)
        self.executor: Executor = create_executor(
            config.executor,
            config.max_concurrent or 0,
            log_limit_bytes=config.log_limit_bytes,
            **config.executor_options(),
        )
        self.subprocesses = SubprocessRunner()
        self.batches: set[Batch] = set()
        #: Batches of calls submitted one by one (:meth:`submit_many`), kept until their calls ended.
        self.groups: set[Batch] = set()
        #: Work started from callbacks that cannot wait (store notices), kept until done.
        self._background: set[asyncio.Task[None]] = set()
        #: On a shared store: this server's lease, and the reaper of dead servers' work.
        self.leases: LeaseKeeper | None = None
        #: On a shared store: the functions' run-time estimates, read from every server's runs.
        self.estimates: SharedEstimates | None = None
        self.started_at = time.time()
        self._accepting = False
        self._worker_environment: dict[str, str] = {}
        #: What :meth:`_job` built, by what it was built from (see there).
        self._jobs: dict[tuple[Any, ...], tuple[StoredArtifact, Job]] = {}

    @property
    def worker_environment(self) -> dict[str, str]:
        """Given to every job, under the names the SDK reads (``spear_sdk._nested``): how a function
        reaches this server; set by the server once it listens."""
        return self._worker_environment

    @worker_environment.setter
    def worker_environment(self, environment: dict[str, str]) -> None:
        self._worker_environment = environment
        self._jobs.clear()

    # -- life of the engine -------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark work cut off by a previous process INTERRUPTED, rebuild the figures, warm the workers.

        On a shared store the unfinished executions of other servers are theirs: only those whose server
        holds no live lease are ended (:mod:`.leases`), and the figures are read from the store."""
        if isinstance(self.store, SharedKvStore):
            self.store.notices.subscribe(self._on_notice)
            ttl = self.config.lease_ttl_s
            self.leases = LeaseKeeper(self.store, ttl_s=ttl, renew_s=ttl / 5, adopt=self._adopt)
            await self.leases.start()
            self.estimates = SharedEstimates(self.store, self.stats, period_s=ttl / 5)
            await self.estimates.start()
        else:
            await self.ledger.recover()
        await self.executor.start()
        if self.config.max_concurrent is None:  # as many as the executor's cluster runs at once
            cluster = self.executor.cluster()
            slots = max(cluster.slots if cluster is not None else 0, 1)
            self.config = self.config.replace(max_concurrent=slots)
            self.scheduler.max_running = slots
        self.started_at = time.time()
        self._accepting = True

    async def close(self, grace_s: float) -> None:
        """Refuse new work, let running work finish for ``grace_s``, cancel the rest, stop the workers."""
        self._accepting = False
        for batch in list(self.batches):
            batch.drop("server shutting down")
        running = [asyncio.ensure_future(live.done.wait()) for live in self.live.values()]
        if running and grace_s > 0:
            await asyncio.wait(running, timeout=grace_s)
        for live in list(self.live.values()):
            live.request_cancel("server shutting down")
        if running:
            await asyncio.wait(running)
        self.output.close()  # every execution has ended: its output is all sent
        for batch in [*self.batches, *self.groups]:
            await batch.wait()
        await self.executions.flush()
        if self.estimates is not None:
            await self.estimates.close()
        if self.leases is not None:
            await self.leases.close(release=True)
        await self.executor.close()
        await self.subprocesses.close()

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started_at

    @property
    def live(self) -> dict[str, LiveExecution]:
        """The executions under way, by id (the ledger's; read it, never change it)."""
        return self.ledger.live

    @property
    def stats(self) -> StatsTracker:
        """The figures of all executions (the ledger's)."""
        return self.ledger.stats

    # -- tasks ----------------------------------------------------------------------------------------

    async def register_task(
        self, name: str, artifact: StoredArtifact, description: str, metadata: dict[str, str]
    ) -> Registration:
        self._check_runnable(artifact)
        return await self.tasks.register(name, artifact, description=description, metadata=metadata)

    async def delete_task(self, task_id: str, *, force: bool, cleanup: bool) -> int:
        """Delete a task (cancelling its work when ``force``); return how many records were cleaned up."""
        task = await self.tasks.require(task_id)
        active = [live for live in self.live.values() if live.record.task_id == task_id]
        shared = self.store if isinstance(self.store, SharedKvStore) else None
        elsewhere: list[str] = []  # on a shared store: running on other servers
        if shared is not None:
            elsewhere = [e for e in await shared.unfinished(task_id) if e not in self.live]
        if (active or elsewhere) and not force:
            count = len(active) + len(elsewhere)
            raise FailedPrecondition(
                f"task {task.name!r} has {count} pending or running executions; delete with force"
            )
        for live in active:
            live.request_cancel("task deleted")
        for execution_id in elsewhere:
            assert shared is not None
            await shared.send_notice(CANCEL, execution_id)
        for live in active:
            await self.ledger.settled(live)
        for execution_id in elsewhere:  # (a dead owner's end comes when its lease expires)
            await self.until_ended(execution_id)
        cleaned: list[StoredExecution] = []
        if cleanup:
            cleaned = await self.executions.delete_for_task(task_id)
            self.ledger.forget(cleaned)
            await self.objects.delete_results(r.execution_id for r in cleaned)
        await self.tasks.delete(task)
        return len(cleaned)

    # -- invocations ----------------------------------------------------------------------------------

    async def submit(self, inv: Invocation) -> LiveExecution:
        """Admit one invocation: write its PENDING record and start running it."""
        if not self._accepting:
            raise Unavailable("the server is shutting down")
        _validate(inv)
        task = await self._resolve_task(inv)
        args, kwargs = self._encode_params(inv.params)
        execution_id = inv.execution_id or new_id()
        if inv.execution_id and (
            inv.execution_id in self.live or await self.executions.exists(inv.execution_id)
        ):
            raise AlreadyExists(f"execution {inv.execution_id!r} already exists")
        held = await self.objects.hold(inv.object_refs)
        try:
            self.scheduler.admit(lambda: self._mean_run_ms(task.name, inv.function_name))
        except BaseException:
            await self.objects.release(held)
            raise
        # The PENDING record is held back a moment: when a slot is free, PENDING and RUNNING go to the
        # store in one write, made while the worker runs. Nothing reports either before it is stored.
        live = self.ledger.admit(
            _new_record(task, inv, execution_id),
            stream=inv.stream,
            stops_work=self._runner_for(task.artifact.artifact_type).stops_work,
            waited=inv.stream,  # its reader waits for the end (a SYNC caller says so in wait())
        )
        job = job_for_call(self._job(task, inv), execution_id, args, kwargs)
        if inv.max_retries and not inv.stream and isinstance(self.store, SharedKvStore):
            # Another server may have to run it again if this one dies (see .leases).
            self.executions.save_call(execution_id, StoredCall(args, kwargs, inv.environment).encode())
        timeout_ms = inv.timeout_ms or self.config.default_timeout_ms
        live.task = asyncio.create_task(self._run(live, task, job, timeout_ms, inv.max_retries, held))
        return live

    async def submit_many(self, invocations: Sequence[Invocation]) -> list[LiveExecution | Exception]:
        """Admit invocations in order, each accepted (its execution) or refused (the error) alone.

        Consecutive plain calls of one function with the same settings run as a batch (:mod:`.batch`):
        admitted at once, as each would be alone, then sent to warm workers in pipelines."""
        admitted: list[LiveExecution | Exception] = []
        start = 0
        while start < len(invocations):
            first = invocations[start]
            end = start + 1
            if first.plain:
                settings = first.settings()
                while (
                    end < len(invocations)
                    and invocations[end].plain
                    and invocations[end].settings() == settings
                ):
                    end += 1
            group = invocations[start:end]
            start = end
            if len(group) > 1 and not (first.max_retries and isinstance(self.store, SharedKvStore)):
                # (a call another server may have to run again is saved with its arguments: alone)
                try:
                    batched = await self._submit_group(group)
                except Exception as exc:  # refused as a whole: the same for each
                    batched = [exc] * len(group)
                if batched is not None:
                    admitted += batched
                    continue
            for inv in group:
                try:
                    admitted.append(await self.submit(inv))
                except Exception as exc:
                    admitted.append(exc)
        return admitted

    async def _submit_group(
        self, invocations: Sequence[Invocation]
    ) -> list[LiveExecution | Exception] | None:
        """Admit calls of one function with equal settings, and run them as a batch; None when they are
        to be admitted one by one instead."""
        if not self._accepting:
            raise Unavailable("the server is shutting down")
        inv = invocations[0]
        _validate(inv)
        task = await self._resolve_task(inv)
        job = await self._batch_job(task, inv)
        if isinstance(job, str):  # the code cannot be loaded: each call fails alone, as it would have
            return None
        refused: dict[int, Exception] = {}
        calls: list[tuple[list[bytes], dict[str, bytes]]] = []
        for index, one in enumerate(invocations):
            try:
                encoded = self._encode_params(one.params)
                self.scheduler.admit(lambda: self._mean_run_ms(task.name, inv.function_name))
            except Exception as exc:
                refused[index] = exc
                continue
            calls.append(encoded)
        lives: list[LiveExecution] = []
        if calls:
            batch = self._batch(task, inv, job, calls)
            lives = batch.admit_all()
            batch.start()
            self.groups.add(batch)
            self._in_background(self._forget_group(batch))
        accepted = iter(lives)
        return [refused[i] if i in refused else next(accepted) for i in range(len(invocations))]

    async def _forget_group(self, batch: Batch) -> None:
        await batch.wait()
        self.groups.discard(batch)

    async def start_batch(
        self, inv: Invocation, calls: Sequence[Iterable[tuple[str, any_pb2.Any]]], on_result: OnResult
    ) -> Batch:
        """Admit many calls of ``inv``'s function (``inv.params`` unused) and start running them; each
        call's terminal record goes to ``on_result`` once stored. See :mod:`.batch`."""
        if not self._accepting:
            raise Unavailable("the server is shutting down")
        if inv.execution_id:
            raise InvalidArgument("a batch's calls get their own execution ids; leave execution_id empty")
        if inv.force_new_instance:
            raise InvalidArgument("force_new_instance is not supported in a batch; invoke such calls alone")
        _validate(inv)
        encoded = [self._encode_params(params) for params in calls]
        task = await self._resolve_task(inv)
        job = await self._batch_job(task, inv)
        if isinstance(job, str):
            raise FailedPrecondition(job)
        batch = self._batch(task, inv, job, encoded, on_result)
        batch.start()
        self.batches.add(batch)
        return batch

    async def _batch_job(self, task: StoredTask, inv: Invocation) -> Job | str:
        """The job a batch's calls of ``inv`` share (pickled code loaded once), or why the code cannot be
        loaded."""
        job = replace(self._job(task, inv), announce_start=True)  # its calls wait in pipelines
        if task.artifact.artifact_type == "pickle":
            loaded = await self._load_pickle(task)
            if isinstance(loaded, str):
                return loaded
            job = replace(job, artifact=replace(job.artifact, payload=loaded[0], cache_key=loaded[1]))
        return job

    def _batch(
        self,
        task: StoredTask,
        inv: Invocation,
        job: Job,
        calls: Sequence[tuple[list[bytes], dict[str, bytes]]],
        on_result: OnResult | None = None,
    ) -> Batch:
        return Batch(
            self.ledger,
            self.scheduler,
            _records_of(task, inv),
            job,
            self._runner_for(task.artifact.artifact_type),
            calls,
            timeout_ms=inv.timeout_ms or self.config.default_timeout_ms,
            max_retries=inv.max_retries,
            on_result=on_result,
            adopt=lambda outcome, execution_id: by_reference.adopt_outcome(
                self.objects, outcome, execution_id
            ),
        )

    def end_batch(self, batch: Batch) -> None:
        """The batch's caller is done with it (all reported, or gone: then the rest is cancelled)."""
        batch.drop("the caller dropped the batch")
        self.batches.discard(batch)

    def _job(self, task: StoredTask, inv: Invocation) -> Job:
        """What a worker needs to run one of ``inv``'s calls, but for its id and arguments.

        Built once per task version and call settings, then shared (a :class:`Job` is frozen): a call
        of the same function with the same settings as the last one costs a dictionary lookup."""
        exact_results = PYTHON_ACCEPT in inv.headers.get("accept", "")
        key = (
            task.task_id,
            task.version,
            inv.function_name,
            inv.stream,
            exact_results,
            inv.force_new_instance,
            inv.timeout_ms,
            tuple(inv.environment.items()),
        )
        cached = self._jobs.get(key)
        if cached is not None and (cached[0] is task.artifact or cached[0] == task.artifact):
            return cached[1]
        job = Job(
            execution_id="",
            artifact=Artifact(
                type=task.artifact.artifact_type,
                location=task.artifact.location,
                function_name=inv.function_name,
                metadata=task.artifact.metadata,
                cache_key=f"{task.task_id}:{task.version}",
            ),
            stream=inv.stream,
            environment={**self.worker_environment, **inv.environment},
            exact_results=exact_results,
            allow_pickle=self.config.allows_pickle,
            log_limit_bytes=self.config.log_limit_bytes,
            fresh_instance=inv.force_new_instance,
            memory_limit_mb=memory_limit_mb(task.artifact),
            **by_reference.job_settings(self.config, self.objects),
            timeout_ms=inv.timeout_ms or self.config.default_timeout_ms,
        )
        if len(self._jobs) >= _JOB_TEMPLATES:
            self._jobs.clear()
        self._jobs[key] = (task.artifact, job)
        return job

    async def wait(self, live: LiveExecution) -> StoredExecution:
        """The terminal record, once stored (a failed store write raises its :class:`StoreError`); for
        one another server took over, the record it stored (see :mod:`.leases`)."""
        await self.ledger.settled(live)
        if live.store_error is not None:
            raise live.store_error
        if live.taken_over:
            return await self.until_ended(live.execution_id)
        return live.record

    async def accepted(self, live: LiveExecution) -> StoredExecution:
        """The new record as admitted (PENDING), once stored: what an ASYNC invocation reports. Call it
        right after :meth:`submit`; by the time it returns the run may have moved on."""
        admitted = copy.copy(live.record)
        self.executions.hurry()
        await asyncio.shield(
            live.created
        )  # the store's writer resolves it: a dropped call must not cancel it
        return admitted

    def cancel_soon(self, execution_id: str, reason: str) -> None:
        """Cancel from a place that cannot wait (a handler whose client went away)."""
        live = self.live.get(execution_id)
        if live is not None:
            live.request_cancel(reason)

    async def cancel(self, execution_id: str, reason: str) -> CancelResult:
        if not execution_id:
            raise InvalidArgument("execution_id is required")
        live = self.live.get(execution_id)
        if live is None:
            record = await self.executions.get(execution_id)
            if record is None:
                raise NotFound(f"execution {execution_id!r} not found")
            if record.status in lc.ACTIVE and isinstance(self.store, SharedKvStore):
                return await self._cancel_elsewhere(record, reason)
            return CancelResult(
                False, record.status, f"execution already ended: {lc.status_name(record.status)}"
            )
        was_running = live.record.status == lc.RUNNING
        live.request_cancel(reason)
        await self.ledger.settled(live)
        record = live.record
        if record.status != lc.CANCELLED:
            return CancelResult(
                False, record.status, f"execution ended first: {lc.status_name(record.status)}"
            )
        if was_running and not live.stops_work:
            return CancelResult(
                True, record.status, "cancelled; the thread running it cannot be stopped and was abandoned"
            )
        return CancelResult(True, record.status, "cancelled")

    async def get_execution(self, execution_id: str) -> StoredExecution | None:
        if not execution_id:
            raise InvalidArgument("execution_id is required")
        live = self.live.get(execution_id)
        if live is None:
            return await self.executions.get(execution_id)
        await self.executions.flush()  # its latest state may still be on its way to the store
        return live.record

    async def stored(self, live: LiveExecution) -> None:
        """Return once the execution's latest state is stored (having it written now)."""
        self.executions.hurry()
        await live.stored

    async def newest_executions(self, task_id: str, count: int) -> list[StoredExecution]:
        """A task's ``count`` newest executions, newest first."""
        return self._current(await self.executions.newest(task_id, count))

    async def execution_infos(
        self, *, task_id: str, status: int, start_after: str, count: int, newest_first: bool = False
    ) -> list[tuple[str, bytes]]:
        """A page of ``(execution_id, serialized ExecutionInfo)`` in id order (descending with
        ``newest_first``), of one task and/or status."""
        rows = await self.executions.info_page(
            task_id=task_id, status=status, start_after=start_after, count=count, newest_first=newest_first
        )
        return self._current_infos(rows)

    async def figures_since(self, since: float) -> ExecutionFigures:
        """The figures of the executions created since the Unix time ``since``."""
        if isinstance(self.store, SharedKvStore):
            await self.executions.flush()
            return of_counts(await self.store.execution_counts(id_floor(since)), {}).figures
        return ExecutionFigures.of([r async for r in self.executions.iterate(start_after=id_floor(since))])

    @property
    def shared(self) -> bool:
        """Whether the store is shared with other servers (whose executions count in every figure)."""
        return isinstance(self.store, SharedKvStore)

    async def function_figures(self, since: float) -> FunctionRuns:
        """Each function's figures over the executions created since the Unix time ``since`` (0: all):
        this server's, from memory, or on a shared store every server's, computed by the store."""
        if isinstance(self.store, SharedKvStore):
            await self.executions.flush()  # our own ends count once stored
            return await self.store.function_figures(id_floor(since) if since else "")
        latencies = self.stats.latencies
        return FunctionRuns(latencies.figures(since), latencies.overall(since))

    async def current_figures(self) -> Figures:
        """All executions' figures: this server's own, or on a shared store every server's (from SQL)."""
        store = self.store
        if not isinstance(store, SharedKvStore):
            running, pending, active = self.active_counts()
            return Figures(self.stats.figures, running, pending, frozenset(active))
        await self.executions.flush()  # our own states count once stored
        counts = await store.execution_counts()
        task_ids = sorted({row.task_id for row in counts})
        return of_counts(counts, await store.newest_executions(task_ids))

    async def until_ended(self, execution_id: str) -> StoredExecution:
        """Wait for the execution to end, wherever it runs, and return its stored terminal record.

        One of ours is awaited through the Ledger; another server's through the store's notices (a
        terminal write's notice, or a resync after a reconnect, prompts a new read)."""
        live = self.live.get(execution_id)
        if live is not None:
            return await self.wait(live)
        store = self.store
        if not isinstance(store, SharedKvStore):
            record = await self.executions.get(execution_id)
            if record is None:
                raise NotFound(f"execution {execution_id!r} not found")
            return record  # not live here, and nobody else runs it: it has ended
        with store.notices.waiter(execution_id) as waiter:  # subscribe before reading: miss nothing
            while True:
                record = await self.executions.get(execution_id)
                if record is None:
                    raise NotFound(f"execution {execution_id!r} not found")
                if record.status in lc.TERMINAL:
                    return record
                # A notice can be missed (a server that joined a moment ago): read again now and then.
                await waiter.wait(timeout=_REREAD_S)

    async def tasks_page(self, prefix: str, start_after: str, count: int | None) -> list[StoredTask]:
        return await self.tasks.page(prefix, start_after, count)

    async def get_task(self, task_id: str) -> StoredTask | None:
        return await self.tasks.get(task_id)

    async def all_tasks(self) -> list[StoredTask]:
        return await self.tasks.all()

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes, for memory and CPU figures."""
        return self.executor.worker_pids()

    def _current(self, records: list[StoredExecution]) -> list[StoredExecution]:
        """Stored records with the live ones swapped in (they know their worker before the store does)."""
        return [live.record if (live := self.live.get(r.execution_id)) else r for r in records]

    def _current_infos(self, rows: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """:meth:`_current` for ``(execution_id, serialized ExecutionInfo)`` rows."""
        live = self.live
        return [
            row if (found := live.get(row[0])) is None else (row[0], found.record.info().SerializeToString())
            for row in rows
        ]

    async def logs(self, execution_id: str) -> str:
        live = self.live.get(execution_id)
        return live.logs.text() if live is not None else await self.executions.logs(execution_id)

    def active_counts(self) -> tuple[int, int, set[str]]:
        """(running, pending, ids of tasks with active work)."""
        running = sum(1 for live in self.live.values() if live.record.status == lc.RUNNING)
        tasks = {live.record.task_id for live in self.live.values()}
        return running, len(self.live) - running, tasks

    # -- internals ------------------------------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        """Another server changed a task (or notices were missed: drop our copy of it), ended an execution
        someone here watches, or asks us to cancel an execution of ours; or our store refused a write of
        an execution of ours that another server took over."""
        if notice.kind == TASK:
            self.tasks.forget(notice.key)
        elif notice.kind == ENDED and notice.key in self.ledger.completions:
            self._in_background(self._publish_remote_ends([notice.key]))
        elif notice.kind == RESYNC:
            self.tasks.forget()
            self._in_background(self._publish_remote_ends(self.ledger.completions.watched()))
        elif notice.kind == CANCEL:
            self.cancel_soon(notice.key, "cancelled through another server")
        elif notice.kind == TAKEN_OVER and (live := self.live.get(notice.key)) is not None:
            live.taken_over = True
            if notice.key in self.ledger.completions:
                self._in_background(self._publish_remote_ends([notice.key]))

    async def _publish_remote_ends(self, execution_ids: list[str]) -> None:
        """Tell the watchers here of executions another server ended: a notice names the id only, so the
        terminal record is read from the store (after a resync, any watched one that ended meanwhile)."""
        for execution_id in execution_ids:
            live = self.live.get(execution_id)
            if live is not None and not live.taken_over:
                continue  # ours: the Ledger publishes its end
            record = await self.executions.get(execution_id)
            if record is not None and record.status in lc.TERMINAL:
                self.ledger.completions.publish(record, None)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _adopt(self, orphan: Orphan, record: StoredExecution) -> bool:
        """Run again here an execution a dead server left unfinished, if its retries allow and its call
        was stored; whether it was taken care of (here, or by another server that claimed it first)."""
        max_retries = int(record.metadata.get("max_retries", "0") or 0)
        if not self._accepting or record.attempt > max_retries:
            return False
        stored = await self.executions.call(record.execution_id)
        task = await self.tasks.get(record.task_id)
        if stored is None or task is None:
            return False
        assert isinstance(self.store, SharedKvStore)
        # The claim: rewriting the row makes this server its owner, unless someone got there first.
        if not await self.store.put_if_version(orphan.key, orphan.value, orphan.version):
            return True
        call = StoredCall.decode(stored)
        inv = Invocation(
            function_name=record.function_name,
            mode=record.mode,
            environment=call.environment,
            headers={
                name.removeprefix("header."): value
                for name, value in record.metadata.items()
                if name.startswith("header.")
            },
        )
        job = job_for_call(self._job(task, inv), record.execution_id, call.args, call.kwargs)
        runner = self._runner_for(task.artifact.artifact_type)
        live = self.ledger.adopt(record, stops_work=runner.stops_work)
        if record.attempt:
            live.log(f"[attempt {record.attempt} lost with its server; retrying on another]\n")
        timeout_ms = int(record.metadata.get("timeout_ms", "0") or 0) or self.config.default_timeout_ms
        live.task = asyncio.create_task(self._run(live, task, job, timeout_ms, max_retries))
        log.warning("took over execution %s from a dead server", record.execution_id)
        return True

    async def _cancel_elsewhere(self, record: StoredExecution, reason: str) -> CancelResult:
        """Cancel an execution another server runs: ask it by a notice, and wait for the end. Should that
        server be dead, its lease expires and the end is INTERRUPTED."""
        assert isinstance(self.store, SharedKvStore)
        await self.store.send_notice(CANCEL, record.execution_id)
        ended = await self.until_ended(record.execution_id)
        if ended.status != lc.CANCELLED:
            return CancelResult(False, ended.status, f"execution ended first: {lc.status_name(ended.status)}")
        return CancelResult(True, ended.status, "cancelled by the server running it")

    async def _resolve_task(self, inv: Invocation) -> StoredTask:
        if inv.existing_task:
            if not inv.task_id:
                raise InvalidArgument("an EXISTING_TASK invocation needs task_id")
            task = await self.tasks.get(inv.task_id)
            if task is not None:
                self._check_runnable(task.artifact)
                return task
            if not (inv.create_if_not_exists and inv.task_name and inv.artifact):
                raise NotFound(f"task {inv.task_id!r} not found")
        elif not inv.task_name or inv.artifact is None:
            raise InvalidArgument("a NEW_TASK invocation needs task_name and artifact_spec")
        assert inv.artifact is not None
        self._check_runnable(inv.artifact)
        registration = await self.tasks.register(
            inv.task_name, inv.artifact, description=inv.task_description, update=False
        )
        if not registration.created and registration.task.artifact != inv.artifact:
            raise AlreadyExists(
                f"task {inv.task_name!r} exists with a different artifact; use RegisterTask to update it"
            )
        return registration.task

    def _mean_run_ms(self, task_name: str, function_name: str) -> float:
        """How long this function's recent runs took, or else all runs on average."""
        return self.stats.estimate_ms(task_name, function_name) or self.stats.figures.average_time_ms

    def _check_runnable(self, artifact: StoredArtifact) -> None:
        """Refuse an artifact this server will not run (before anything is stored)."""
        if artifact.artifact_type == "pickle" and not self.config.allows_pickle:
            raise PermissionDenied(_PICKLE_REFUSED)
        if memory_limit_mb(artifact) and not self.executor.limits_memory:
            raise FailedPrecondition(
                f'artifact_spec.metadata["{MEMORY_LIMIT_MB}"] needs the process executor; this server '
                f"runs functions in {self.executor.name}s, which share its memory"
            )

    def _encode_params(
        self, params: Iterable[tuple[str, any_pb2.Any]]
    ) -> tuple[list[bytes], dict[str, bytes]]:
        args: list[bytes] = []
        kwargs: dict[str, bytes] = {}
        for position, (name, value) in enumerate(params):
            try:
                codec.check_type_url(value.type_url, allow_pickle=self.config.allows_pickle)
            except codec.PickleNotAllowed:
                raise PermissionDenied(_PICKLE_REFUSED) from None
            except codec.CodecError as exc:
                raise InvalidArgument(f"parameter {name or position}: {exc}") from None
            if not name:
                if kwargs:
                    raise InvalidArgument("positional parameters (empty name) must come before named ones")
                args.append(value.SerializeToString())
            elif name in kwargs:
                raise InvalidArgument(f"parameter {name!r} is given twice")
            else:
                kwargs[name] = value.SerializeToString()
        return args, kwargs

    def _runner_for(self, artifact_type: str) -> Executor | SubprocessRunner:
        if artifact_type == "process" and not self.executor.runs_processes:
            return self.subprocesses
        return self.executor

    async def _run(
        self,
        live: LiveExecution,
        task: StoredTask,
        job: Job,
        timeout_ms: int,
        max_retries: int,
        held: list[str] = (),  # type: ignore[assignment]
    ) -> None:
        try:
            await self._run_holding(live, task, job, timeout_ms, max_retries)
        finally:
            if held:  # the objects the arguments named are free to go once the execution ended
                await self.objects.release(held)

    async def _run_holding(
        self, live: LiveExecution, task: StoredTask, job: Job, timeout_ms: int, max_retries: int
    ) -> None:
        try:
            try:
                await self.scheduler.acquire()
            except asyncio.CancelledError:
                self.ledger.end(live, lc.CANCELLED, lc.CANCELLED_CODE, live.cancel_reason or "cancelled")
                await self.ledger.settle(live)
                return
            try:
                await self._attempts(live, task, job, timeout_ms, max_retries)
            finally:
                # The attempt is over and its worker free: the next execution may start while this
                # one's end is being stored (the end is queued first, so no listing sees both running).
                self.scheduler.release()
            await self.ledger.settle(live)
        except Exception as exc:  # a bug or a store fault: never leave a waiter hanging
            log.exception("execution %s failed inside the engine", live.execution_id)
            self.ledger.abandon(live, exc)

    async def _attempts(
        self, live: LiveExecution, task: StoredTask, job: Job, timeout_ms: int, max_retries: int
    ) -> None:
        """Run attempts until one ends the execution; the end is queued, not yet stored."""
        runner = self._runner_for(task.artifact.artifact_type)
        loop = asyncio.get_running_loop()
        ledger = self.ledger
        while True:
            ledger.start(live)
            if live.record.attempt > 1:
                job = replace(job, attempt=live.record.attempt)
            elif task.artifact.artifact_type == "pickle":
                loaded = await self._load_pickle(task)
                if isinstance(loaded, str):
                    ledger.end(live, lc.FAILED, ARTIFACT_LOAD_FAILED, loaded)
                    return
                job = replace(job, artifact=replace(job.artifact, payload=loaded[0], cache_key=loaded[1]))
            # A timer, not asyncio.wait_for: that runs the attempt in a task of its own, two more turns
            # of the loop on every call.
            deadline = loop.call_later(timeout_ms / 1000, live.time_out) if timeout_ms > 0 else None
            try:
                outcome = await runner.run(job, live)
            except asyncio.CancelledError:
                if live.timed_out:
                    ledger.end(live, lc.TIMEOUT, lc.TIMEOUT_CODE, lc.timeout_message(timeout_ms))
                else:
                    ledger.end(live, lc.CANCELLED, lc.CANCELLED_CODE, live.cancel_reason or "cancelled")
                return
            finally:
                if deadline is not None:
                    deadline.cancel()
            if not ledger.retries(live, outcome, max_retries):
                if by_reference.needs_adoption(outcome):
                    outcome = await by_reference.adopt_outcome(self.objects, outcome, live.execution_id)
                ledger.end(live, 0, outcome=outcome)
                return

    async def _load_pickle(self, task: StoredTask) -> tuple[bytes, str] | str:
        """The pickled callable's bytes and cache key, or why they cannot be used."""
        key = task.artifact.location[len(OBJECT_SCHEME) :]
        found = await self.objects.value_and_digest(key)
        if found is None:
            return f"artifact object {key!r} not found"
        value, digest = found
        if task.artifact.checksum and task.artifact.checksum != digest:
            return f"checksum mismatch for object {key!r}: expected {task.artifact.checksum}, got {digest}"
        return value, digest


#: Job templates kept (:meth:`Engine._job`) before the cache starts over.
_JOB_TEMPLATES = 1024

#: How often a wait for another server's execution reads the store even without a notice.
_REREAD_S = 1.0

_PICKLE_REFUSED = (
    "pickled code and values are refused: this server is bound beyond loopback without a token "
    "(start it with --token, or bind it to 127.0.0.1)"
)


MAX_EXECUTION_ID = 256


def _validate(inv: Invocation) -> None:
    """Refuse what no run could honour, before anything is stored."""
    if len(inv.execution_id) > MAX_EXECUTION_ID:
        raise InvalidArgument(f"execution_id is longer than {MAX_EXECUTION_ID} characters")
    if inv.timeout_ms < 0:
        raise InvalidArgument(f"context.timeout_ms must not be negative (got {inv.timeout_ms})")
    if inv.max_retries < 0:
        raise InvalidArgument(f"context.max_retries must not be negative (got {inv.max_retries})")
    for name, value in inv.environment.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise InvalidArgument(
                f"context.environment entry {name!r} is not a valid environment variable "
                "(names are non-empty without '=' or NUL; values have no NUL)"
            )


def _new_record(
    task: StoredTask, inv: Invocation, execution_id: str, metadata: dict[str, str] | None = None
) -> StoredExecution:
    """The PENDING record of one call of ``inv`` (``metadata``: its metadata, when worked out already)."""
    return StoredExecution(
        execution_id=execution_id,
        task_id=task.task_id,
        task_name=task.name,
        function_name=inv.function_name,
        mode=inv.mode,
        status=lc.PENDING,
        created_at=time.time(),
        metadata=_execution_metadata(inv) if metadata is None else metadata,
    )


def _records_of(task: StoredTask, inv: Invocation) -> Callable[[], StoredExecution]:
    """Makes the PENDING records of a batch's calls of ``inv``, each with a new id: what they share is
    worked out once (records are not changed in place but for their state, so the metadata is shared)."""
    metadata = _execution_metadata(inv)
    return lambda: _new_record(task, inv, new_id(), metadata)


def _execution_metadata(inv: Invocation) -> dict[str, str]:
    metadata = dict(inv.metadata)
    if inv.session_id:
        metadata["session_id"] = inv.session_id
    if inv.user_id:
        metadata["user_id"] = inv.user_id
    for name, value in inv.headers.items():
        metadata[f"header.{name}"] = value
    if inv.timeout_ms:
        metadata["timeout_ms"] = str(inv.timeout_ms)
    if inv.max_retries:
        metadata["max_retries"] = str(inv.max_retries)
    return metadata
