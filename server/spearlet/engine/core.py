"""The engine: admits invocations, runs them through the lifecycle, and keeps the store and figures current.

Every transition is written to the store before anything reports it (SPEC §3).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

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
from ..stats import StatsTracker
from ..store import KvStore
from ..store.records import StoredArtifact, StoredExecution, StoredTask
from . import lifecycle as lc
from .batch import Batch, OnResult
from .executions import ExecutionStore
from .executors import Artifact, Executor, Job, Outcome, SubprocessRunner, create_executor
from .executors.base import ARTIFACT_LOAD_FAILED, COMPLETED, job_for_call
from .ids import new_id
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


@dataclass(frozen=True)
class CancelResult:
    success: bool
    final_status: int
    message: str


class Engine:
    def __init__(self, config: Config, store: KvStore, objects: ObjectRepository) -> None:
        self.config = config
        self.store = store
        self.objects = objects
        self.tasks = TaskRegistry(store)
        self.executions = ExecutionStore(store)
        self.scheduler = Scheduler(config.max_concurrent, config.max_queued)
        self.stats = StatsTracker()
        self.executor: Executor = create_executor(
            config.executor, config.max_concurrent, log_limit_bytes=config.log_limit_bytes
        )
        self.subprocesses = SubprocessRunner()
        self.live: dict[str, LiveExecution] = {}
        self.batches: set[Batch] = set()
        self.started_at = time.time()
        self._accepting = False
        #: Given to every job, under the names the SDK reads (``spear_sdk._nested``): how a function
        #: reaches this server; set by the server once it listens.
        self.worker_environment: dict[str, str] = {}
        self.output = OutputHub()

    # -- life of the engine -------------------------------------------------------------------------

    async def start(self) -> None:
        """Mark work cut off by a previous process INTERRUPTED, rebuild the figures, warm the workers."""
        records = [r async for r in self.executions.iterate()]
        interrupted = [r for r in records if r.status in lc.ACTIVE]
        now = time.time()
        for record in interrupted:
            record.status = lc.FAILED
            record.error_code = lc.INTERRUPTED
            record.error_message = "interrupted by a server restart"
            record.completed_at = now
            record.execution_time_ms = _elapsed_ms(record.started_at, now)
        if interrupted:
            await self.executions.save_many(interrupted)
            log.warning("marked %d executions left by a previous process INTERRUPTED", len(interrupted))
        self.stats.rebuild(records)
        await self.executor.start()
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
        for batch in list(self.batches):
            await batch.wait()
        await self.executions.flush()
        await self.executor.close()
        await self.subprocesses.close()

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started_at

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
        if active and not force:
            raise FailedPrecondition(
                f"task {task.name!r} has {len(active)} pending or running executions; delete with force"
            )
        for live in active:
            live.request_cancel("task deleted")
        for live in active:
            await self._ended(live)
        cleaned: list[StoredExecution] = []
        if cleanup:
            cleaned = await self.executions.delete_for_task(task_id)
            for record in cleaned:
                self.stats.deleted(record)
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
        self.scheduler.admit(lambda: self._mean_run_ms(task.name, inv.function_name))
        record = _new_record(task, inv, execution_id)
        live = LiveExecution(record, stream=inv.stream, log_limit_bytes=self.config.log_limit_bytes)
        self.output.attach(live)
        live.stops_work = self._runner_for(task.artifact.artifact_type).stops_work
        live.waited = inv.stream  # its reader waits for the end (a SYNC caller says so in wait())
        self.live[execution_id] = live
        job = job_for_call(self._job(task, inv), execution_id, args, kwargs)
        timeout_ms = inv.timeout_ms or self.config.default_timeout_ms
        live.task = asyncio.create_task(self._run(live, task, job, timeout_ms, inv.max_retries))
        # Queued after the run's first step: when a slot is free, PENDING and RUNNING go to the store in
        # one write, made while the worker runs. Nothing reports either before it is stored.
        live.created = live.stored = self.executions.create(record)
        self.stats.created(record)
        return live

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
        job = replace(self._job(task, inv), announce_start=True)  # its calls wait in chunks
        if task.artifact.artifact_type == "pickle":
            loaded = await self._load_pickle(task)
            if isinstance(loaded, str):
                raise FailedPrecondition(loaded)
            job = replace(job, artifact=replace(job.artifact, payload=loaded[0], cache_key=loaded[1]))
        batch = Batch(
            self,
            lambda: _new_record(task, inv, new_id()),
            job,
            self._runner_for(task.artifact.artifact_type),
            encoded,
            timeout_ms=inv.timeout_ms or self.config.default_timeout_ms,
            max_retries=inv.max_retries,
            on_result=on_result,
        )
        batch.start()
        self.batches.add(batch)
        return batch

    def end_batch(self, batch: Batch) -> None:
        """The batch's caller is done with it (all reported, or gone: then the rest is cancelled)."""
        batch.drop("the caller dropped the batch")
        self.batches.discard(batch)

    def _job(self, task: StoredTask, inv: Invocation) -> Job:
        """What a worker needs to run one of ``inv``'s calls, but for its id and arguments."""
        return Job(
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
            exact_results=PYTHON_ACCEPT in inv.headers.get("accept", ""),
            allow_pickle=self.config.allows_pickle,
            log_limit_bytes=self.config.log_limit_bytes,
            fresh_instance=inv.force_new_instance,
            memory_limit_mb=memory_limit_mb(task.artifact),
        )

    async def wait(self, live: LiveExecution) -> StoredExecution:
        """The terminal record, once stored (a failed store write raises its :class:`StoreError`)."""
        await self._ended(live)
        if live.store_error is not None:
            raise live.store_error
        return live.record

    async def _ended(self, live: LiveExecution) -> None:
        """Wait for the execution's end to be stored, and have it stored at once rather than lazily."""
        live.waited = True
        if live.record.status in lc.TERMINAL:  # already queued, perhaps held back
            self.executions.hurry()
        await live.done.wait()

    async def accepted(self, live: LiveExecution) -> StoredExecution:
        """The new record as admitted (PENDING), once stored: what an ASYNC invocation reports. Call it
        right after :meth:`submit`; by the time it returns the run may have moved on."""
        admitted = copy.copy(live.record)
        self.executions.hurry()
        await live.created
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
            return CancelResult(
                False, record.status, f"execution already ended: {lc.status_name(record.status)}"
            )
        was_running = live.record.status == lc.RUNNING
        live.request_cancel(reason)
        await self._ended(live)
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
        await self.executions.flush()  # report only what is stored
        return live.record

    def current(self, records: list[StoredExecution]) -> list[StoredExecution]:
        """Stored records with the live ones swapped in (they know their worker before the store does)."""
        return [live.record if (live := self.live.get(r.execution_id)) else r for r in records]

    def current_infos(self, rows: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """:meth:`current` for ``(execution_id, serialized ExecutionInfo)`` rows."""
        live = self.live
        return [
            info if (found := live.get(execution_id)) is None else found.record.info().SerializeToString()
            for execution_id, info in rows
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
        return self.subprocesses if artifact_type == "process" else self.executor

    async def _run(
        self, live: LiveExecution, task: StoredTask, job: Job, timeout_ms: int, max_retries: int
    ) -> None:
        try:
            try:
                await self.scheduler.acquire()
            except asyncio.CancelledError:
                await self._finish(live, lc.CANCELLED, lc.CANCELLED_CODE, live.cancel_reason or "cancelled")
                return
            try:
                await self._attempts(live, task, job, timeout_ms, max_retries)
            finally:
                self.scheduler.release()
        except Exception as exc:  # a bug or a store fault: never leave a waiter hanging
            log.exception("execution %s failed inside the engine", live.execution_id)
            if not live.done.is_set():
                live.record.status = lc.FAILED
                live.record.error_code = "INTERNAL"
                live.record.error_message = f"{type(exc).__name__}: {exc}"
                self.live.pop(live.execution_id, None)
                live.finish()

    async def _attempts(
        self, live: LiveExecution, task: StoredTask, job: Job, timeout_ms: int, max_retries: int
    ) -> None:
        record = live.record
        runner = self._runner_for(task.artifact.artifact_type)
        loop = asyncio.get_running_loop()
        first_start = time.time()
        record.queue_time_ms = (first_start - record.created_at) * 1000
        record.started_at = first_start
        attempt = 0
        while True:
            attempt += 1
            record.attempt = attempt
            self._transition(live, lc.RUNNING)
            if attempt == 1 and task.artifact.artifact_type == "pickle":
                loaded = await self._load_pickle(task)
                if isinstance(loaded, str):
                    await self._finish(live, lc.FAILED, ARTIFACT_LOAD_FAILED, loaded)
                    return
                job = replace(job, artifact=replace(job.artifact, payload=loaded[0], cache_key=loaded[1]))
            # A timer, not asyncio.wait_for: that runs the attempt in a task of its own, two more turns
            # of the loop on every call.
            deadline = loop.call_later(timeout_ms / 1000, live.time_out) if timeout_ms > 0 else None
            try:
                outcome = await runner.run(job, live)
            except asyncio.CancelledError:
                if live.timed_out:
                    await self._finish(live, lc.TIMEOUT, lc.TIMEOUT_CODE, f"timed out after {timeout_ms} ms")
                else:
                    await self._finish(
                        live, lc.CANCELLED, lc.CANCELLED_CODE, live.cancel_reason or "cancelled"
                    )
                return
            finally:
                if deadline is not None:
                    deadline.cancel()
            if outcome.worker_lost and attempt <= max_retries:
                live.log(f"[attempt {attempt} lost: {outcome.error_message}; retrying]\n")
                continue
            await self._finish_outcome(live, outcome)
            return

    async def _load_pickle(self, task: StoredTask) -> tuple[bytes, str] | str:
        """The pickled callable's bytes and cache key, or why they cannot be used."""
        key = task.artifact.location[len(OBJECT_SCHEME) :]
        obj = await self.objects.get(key)
        if obj is None:
            return f"artifact object {key!r} not found"
        digest = "sha256:" + hashlib.sha256(obj.value).hexdigest()
        if task.artifact.checksum and task.artifact.checksum != digest:
            return f"checksum mismatch for object {key!r}: expected {task.artifact.checksum}, got {digest}"
        return obj.value, digest

    def _transition(self, live: LiveExecution, status: int, logs: str | None = None) -> None:
        """Move to ``status``: check the edge, queue the record (and ``logs``) for the store, update the
        figures. ``live.stored`` says when it is stored."""
        record = live.record
        old = record.status
        lc.check_transition(old, status)
        record.status = status
        # An end someone waits for is written at once; one nobody waits for (an ASYNC invocation's) may
        # be held back like any state, as whoever asks for it later flushes first.
        live.stored = self.executions.save(record, logs=logs, urgent=live.waited and status in lc.TERMINAL)
        if old != status:
            self.stats.transitioned(old, record)

    async def _finish_outcome(self, live: LiveExecution, outcome: Outcome) -> None:
        self._end_outcome(live, outcome)
        await self._settle(live)

    def _end_outcome(self, live: LiveExecution, outcome: Outcome) -> None:
        record = live.record
        record.result = outcome.result
        record.memory_used_bytes = outcome.memory_used_bytes
        record.cpu_time_ms = outcome.cpu_time_ms
        if outcome.instance_id:
            record.instance_id = outcome.instance_id
        status = lc.COMPLETED if outcome.status == COMPLETED else lc.FAILED
        self._end(live, status, outcome.error_code, outcome.error_message)

    async def _finish(self, live: LiveExecution, status: int, error_code: str, message: str) -> None:
        self._end(live, status, error_code, message)
        await self._settle(live)

    def _end(self, live: LiveExecution, status: int, error_code: str, message: str) -> None:
        """Queue the terminal record; :meth:`_settle` reports it once stored."""
        record = live.record
        record.error_code = error_code
        record.error_message = message
        record.completed_at = time.time()
        record.execution_time_ms = _elapsed_ms(record.started_at, record.completed_at)
        self._transition(live, status, logs=live.logs.text())

    async def _settle(self, live: LiveExecution) -> None:
        try:
            await live.created  # (its task index entry)
            await live.stored  # reported to nobody until stored
        except Exception as exc:
            self._drop(live, exc)
            return
        self._release(live)

    def _release(self, live: LiveExecution) -> None:
        """The terminal record is stored: wake the execution's waiters."""
        self.live.pop(live.execution_id, None)
        live.finish()

    def _drop(self, live: LiveExecution, exc: BaseException) -> None:
        """End an execution whose record could not be stored: its waiters get the store's error."""
        live.store_error = exc
        self.live.pop(live.execution_id, None)
        live.finish()


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


def _elapsed_ms(started: float | None, ended: float) -> int:
    return max(0, round((ended - started) * 1000)) if started else 0


def _new_record(task: StoredTask, inv: Invocation, execution_id: str) -> StoredExecution:
    """The PENDING record of one call of ``inv``."""
    return StoredExecution(
        execution_id=execution_id,
        task_id=task.task_id,
        task_name=task.name,
        function_name=inv.function_name,
        mode=inv.mode,
        status=lc.PENDING,
        created_at=time.time(),
        metadata=_execution_metadata(inv),
    )


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
