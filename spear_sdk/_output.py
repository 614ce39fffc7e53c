"""Remote output in the calling cell: what a function prints on the server is written here as it is
printed, each line prefixed with the function's name (``[name] text``), so that it reads apart from local
output. The execution's logs keep it as well.

One ``FollowOutput`` stream per client session, opened on the first call that forwards, multiplexes the
output of every execution the client starts. A SYNC call that printed says how many pieces it sent; the
call waits (briefly, at most :data:`SETTLE_TIMEOUT_S`) until all of them are shown before it returns.
Everything here runs on the runtime loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping

import grpc

from ._connection import Connection
from .wire import function_pb2
from .wire.errors import SpearError

SESSION_KEY = "spear.output-session"
TRACEBACK_HEADER = "Traceback (most recent call last):\n"
SENT_METRIC = "spear.output-lines"
#: Longest a returning call waits for output still on its way.
SETTLE_TIMEOUT_S = 2.0
#: Longest the first forwarding call waits for the stream to open.
OPEN_TIMEOUT_S = 5.0
#: Executions whose counts are remembered (the output of executions nobody waits for is not settled).
_REMEMBERED = 4096


def write_to_stdout(text: str) -> None:
    stream = sys.stdout
    if stream is not None:
        stream.write(text)
        stream.flush()


class OutputFollower:
    def __init__(self, connection: Connection, write: Callable[[str], None] = write_to_stdout) -> None:
        self._connection = connection
        self.session = uuid.uuid4().hex
        self.write = write
        self._task: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[bool] | None = None
        self._unsupported = False
        self._received: OrderedDict[str, int] = OrderedDict()
        self._partial: dict[str, tuple[str, str]] = {}  # execution id -> (task name, unfinished line)
        self._waiters: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self._context: contextvars.Context | None = None

    async def session_for_call(self) -> str | None:
        """The session to name in an invocation, once the stream is open; ``None`` if the server has no
        such stream (then output stays in the logs only)."""
        if self._unsupported:
            return None
        # Output is written in the context of the latest call: in a notebook the context carries the cell
        # that made it (ipykernel keeps a cell's header in a context variable), so lines land in that cell
        # rather than in the one that happened to open the stream.
        self._context = contextvars.copy_context()
        opened = self._opened
        if opened is not None and opened.done() and self._task is not None and not self._task.done():
            return self.session if opened.result() else None  # the stream is open: the common case
        if self._task is None or self._task.done():
            self._opened = asyncio.get_running_loop().create_future()
            self._task = asyncio.ensure_future(self._follow(self._opened))
        assert self._opened is not None
        try:
            ready = await asyncio.wait_for(asyncio.shield(self._opened), OPEN_TIMEOUT_S)
        except asyncio.TimeoutError:
            return None
        return self.session if ready else None

    async def _follow(self, opened: asyncio.Future[bool]) -> None:
        request = function_pb2.FollowOutputRequest(session=self.session)
        connection = self._connection
        call = None
        try:
            call = connection.functions.FollowOutput(request, metadata=connection._metadata)
            await call.initial_metadata()
            if not opened.done():
                opened.set_result(True)
            async for message in call:
                for item in message.texts:
                    self._show(item.execution_id, item.task_name, item.text)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                self._unsupported = True
        except SpearError:
            pass  # the connection is gone (its lab stopped or was replaced): the call itself says so
        finally:
            if call is not None:
                call.cancel()
            if not opened.done():
                opened.set_result(False)

    def _show(self, execution_id: str, name: str, text: str) -> None:
        count = self._received.pop(execution_id, 0) + 1
        self._received[execution_id] = count
        while len(self._received) > _REMEMBERED:
            self._received.popitem(last=False)
        _, partial = self._partial.pop(execution_id, (name, ""))
        text = partial + text
        # The server ends a failed execution's output with its traceback, in the same piece as any text
        # still unsent; the error the call raises shows that traceback already (the logs keep it).
        failure = text.find(TRACEBACK_HEADER)
        if failure == 0 or (failure > 0 and text[failure - 1] == "\n"):
            text = text[:failure]
        *lines, rest = text.split("\n")
        if rest:
            self._partial[execution_id] = (name, rest)
        if lines:
            self._write("".join(f"[{name}] {line}\n" for line in lines))
        waiting = self._waiters.get(execution_id)
        if waiting is not None and count >= waiting[0] and not waiting[1].done():
            waiting[1].set_result(None)

    async def settle(self, execution_id: str, metrics: Mapping[str, str]) -> None:
        """Show all that ``execution_id`` sent (its result's metrics count it) before its caller goes on."""
        sent = int(metrics.get(SENT_METRIC, "0") or 0)
        if sent and self._received.get(execution_id, 0) < sent:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters[execution_id] = (sent, waiter)
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, SETTLE_TIMEOUT_S)
            finally:
                self._waiters.pop(execution_id, None)
        self._received.pop(execution_id, None)
        name, rest = self._partial.pop(execution_id, ("", ""))
        if rest:
            self._write(f"[{name}] {rest}\n")

    def _write(self, text: str) -> None:
        if self._context is None:
            self.write(text)
        else:
            self._context.copy().run(self.write, text)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
