"""Pipelined submits: ``f.submit(x)`` returns at once; the calls go to the server in the background.

The caller's thread encodes the arguments and queues the call (a few microseconds); the runtime loop sends
what is queued in ``InvokeMany`` requests, one at a time, so calls queued while one is on its way go
together in the next and calls from one thread are admitted in the order they were made. Each call's id,
or the error that refused it (a task not found, a full queue, pickles not allowed, bad arguments), lands
in its :class:`Submission`, where the execution handle finds it. A server without ``InvokeMany`` gets
one ``InvokeFunction`` per call, in order.

An accepted call's end is awaited on the client's completion stream as soon as its id arrives, before
anyone asks for its result: ``result()`` calls one after another would otherwise each wait a round trip
for an end the server already had.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from ._completions import Watched
from .wire import function_pb2
from .wire.errors import SpearError, Unimplemented, error_for_status

_STATUS_CODES = {code.value[0]: code for code in grpc.StatusCode}
#: Calls sent in one request at most.
CALLS_PER_REQUEST = 2000


class Submission:
    """A submitted call's id on its way from the server, or the error that refused it."""

    __slots__ = ("_event", "_waiters", "error", "execution_id", "watched")

    def __init__(self) -> None:
        self.execution_id: str | None = None
        self.error: BaseException | None = None
        #: The accepted call's end, awaited on the completion stream (None: the server cannot push).
        self.watched: Watched | None = None
        self._event: threading.Event | None = None
        self._waiters: list[asyncio.Future[None]] = []

    @classmethod
    def failed(cls, error: BaseException) -> Submission:
        submission = cls()
        submission.error = error
        return submission

    @property
    def settled(self) -> bool:
        return self.execution_id is not None or self.error is not None

    def id_blocking(self, check: Callable[[], None]) -> str:
        """The id, blocking this thread until the server gave it (``check`` refuses the loop's thread)."""
        if not self.settled:
            check()
            event = self._event
            if event is None:
                event = self._event = threading.Event()
                if self.settled:  # (settled while the event was made)
                    event.set()
            event.wait()
        return self._id()

    async def id(self) -> str:
        """The id, awaited on the runtime loop."""
        if not self.settled:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self._id()

    def _id(self) -> str:
        if self.error is not None:
            raise self.error
        assert self.execution_id is not None
        return self.execution_id

    def settle(self, execution_id: str | None, error: BaseException | None = None) -> None:
        """On the runtime loop: the server's answer."""
        self.execution_id, self.error = execution_id, error
        if self._event is not None:
            self._event.set()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


#: What a queued call becomes a request with, on the loop: a coroutine that resolves its target (which may
#: register the function) and encodes its arguments (large ones stored as objects first), giving the
#: request and the keys of the objects made for it, released once the server has answered.
Build = Callable[[], Awaitable[tuple[function_pb2.InvokeFunctionRequest, list[str]]]]


class Submitter:
    """The queue of submitted calls of one connection and the loop-side sender that empties it."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        functions: Callable[[], Any],
        call: Any,
        release: Callable[[list[str]], Awaitable[None]],
        watch: Callable[[str], Watched | None],
    ) -> None:
        self._loop = loop
        self._functions = functions  # the stub (the channel opens lazily, on the loop)
        self._call = call  # Connection.call: errors become SpearErrors
        self._release = release  # drops the objects made for arguments (held by accepted executions)
        self._watch = watch  # awaits an accepted call's end on the completion stream
        self._queue: collections.deque[tuple[Build, Submission]] = collections.deque()
        self._lock = threading.Lock()
        self._sending = False
        self._sender: asyncio.Future[None] | None = None
        self._batched = True  # False once the server answered InvokeMany with UNIMPLEMENTED

    def submit(self, build: Build) -> Submission:
        """Queue a call (from any thread); its :class:`Submission` settles once the server answered."""
        submission = Submission()
        with self._lock:
            self._queue.append((build, submission))
            if self._sending:
                return submission
            self._sending = True
        self._loop.call_soon_threadsafe(self._start)
        return submission

    def _start(self) -> None:
        self._sender = asyncio.ensure_future(self._send_all())

    async def _send_all(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._sending = False
                    return
                count = min(len(self._queue), CALLS_PER_REQUEST)
                calls = [self._queue.popleft() for _ in range(count)]
            await self._send(calls)

    async def _send(self, calls: Sequence[tuple[Build, Submission]]) -> None:
        requests: list[function_pb2.InvokeFunctionRequest] = []
        built: list[Submission] = []
        made: list[str] = []
        for build, submission in calls:
            try:
                request, implicit = await build()
            except Exception as exc:  # the target or the arguments cannot be sent
                submission.settle(None, exc)
                continue
            requests.append(request)
            built.append(submission)
            made += implicit
        try:
            if requests:
                await self._send_built(requests, built)
        finally:
            if made:
                await self._release(made)

    async def _send_built(
        self, requests: list[function_pb2.InvokeFunctionRequest], built: list[Submission]
    ) -> None:
        if self._batched:
            try:
                response = await self._call(
                    self._functions().InvokeMany, function_pb2.InvokeManyRequest(invocations=requests)
                )
            except Unimplemented:
                self._batched = False
            except SpearError as exc:  # the whole request refused (the server is unreachable)
                for submission in built:
                    submission.settle(None, exc)
                return
            else:
                for submission, outcome in zip(built, response.outcomes, strict=True):
                    self._settle(submission, *_outcome(outcome))
                return
        for submission, request in zip(built, requests, strict=True):  # one by one, in order
            try:
                answer = await self._call(self._functions().InvokeFunction, request)
            except SpearError as exc:
                submission.settle(None, exc)
            else:
                self._settle(submission, answer.execution_id, None)

    def _settle(self, submission: Submission, execution_id: str | None, error: BaseException | None) -> None:
        if execution_id is not None:
            submission.watched = self._watch(execution_id)
        submission.settle(execution_id, error)


def _outcome(outcome: function_pb2.InvokeOutcome) -> tuple[str | None, BaseException | None]:
    if outcome.error_status == 0:
        return outcome.response.execution_id, None
    code = _STATUS_CODES.get(outcome.error_status, grpc.StatusCode.UNKNOWN)
    error = error_for_status(code, outcome.error_message)
    if outcome.retry_after_ms and hasattr(error, "retry_after"):
        error.retry_after = outcome.retry_after_ms / 1000
    return None, error
