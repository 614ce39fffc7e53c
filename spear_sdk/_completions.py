"""Completions pushed by the server: one ``WatchExecutions`` stream per connection, shared by every wait.

Every execution this client awaits (``result()``, ``done()``, ``wait``, ``as_completed``, a watch widget)
is one id on that stream; the server answers each once it knows (``watching`` or ``unknown``) and again
when it ends, with its result. The stream is bidirectional so that ids join it at any time without a new
RPC. It opens on the first id, stays open (the server's heartbeats keep it alive), and is opened again after
a drop with every id still awaited: nothing is lost, since the server reads ids it does not hold live from
its store. A server without the RPC answers UNIMPLEMENTED: then :meth:`Completions.watch` returns None and
the callers poll ``GetExecutionStatus`` instead.

Everything here runs on the runtime loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

import grpc

from ._connection import Connection
from .wire import function_pb2
from .wire.errors import NotFound, SpearError, Unimplemented

#: Ids sent in one request at most; more go in the next ones.
IDS_PER_REQUEST = 10_000
#: A stream silent for this long (no answer, no heartbeat: the server sends one every 5 s) is dead.
SILENCE_S = 15.0
_RETRY_FIRST_S, _RETRY_MAX_S = 0.05, 2.0
#: Attempts in a row that get no answer (about 3 s with the backoff) before the waiters get the error.
OPEN_ATTEMPTS = 6


class Watched:
    """One awaited execution: ``answered`` once the server knows of it, ``ended`` with its terminal
    result (or ``NotFound``)."""

    __slots__ = ("answered", "ended", "execution_id")

    def __init__(self, execution_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.execution_id = execution_id
        self.answered: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[function_pb2.ExecutionResult] = loop.create_future()

    def end(self, result: function_pb2.ExecutionResult) -> None:
        if not self.answered.done():
            self.answered.set_result(None)
        if not self.ended.done():
            self.ended.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.answered.done():
            self.answered.set_result(None)
        if not self.ended.done():
            self.ended.set_exception(error)
            self.ended.exception()  # retrieved: nobody may be waiting for it


class Completions:
    """The executions this connection awaits, by id, and the one stream that tells of their ends."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        connection.before_close(self.close)
        self._awaited: dict[str, Watched] = {}
        self._unsent: list[str] = []
        self._has_unsent = asyncio.Event()
        self._stream: asyncio.Task[None] | None = None
        #: False once the server answered UNIMPLEMENTED: callers poll.
        self.supported = True
        self._closed = False
        #: How many times the stream was opened (the first, then after each drop).
        self.opened = 0

    def watch(self, execution_id: str) -> Watched | None:
        """The awaited execution (joining the stream if it is new); None when the server cannot push."""
        if not self.supported:
            return None
        if self._closed:  # (a client used again after close() opens its channel again)
            self._closed = False
        watched = self._awaited.get(execution_id)
        if watched is None:
            watched = Watched(execution_id, asyncio.get_running_loop())
            self._awaited[execution_id] = watched
            watched.ended.add_done_callback(lambda _: self._awaited.pop(execution_id, None))
            self._unsent.append(execution_id)
            self._has_unsent.set()
            if self._stream is None:
                self._stream = asyncio.ensure_future(self._keep_open())
        return watched

    def watch_many(self, execution_ids: Iterable[str]) -> list[Watched] | None:
        if not self.supported:
            return None
        watched = [self.watch(i) for i in execution_ids]
        return None if not self.supported else [w for w in watched if w is not None]

    async def close(self) -> None:
        self._closed = True
        self._has_unsent.set()  # (ends the request iterator)
        if self._stream is not None:
            stream, self._stream = self._stream, None
            stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream

    # -- the stream ----------------------------------------------------------------------------------

    async def _keep_open(self) -> None:
        delay = _RETRY_FIRST_S
        failures = 0
        while self._awaited or self._unsent:
            self._unsent = list(self._awaited)  # (again, after a drop: the server forgot this stream)
            last, self._has_unsent = self._has_unsent, asyncio.Event()
            last.set()  # (the last stream's request iterator sees it is not its own and ends)
            self._has_unsent.set()
            self.opened += 1
            try:
                answered, error = await self._follow()
            except Unimplemented:
                self._give_up()
                return
            if answered:
                delay, failures = _RETRY_FIRST_S, 0
            else:
                failures += 1
            if failures >= OPEN_ATTEMPTS and error is not None:
                self._fail_all(error)  # the server is gone: the waiters hear it, as a poll would
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        self._stream = None

    async def _follow(self) -> tuple[bool, SpearError | None]:
        """Follow one stream until it ends or breaks: whether it answered anything, and how it broke."""
        call = self._connection.functions.WatchExecutions(
            self._requests(), metadata=self._connection.metadata
        )
        answered = False
        try:
            while True:
                try:
                    message = await asyncio.wait_for(call.read(), SILENCE_S)
                except TimeoutError:
                    return answered, None
                if message is grpc.aio.EOF:  # type: ignore[attr-defined]
                    return answered, None
                answered = True
                self._take(message)
        except grpc.aio.AioRpcError as exc:
            error = self._connection.error(exc)
            if isinstance(error, Unimplemented):
                raise error from None
            return answered, error
        finally:
            call.cancel()

    async def _requests(self) -> AsyncIterator[function_pb2.WatchExecutionsRequest]:
        has_unsent = self._has_unsent  # this stream's
        while not self._closed and has_unsent is self._has_unsent:
            await has_unsent.wait()
            has_unsent.clear()
            if has_unsent is not self._has_unsent:
                return
            while self._unsent:
                ids, self._unsent = self._unsent[:IDS_PER_REQUEST], self._unsent[IDS_PER_REQUEST:]
                ids = [i for i in ids if i in self._awaited]
                if ids:
                    yield function_pb2.WatchExecutionsRequest(execution_ids=ids)

    def _take(self, message: function_pb2.WatchExecutionsResponse) -> None:
        awaited = self._awaited
        for ended in message.ended:
            watched = awaited.get(ended.execution_id)
            if watched is not None:
                watched.end(ended.result)
        for execution_id in message.watching:
            watched = awaited.get(execution_id)
            if watched is not None and not watched.answered.done():
                watched.answered.set_result(None)
        for execution_id in message.unknown_ids:
            watched = awaited.get(execution_id)
            if watched is not None:
                watched.fail(NotFound(f"execution {execution_id!r} not found"))

    def _give_up(self) -> None:
        """The server cannot push: every waiter learns it (and polls), later ones poll from the start."""
        self.supported = False
        self._stream = None
        self._fail_all(Unimplemented("the server has no WatchExecutions"))

    def _fail_all(self, error: SpearError) -> None:
        for watched in list(self._awaited.values()):
            watched.fail(error)
        self._awaited.clear()
