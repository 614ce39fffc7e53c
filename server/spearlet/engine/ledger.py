"""The one owner of an execution's life: the live map, the records on their way to the store, the figures.

Single invocations (``Engine``) and batches (:mod:`.batch`) drive every execution through the same four
steps, and nothing else changes an execution's state:

``admit``  the PENDING record is queued for the store and the execution joins the live map;
``start``  an attempt begins: the record turns RUNNING (again, after a retry) with the next attempt number;
``end``    the terminal record (and the captured output) is queued for the store;
``settle`` once the terminal record is stored, the execution leaves the live map and its waiters wake
           (with the store's error if it could not be stored).

Nothing reports a state before it is stored; see :mod:`..store.group_commit` for how writes are grouped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from ..stats import StatsTracker
from ..store import StoreError
from ..store.records import StoredExecution
from . import lifecycle as lc
from .completions import CompletionHub
from .executions import ExecutionStore
from .executors.base import COMPLETED, Outcome
from .leases import interrupt
from .live import LiveExecution
from .output import OutputHub

log = logging.getLogger(__name__)


class Ledger:
    def __init__(
        self,
        executions: ExecutionStore,
        stats: StatsTracker,
        log_limit_bytes: int,
        output: OutputHub | None = None,
    ) -> None:
        self.executions = executions
        self.stats = stats
        self.log_limit_bytes = log_limit_bytes
        #: Where admitted executions forward what they print (to the client that launched them).
        self.output = output if output is not None else OutputHub()
        #: Executions admitted whose terminal record is not stored yet, by id.
        self.live: dict[str, LiveExecution] = {}
        #: Told of every execution that settles (WatchExecutions streams subscribe there).
        self.completions = CompletionHub()

    # -- the four steps ---------------------------------------------------------------------------------

    def admit(
        self, record: StoredExecution, *, stream: bool, stops_work: bool, waited: bool
    ) -> LiveExecution:
        """Take a new PENDING record: queue it (lazily) for the store and count it."""
        live = LiveExecution(record, stream=stream, log_limit_bytes=self.log_limit_bytes)
        self.output.attach(live)
        live.stops_work = stops_work
        live.waited = waited
        self.live[record.execution_id] = live
        live.created = live.stored = self.executions.create(record)
        self.stats.created(record)
        return live

    def adopt(self, record: StoredExecution, *, stops_work: bool) -> LiveExecution:
        """Take over a stored execution a dead server left unfinished (claimed in the store by this
        server), to run it again from :meth:`start`."""
        live = LiveExecution(record, stream=False, log_limit_bytes=self.log_limit_bytes)
        live.stops_work = stops_work
        self.live[record.execution_id] = live
        self.stats.created(record)
        return live

    def start(self, live: LiveExecution, instance_id: str = "") -> None:
        """An attempt begins (the first, or a retry after a lost worker): RUNNING with the next number."""
        record = live.record
        if instance_id:
            record.instance_id = instance_id
        if record.started_at is None:
            record.started_at = time.time()
            record.queue_time_ms = (record.started_at - record.created_at) * 1000
        record.attempt += 1
        self._transition(live, lc.RUNNING)

    def end(
        self,
        live: LiveExecution,
        status: int,
        error_code: str = "",
        message: str = "",
        outcome: Outcome | None = None,
    ) -> None:
        """Queue the terminal record: ``status`` with its error, or what the worker's ``outcome`` says."""
        record = live.record
        if outcome is not None:
            record.result = outcome.result
            record.memory_used_bytes = outcome.memory_used_bytes
            record.cpu_time_ms = outcome.cpu_time_ms
            if outcome.instance_id:
                record.instance_id = outcome.instance_id
            record.remote_type = outcome.remote_type
            record.remote_message = outcome.remote_message
            record.remote_traceback = outcome.remote_traceback
            status = lc.COMPLETED if outcome.status == COMPLETED else lc.FAILED
            error_code, message = outcome.error_code, outcome.error_message
        record.error_code = error_code
        record.error_message = message
        record.completed_at = time.time()
        record.execution_time_ms = elapsed_ms(record.started_at, record.completed_at)
        self._transition(live, status, logs=live.logs.text())

    async def settle(self, live: LiveExecution) -> None:
        """Wait for the terminal record to be stored, then wake the execution's waiters."""
        try:
            await live.stored  # reported to nobody until stored
        except Exception as exc:
            self._release(live, exc)
            return
        # The first write (with the task index entry) went before this one, or with it when it was still
        # held (group commit keeps them one unit): only its error is left to look at.
        self._release(live, _error(live.created))

    def settle_later(self, live: LiveExecution, then: Callable[[BaseException | None], None]) -> None:
        """:meth:`settle` without a task of its own (a batch settles many): ``then`` gets the store's
        error, or None, after the waiters woke."""

        def stored(future: asyncio.Future[None]) -> None:
            error = _error(live.created) or _error(future)  # (the first write holds the task index entry)
            if error is None and live.taken_over:
                error = StoreError(
                    f"execution {live.execution_id}: its end was not stored, as another server took it "
                    "over when this server's lease lapsed"
                )
            self._release(live, error)
            then(error)

        live.stored.add_done_callback(stored)

    async def settled(self, live: LiveExecution) -> None:
        """Return once the execution has settled; have its end stored at once rather than lazily."""
        live.waited = True
        if live.record.status in lc.TERMINAL:  # already queued, perhaps held back
            self.executions.hurry()
        await live.done.wait()

    def watched(self, live: LiveExecution) -> None:
        """A client awaits this execution's end through a watch: store its end at once, like a SYNC
        caller's, so that the notice goes out as soon as it ends."""
        live.waited = True
        if live.record.status in lc.TERMINAL:
            self.executions.hurry()

    # -- before and after ------------------------------------------------------------------------------

    async def recover(self) -> None:
        """At start: mark executions a previous process left unfinished INTERRUPTED; rebuild the figures."""
        records = [r async for r in self.executions.iterate()]
        interrupted = [r for r in records if r.status in lc.ACTIVE]
        for record in interrupted:
            interrupt(record, "interrupted by a server restart")
        if interrupted:
            await self.executions.save_many(interrupted)
            log.warning("marked %d executions left by a previous process INTERRUPTED", len(interrupted))
        self.stats.rebuild(records)

    def forget(self, records: list[StoredExecution]) -> None:
        """Deleted records leave the figures."""
        for record in records:
            self.stats.deleted(record)

    # -- the rules both drivers share -------------------------------------------------------------------

    def retries(self, live: LiveExecution, outcome: Outcome, max_retries: int) -> bool:
        """Whether the attempt that gave ``outcome`` is run again: only a lost worker, while retries last."""
        if outcome.worker_lost and live.record.attempt <= max_retries:
            live.log(f"[attempt {live.record.attempt} lost: {outcome.error_message}; retrying]\n")
            return True
        return False

    def abandon(self, live: LiveExecution, exc: BaseException) -> None:
        """A bug or a store fault inside the engine: fail the execution in memory so no waiter hangs."""
        if live.done.is_set():
            return
        live.record.status = lc.FAILED
        live.record.error_code = "INTERNAL"
        live.record.error_message = f"{type(exc).__name__}: {exc}"
        self.live.pop(live.execution_id, None)
        live.finish()
        self.completions.publish(live.record, exc)

    # -- internals --------------------------------------------------------------------------------------

    def _transition(self, live: LiveExecution, status: int, logs: str | None = None) -> None:
        """Check the edge, queue the record (and ``logs``) for the store, update the figures.
        ``live.stored`` says when it is stored."""
        record = live.record
        old = record.status
        lc.check_transition(old, status)
        record.status = status
        # An end someone waits for is written at once; one nobody waits for (an ASYNC invocation's) may
        # be held back like any state, as whoever asks for it later flushes first.
        live.stored = self.executions.save(record, logs=logs, urgent=live.waited and status in lc.TERMINAL)
        if old != status:
            self.stats.transitioned(old, record)

    def _release(self, live: LiveExecution, error: BaseException | None) -> None:
        """The terminal record is stored (or could not be): the execution leaves; its waiters wake.

        One another server took over was not stored from here: its watchers are told of the stored
        record by the engine (``Engine.wait`` reads it too)."""
        live.store_error = error
        self.live.pop(live.execution_id, None)
        live.finish()
        if not live.taken_over:
            self.completions.publish(live.record, error)


def elapsed_ms(started: float | None, ended: float) -> int:
    return max(0, round((ended - started) * 1000)) if started else 0


def _error(future: asyncio.Future[None]) -> BaseException | None:
    if not future.done():
        return None
    return asyncio.CancelledError() if future.cancelled() else future.exception()
