"""One ``WatchExecutions`` stream: the ids its client waits for in, each one's end out as it happens.

Each id sent is subscribed to the Ledger's completion hub first and read after (from the live map, else
the store), so an end that happens in between is never missed; it is answered once ``watching`` or
``unknown`` and once ``ended`` (see docs/protocol.md). Ends that arrive together go out in one message; a
heartbeat goes out after ``heartbeat_s`` of silence, so a client can tell a quiet stream from a dead one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire.errors import Unavailable

from . import convert
from .engine import lifecycle as lc
from .engine.core import Engine
from .store.records import StoredExecution

HEARTBEAT_S = 5.0
#: Ends sent in one message at most (bytes of results, beside the message limit of 4 MiB by default).
MESSAGE_BYTES = 2 << 20


class WatchStream:
    """The state of one stream: what its client awaits, and what is ready to go out."""

    def __init__(self, engine: Engine, heartbeat_s: float = HEARTBEAT_S) -> None:
        self._engine = engine
        self._hub = engine.ledger.completions
        self._heartbeat_s = heartbeat_s
        self._awaited: set[str] = set()
        self._ended: list[StoredExecution] = []
        self._watching: list[str] = []
        self._unknown: list[str] = []
        self._failure: BaseException | None = None  # a store write that failed
        self._broken: Exception | None = None  # what ended the reading of requests
        self._wake = asyncio.Event()
        self._beat_due = False
        self._closed_by_client = False

    async def read(self, requests: AsyncIterator[fpb.WatchExecutionsRequest]) -> None:
        """Take every id the client sends, until it stops sending (the stream goes on answering)."""
        try:
            async for request in requests:
                await self.add(request.execution_ids)
        except Exception as exc:  # a malformed request (answered INVALID_ARGUMENT), a store fault
            self._broken = exc
        self._closed_by_client = True  # it sends no more: the stream ends once all it sent has ended
        self._wake.set()

    async def add(self, execution_ids: Iterable[str]) -> None:
        fresh = [i for i in dict.fromkeys(execution_ids) if i and i not in self._awaited]
        for execution_id in fresh:  # subscribe first ...
            self._awaited.add(execution_id)
            self._hub.subscribe(execution_id, self)
        live_map = self._engine.live
        for execution_id in fresh:  # ... then read
            live = live_map.get(execution_id)
            if live is not None:
                self._engine.ledger.watched(live)
                self._watching.append(execution_id)
                continue
            record = await self._engine.executions.get(execution_id)
            if execution_id not in self._awaited:  # its end was published meanwhile
                continue
            if record is None:
                self._forget(execution_id)
                self._unknown.append(execution_id)
            elif record.status in lc.TERMINAL:
                self._forget(execution_id)
                self._ended.append(record)
            else:  # stored unfinished and not live: only until recovery marks it; its end is published
                self._watching.append(execution_id)
        self._wake.set()

    def ended(self, record: StoredExecution, store_error: BaseException | None) -> None:
        """The hub's call: ``record`` is stored ended (or its store write failed)."""
        if store_error is not None:
            self._failure = store_error
        elif record.execution_id in self._awaited:
            self._awaited.discard(record.execution_id)
            self._ended.append(record)
        self._wake.set()

    async def messages(self) -> AsyncIterator[fpb.WatchExecutionsResponse]:
        """What goes out: answers as soon as they are ready, a heartbeat after a silence."""
        loop = asyncio.get_running_loop()
        while True:
            beat = loop.call_later(self._heartbeat_s, self._beat)
            await self._wake.wait()
            beat.cancel()
            self._wake.clear()
            if self._broken is not None:
                raise self._broken
            if self._failure is not None:
                raise Unavailable(f"the store did not answer: {self._failure}")
            if not (self._ended or self._watching or self._unknown):
                if self._closed_by_client and not self._awaited:
                    return
                if self._beat_due:
                    self._beat_due = False
                    yield fpb.WatchExecutionsResponse()  # a heartbeat
                continue
            while self._ended or self._watching or self._unknown:
                yield self._next_message()
            if self._closed_by_client and not self._awaited:
                return

    def _beat(self) -> None:
        self._beat_due = True
        self._wake.set()

    def close(self) -> None:
        for execution_id in self._awaited:
            self._hub.unsubscribe(execution_id, self)
        self._awaited.clear()

    def _next_message(self) -> fpb.WatchExecutionsResponse:
        message = fpb.WatchExecutionsResponse(watching=self._watching, unknown_ids=self._unknown)
        self._watching, self._unknown = [], []
        size = 0
        taken = 0
        for record in self._ended:
            if taken and size + len(record.result or b"") > MESSAGE_BYTES:
                break
            size += len(record.result or b"") + 256
            taken += 1
        records, self._ended = self._ended[:taken], self._ended[taken:]
        message.ended.extend(
            fpb.WatchedExecution(execution_id=r.execution_id, result=convert.execution_result(r))
            for r in records
        )
        return message

    def _forget(self, execution_id: str) -> None:
        self._awaited.discard(execution_id)
        self._hub.unsubscribe(execution_id, self)
