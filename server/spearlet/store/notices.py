"""Notices between spearlets that share a store: an execution reached a terminal state, a task changed.

A shared store (``postgresql://``) publishes here what *other* servers wrote: it sends a notice in the
transaction of each terminal write (PostgreSQL ``NOTIFY``, delivered only after COMMIT and never for a
rolled-back transaction) and feeds the ones it hears from the database into :class:`Notices`. This
server's own ends are the Ledger's to report (``settle``); they are not echoed back.

Notices may be lost: a dropped connection hears nothing until it is back, and the database keeps no
backlog. So after every reconnect of the listening connection a :data:`RESYNC` notice goes out: whoever
waits for something must read the store again rather than rely on a notice it may have missed. The same
rule covers the start of a wait: subscribe first, then read, then wait for a notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: ``Notice.kind``: the execution ``key`` reached a terminal state (its record is stored).
ENDED = "ended"
#: ``Notice.kind``: the task ``key`` (a task id) was registered, updated or deleted.
TASK = "task"
#: ``Notice.kind``: notices may have been missed (the listener reconnected); read the store again.
RESYNC = "resync"
#: ``Notice.kind``: a client asked another server to cancel the execution ``key``, which runs here.
CANCEL = "cancel"
#: ``Notice.kind`` (from this server's own store, never sent between servers): a write of the execution
#: ``key`` was refused, as another server took it over (ended or retried it) when this server's lease
#: lapsed; the stored record is that server's.
TAKEN_OVER = "taken-over"


@dataclass(frozen=True)
class Notice:
    kind: str
    key: str = ""


Subscriber = Callable[[Notice], None]


class Notices:
    """Callbacks run on the event loop for every notice, in the order the notices arrived."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback`` for each notice from now on; returns the function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def publish(self, notice: Notice) -> None:
        for callback in list(self._subscribers):
            try:
                callback(notice)
            except Exception:  # one broken subscriber must not starve the others
                log.exception("a notice subscriber failed on %s", notice)

    def waiter(self, key: str) -> NoticeWaiter:
        """An event set by an :data:`ENDED` notice for ``key`` or any :data:`RESYNC` (see the module doc)."""
        return NoticeWaiter(self, key)


class NoticeWaiter:
    """``with notices.waiter(id) as w: <read>; await w.wait()``; the subscription lasts the ``with``."""

    def __init__(self, notices: Notices, key: str) -> None:
        self.event = asyncio.Event()
        self._key = key
        self._unsubscribe = notices.subscribe(self._on_notice)

    def _on_notice(self, notice: Notice) -> None:
        if notice.kind == RESYNC or (notice.kind == ENDED and notice.key == self._key):
            self.event.set()

    async def wait(self, timeout: float | None = None) -> None:
        """Until a notice that concerns the key (or a resync) arrives, or ``timeout`` seconds pass; then
        armed again."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()

    def __enter__(self) -> NoticeWaiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._unsubscribe()
