"""Group commit: writes made in one turn of the event loop reach the store in one atomic batch.

Under load many executions change state in the same turn; one commit for all of them costs little more
than one commit for one (P8, docs/performance.md). Each write returns a future that resolves once its
batch is stored: the engine awaits it before anything reports the change, so nothing unstored is ever
reported. A later write to a key replaces an earlier one still waiting, so a state nobody could observe
costs no row of its own. A write nobody waits for (a new record, a record turning RUNNING) may be held
back up to :data:`LAZY_S` for company: a quick call's states then cost one commit, not three. Waiting for
a write (``flush``, or an urgent ``put``) sends the batch at once. Records encode themselves when their
batch is written, so one changed several times meanwhile is encoded once. Batches are applied in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from .base import KvStore


class Encodable(Protocol):
    def encode(self) -> bytes: ...


log = logging.getLogger(__name__)

#: How long a write nobody waits for may be held back.
LAZY_S = 0.01


class GroupCommit:
    def __init__(self, store: KvStore) -> None:
        self._store = store
        self._puts: dict[str, bytes | Encodable] = {}
        self._stored: asyncio.Future[None] | None = None
        #: The batch being written by a store whose batch awaits (none for SQLite and memory).
        self._writing: asyncio.Task[None] | None = None
        #: The next write, when one is scheduled; a TimerHandle while it is held back.
        self._due: asyncio.Handle | None = None

    def put(self, items: Mapping[str, bytes | Encodable], *, urgent: bool = True) -> asyncio.Future[None]:
        """Queue ``items`` for the next batch; the future resolves (or fails) with that batch.

        ``urgent``: someone will wait for it, so write it this turn (else within :data:`LAZY_S`). A record
        given as an :class:`Encodable` is encoded when the batch is written: it must not change in
        between except through another ``put``."""
        self._puts.update(items)
        stored = self._stored
        if stored is None:
            stored = self._stored = asyncio.get_running_loop().create_future()
        self._schedule(urgent)
        return stored

    def hurry(self) -> None:
        """Write what is queued now, held back or not (someone is about to wait for it)."""
        if self._stored is not None:
            self._schedule(urgent=True)

    async def flush(self) -> None:
        """Return once every write queued so far is stored."""
        while (stored := self._stored) is not None or self._writing is not None:
            if stored is not None:
                self._schedule(urgent=True)
                await asyncio.wait((stored,))
            if (writing := self._writing) is not None:
                await asyncio.wait((writing,))

    def _schedule(self, urgent: bool) -> None:
        if self._writing is not None:  # it schedules the next write when it ends
            return
        due = self._due
        if due is not None and (not urgent or not isinstance(due, asyncio.TimerHandle)):
            return
        if due is not None:
            due.cancel()
            self._due = None
        loop = asyncio.get_running_loop()
        if not urgent:
            self._due = loop.call_later(LAZY_S, self._write)
        elif self._store.synchronous_batch:
            # call_soon runs after the callbacks already due this turn, so that their writes join the batch.
            self._due = loop.call_soon(self._write)
        else:
            # A task's first step is scheduled the same way, so the batch it takes then is the same;
            # starting it here saves the turn a callback that started it would cost.
            self._writing = loop.create_task(self._write_async())

    def _take(self) -> tuple[dict[str, bytes], asyncio.Future[None]] | None:
        """The queued writes, encoded, and their future; None when there are none (or they failed to
        encode: the future has the error)."""
        pending, stored = self._puts, self._stored
        self._puts, self._stored = {}, None
        if stored is None:
            return None
        try:
            puts = {key: v if isinstance(v, bytes) else v.encode() for key, v in pending.items()}
        except Exception as exc:
            _fail(stored, pending, exc)
            return None
        return puts, stored

    def _write(self) -> None:
        self._due = None
        if not self._store.synchronous_batch:
            self._writing = asyncio.get_running_loop().create_task(self._write_async())
            return
        taken = self._take()
        if taken is None:
            return
        puts, stored = taken
        try:
            self._store.batch_now(puts)
        except Exception as exc:
            _fail(stored, puts, exc)
        else:
            stored.set_result(None)

    async def _write_async(self) -> None:
        taken = self._take()
        try:
            if taken is None:
                return
            puts, stored = taken
            try:
                await self._store.batch(puts)
            except Exception as exc:
                _fail(stored, puts, exc)
            else:
                stored.set_result(None)
        finally:
            self._writing = None
            if self._stored is not None:  # written meanwhile
                self._schedule(urgent=True)


def _fail(stored: asyncio.Future[None], puts: Mapping[str, object], exc: Exception) -> None:
    log.error("a batch of %d execution writes failed: %s", len(puts), exc)
    stored.set_exception(exc)
    # Logged once, here: a caller that never awaits it must not have it logged again (marked retrieved
    # now rather than by a done callback, which would cost every batch a turn of the loop).
    stored.exception()
