"""The in-memory side of an execution that has not ended: its waiters, stream, logs and cancel switch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..store.records import StoredExecution
from .chunks import ChunkBuffer
from .logs import LogBuffer


class LiveExecution:
    """Owned by the :class:`.ledger.Ledger` from ``admit`` until ``settle`` (its end is stored)."""

    def __init__(self, record: StoredExecution, *, stream: bool, log_limit_bytes: int) -> None:
        self.record = record
        self.done = asyncio.Event()
        self.chunks: ChunkBuffer | None = ChunkBuffer() if stream else None
        self.logs = LogBuffer(log_limit_bytes)
        #: What runs it: its own task, or else a batch that stops it through ``on_cancel``.
        self.task: asyncio.Task[None] | None = None
        self.on_cancel: Callable[[], None] | None = None
        self.cancel_reason: str | None = None
        self.timed_out = False
        #: Someone waits for its end (a SYNC caller, a stream, a batch, a cancel): store the end at once.
        self.waited = False
        #: Whether cancelling really stops the work (False: a thread that can only be abandoned).
        self.stops_work = True
        #: Resolves once the record's latest state is stored (see ``store.group_commit``).
        self.stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stored.set_result(None)
        #: Resolves once the first record (and its task index entry) is stored.
        self.created = self.stored
        #: Why the record could not be stored, if it could not.
        self.store_error: BaseException | None = None
        #: On a shared store: another server took it over (this server's lease lapsed) and its record
        #: stands; writes from here were refused, and waiters here read the stored record instead.
        self.taken_over = False
        #: Where printed text goes as it is printed, besides the logs (see ``engine.output``).
        self.output: Callable[[str], None] | None = None
        #: Pieces of text handed to ``output``.
        self.forwarded = 0

    @property
    def execution_id(self) -> str:
        return self.record.execution_id

    def request_cancel(self, reason: str) -> None:
        """Stop the run (once); the engine records CANCELLED and then sets ``done``."""
        if self.cancel_reason is not None or self.timed_out or self.done.is_set():
            return
        if self.task is not None:
            self.cancel_reason = reason or "cancelled"
            self.task.cancel()
        elif self.on_cancel is not None:
            self.cancel_reason = reason or "cancelled"
            self.on_cancel()

    def time_out(self) -> None:
        """The attempt's deadline passed: stop the run (once); the engine records TIMEOUT."""
        if (
            self.cancel_reason is None
            and not self.timed_out
            and self.task is not None
            and not self.done.is_set()
        ):
            self.timed_out = True
            self.task.cancel()

    def finish(self) -> None:
        self.done.set()
        if self.chunks is not None:
            self.chunks.close()
        # What points back at the execution goes (its task's coroutine, a batch's cancel switch, the
        # output forwarder): reference counting frees it now, not the cycle collector some time later.
        self.task = None
        self.on_cancel = None
        self.output = None

    # Sink (executors.base.Sink): called on the loop while the run is in a worker.
    def started(self, instance_id: str) -> None:
        self.record.instance_id = instance_id

    def chunk(self, data: bytes) -> bool:
        return self.chunks.put(data) if self.chunks is not None else True

    async def writable(self) -> None:
        if self.chunks is not None:
            await self.chunks.room()

    def log(self, text: str) -> None:
        kept = self.logs.append(text)
        if kept and self.output is not None:
            self.output(kept)
