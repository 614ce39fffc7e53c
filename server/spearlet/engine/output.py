"""Output forwarding: what a running execution prints, sent as it is printed to the client that launched
it, over that client's ``FollowOutput`` stream (one stream per client session, multiplexing its
executions).

An invocation names its session in ``invocation_metadata[SESSION_KEY]``. Text goes only to an open
stream: with none, nothing is kept here (the execution's logs have it anyway). Each session's queue is
bounded by what its executions may log (``log_limit_bytes`` each), like their logs are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from spear_sdk.wire import function_pb2 as fpb

from .live import LiveExecution

SESSION_KEY = "spear.output-session"
#: ``result.metrics`` of a SYNC invocation that sent text: how many pieces, to wait for before the result.
SENT_METRIC = "spear.output-lines"
#: Texts sent in one stream message at most.
_GROUP = 256


class OutputHub:
    def __init__(self) -> None:
        self._queues: dict[str, asyncio.Queue[fpb.OutputText | None]] = {}

    def attach(self, live: LiveExecution) -> None:
        """Forward ``live``'s output if its invocation named a session."""
        session = live.record.metadata.get(SESSION_KEY)
        if session:
            live.output = lambda text: self._publish(session, live, text)

    def _publish(self, session: str, live: LiveExecution, text: str) -> None:
        queue = self._queues.get(session)
        if queue is None:
            return
        record = live.record
        queue.put_nowait(
            fpb.OutputText(execution_id=record.execution_id, task_name=record.task_name, text=text)
        )
        live.forwarded += 1

    async def follow(
        self, session: str, opened: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[fpb.FollowOutputResponse]:
        """The session's texts until the caller goes away; a newer stream of the session replaces this one.
        ``opened`` is awaited once texts are collected for the session (to tell the client so), then an
        empty message is sent, so that the stream answers at once."""
        queue: asyncio.Queue[fpb.OutputText | None] = asyncio.Queue()
        replaced = self._queues.get(session)
        if replaced is not None:
            replaced.put_nowait(None)
        self._queues[session] = queue
        try:
            await opened()
            yield fpb.FollowOutputResponse()  # an empty first answer: the stream is open
            while (first := await queue.get()) is not None:
                texts = [first]
                ended = False
                while not queue.empty() and len(texts) < _GROUP:
                    item = queue.get_nowait()
                    if item is None:
                        ended = True
                        break
                    texts.append(item)
                yield fpb.FollowOutputResponse(texts=texts)
                if ended:
                    return
        finally:
            if self._queues.get(session) is queue:
                del self._queues[session]

    def close(self) -> None:
        for queue in self._queues.values():
            queue.put_nowait(None)
