"""Leases on a shared store: each server promises to be alive, and the survivors end a dead one's work.

Every server renews a lease of :data:`TTL_S` seconds every :data:`RENEW_S` (the database's clock decides
expiry, so the servers' clocks need not agree). Each execution row names the server that wrote it last
(its owner). An execution PENDING or RUNNING whose owner holds no live lease was cut off with its server:
any survivor that finds it runs it again where its retries allow (its arguments were stored for that, see
:mod:`.handover`) or else marks it FAILED with ``INTERRUPTED``; either by compare-and-set on the row's
version, so two survivors, or a survivor and a late write, never both win. Its waiters on every server
are woken by the terminal write's notice.

A server that could not renew in time (the database was away, or the process stalled, longer than the
TTL) may find its running work already ended or retried by another. That decision stands: a server writes
an execution's row only while the row still names it as the owner (the survivor's compare-and-set made
the survivor the owner), so the late end is refused and logged, and the waiters on the late server are
answered from the stored record. The TTL is generous compared with the renewal period so that this stays
rare.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from ..store import StoreError
from ..store.records import StoredExecution
from ..store.shared import Orphan, SharedKvStore
from . import lifecycle as lc

log = logging.getLogger(__name__)

#: How long a lease lasts without renewal.
TTL_S = 10.0
#: How often the lease is renewed and dead servers' work looked for.
RENEW_S = 2.0
_ORPHANS_PER_ROUND = 500


class LeaseKeeper:
    """Renews this server's lease and ends what dead servers left unfinished, until :meth:`close`."""

    def __init__(
        self,
        store: SharedKvStore,
        *,
        ttl_s: float = TTL_S,
        renew_s: float = RENEW_S,
        adopt: Callable[[Orphan, StoredExecution], Awaitable[bool]] | None = None,
    ) -> None:
        """``adopt(orphan, record)``: run an orphan again here where its retries allow; whether it was
        taken care of (run here, or claimed by another server first)."""
        self._store = store
        self._adopt = adopt
        self._ttl_s = ttl_s
        self._renew_s = renew_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the lease and end the orphans found now, then keep doing so in the background."""
        await self._store.renew_lease(self._ttl_s)
        await self.reap()
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def close(self, *, release: bool) -> None:
        """Stop renewing; ``release``: give the lease up (nothing of ours is left running)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if release:
            try:
                await self._store.release_lease()
            except StoreError as exc:
                log.warning("could not release the lease (it expires on its own): %s", exc)

    async def reap(self) -> int:
        """End the unfinished executions of servers without a live lease; return how many this call ended."""
        ended = 0
        while True:
            orphans = await self._store.orphans(_ORPHANS_PER_ROUND)
            won = 0
            for orphan in orphans:
                record = StoredExecution.decode(orphan.value)
                if self._adopt is not None and await self._adopt(orphan, record):
                    won += 1
                    continue
                interrupt(record, "its server stopped renewing its lease (it died or lost the database)")
                if await self._store.put_if_version(orphan.key, record.encode(), orphan.version):
                    won += 1
            ended += won
            # Fewer than a full round, or every one taken by someone else meanwhile: nothing more now.
            if len(orphans) < _ORPHANS_PER_ROUND or won == 0:
                break
        if ended:
            log.warning("marked %d executions of dead servers INTERRUPTED", ended)
        return ended

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._renew_s)
            try:
                await self._store.renew_lease(self._ttl_s)
                await self.reap()
            except StoreError as exc:  # the database is away: the store reconnects; try again next round
                log.warning("lease renewal failed: %s", exc)


def interrupt(record: StoredExecution, why: str) -> None:
    """Make an unfinished record FAILED with ``INTERRUPTED``."""
    now = time.time()
    record.status = lc.FAILED
    record.error_code = lc.INTERRUPTED
    record.error_message = why
    record.completed_at = now
    record.execution_time_ms = max(0, round((now - record.started_at) * 1000)) if record.started_at else 0
