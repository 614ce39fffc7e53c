"""Calls to a gRPC server of this process, on its own event loop, without a socket: what a lab's client uses.

A lab runs its spearlet on the SDK's runtime loop, beside the client. Through a socket, every call of that
client went gRPC's whole way on both sides: HTTP/2 framing, and the completion queues' poller threads
waking the loop, once for the request and once for the answer. :class:`LocalChannel` stands in for the
``grpc.aio.Channel`` instead: the generated stubs call it as they call a channel, and it hands each call
to the server's own method handlers, behind the server's own interceptors, as a task of the loop.

What a caller sees stays what a socket gives:

- requests and responses are serialized and parsed as on the wire, so neither side ever holds the other's
  objects, and a message over the limit fails with ``RESOURCE_EXHAUSTED``;
- a failure is a ``grpc.aio.AioRpcError`` with the status the handler aborted with (its trailing metadata
  too), ``UNKNOWN`` for an exception the handler let out, ``DEADLINE_EXCEEDED`` past a ``timeout``,
  ``UNIMPLEMENTED`` for a method the server does not have;
- a caller cancelled cancels its handler, as a client's cancellation does through gRPC;
- a server stream holds at most :data:`WINDOW` unread messages: a handler that runs ahead of its reader
  waits, as gRPC's flow control makes it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

import grpc

log = logging.getLogger(__name__)

#: Unread messages a server stream may hold before its handler waits for the reader.
WINDOW = 64
#: How long closing the channel waits for the handlers it cancelled to finish.
CLOSE_WAIT_S = 1.0

Serializer = Callable[[Any], Any] | None
Metadata = Sequence[tuple[str, str | bytes]]
Requests = AsyncIterable[Any] | Iterable[Any]
if TYPE_CHECKING:  # (the stubs make it generic; at run time it is a plain class)
    Handler = grpc.RpcMethodHandler[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
#: Which of a method handler's behaviours serves the call's kind (``handler.unary_stream``, ...).
Behaviour = Callable[[Handler], Any]
#: A call's behaviour and what to give it (its request, or the stream of them), from its method handler.
Pick = Callable[[Handler], tuple[Any, Any]]
_OK = grpc.StatusCode.OK


class _CallDetails(grpc.HandlerCallDetails):
    """What an interceptor and a generic handler are given."""

    def __init__(self, method: str, metadata: Metadata) -> None:
        self.method = method
        self.invocation_metadata = tuple(metadata)


class _Aborted(grpc.aio.AbortError):
    """What ``context.abort`` raises: a ``grpc.aio.AbortError``, as through gRPC, with the status."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = tuple(trailing)


def rpc_error(code: grpc.StatusCode, details: str, trailing: Metadata = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details=details, debug_error_string=details
    )


class _Context:
    """The servicer context a handler is given (the part of ``grpc.aio.ServicerContext`` handlers use)."""

    def __init__(
        self,
        metadata: Metadata,
        deadline: float | None,
        write: Callable[[Any], Awaitable[None]] | None = None,
        opened: Callable[[], None] | None = None,
    ) -> None:
        self._metadata = tuple(metadata)
        self._deadline = deadline
        self._write = write
        self._opened = opened
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._callbacks: list[Callable[[], object]] = []

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()) -> None:
        raise _Aborted(code, details, trailing_metadata)

    async def write(self, message: Any) -> None:
        if self._write is None:
            raise RuntimeError("write() is for server-streaming calls")
        await self._write(message)

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        if self._opened is not None:
            self._opened()

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return "local"

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = tuple(metadata)

    def add_done_callback(self, callback: Callable[[], object]) -> None:
        self._callbacks.append(callback)

    def add_callback(self, callback: Callable[[], object]) -> bool:
        self._callbacks.append(callback)
        return True

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def finish(self) -> None:
        """The handler returned: a status it set without aborting is its answer."""
        if self._code is not None and self._code != _OK:
            raise _Aborted(self._code, self._details, self._trailing)

    def close(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("a servicer's done callback failed")


def _kind(*, one_request: bool, answers_once: bool, behaviour: Behaviour) -> Callable[..., Any]:
    """The channel's method for one kind of call (``unary_unary`` and the three others, as the stubs
    call them): it makes the callable of one RPC method."""

    def method_callable(
        self: LocalChannel,
        method: str,
        request_serializer: Serializer = None,
        response_deserializer: Serializer = None,
        _registered_method: bool = False,
    ) -> Callable[..., Any]:
        def pick_for(request: Any) -> Pick:
            if one_request:
                return _one_request(self._encode(request_serializer, request, "Sent"), behaviour)
            return self._request_stream(request, request_serializer, behaviour)

        async def answer(
            request: Any, *, timeout: float | None = None, metadata: Metadata | None = None, **_: Any
        ) -> Any:
            pick = pick_for(request)
            return await self._answer(method, metadata or (), timeout, response_deserializer, pick)

        def stream(
            request: Any, *, timeout: float | None = None, metadata: Metadata | None = None, **_: Any
        ) -> LocalStreamCall:
            pick = pick_for(request)
            return LocalStreamCall(self, method, metadata or (), timeout, response_deserializer, pick)

        return answer if answers_once else stream

    return method_callable


class LocalChannel:
    """A ``grpc.aio.Channel`` whose calls go straight to ``handlers`` (a server's generic RPC handlers),
    through ``interceptors`` (its server interceptors, first to last), on the running loop.

    ``message_limit`` bounds every message both ways, as the channel's and the server's limits do.
    Handlers run in copies of ``context`` (by default the one current here): the context the server's
    own tasks have, not their caller's.
    """

    def __init__(
        self,
        handlers: Sequence[grpc.GenericRpcHandler[Any, Any]],
        interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
        *,
        message_limit: int,
        context: contextvars.Context | None = None,
    ) -> None:
        self._handlers = tuple(handlers)
        self._context = context if context is not None else contextvars.copy_context()
        self._interceptors = tuple(interceptors)
        #: The interceptors, first to last, in front of the handlers' lookup (built once, called per call).
        self._resolve: Callable[[Any], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]] = self._lookup
        for interceptor in reversed(self._interceptors):
            self._resolve = _chained(interceptor, self._resolve)
        self._limit = message_limit
        #: Handlers found per method; kept only with no interceptor, which may choose per call.
        self._found: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._calls: set[asyncio.Task[Any]] = set()
        self._streams: set[LocalStreamCall] = set()
        self._closed = False

    # -- what the stubs call ------------------------------------------------------------------------------

    unary_unary = _kind(one_request=True, answers_once=True, behaviour=lambda h: h.unary_unary)
    stream_unary = _kind(one_request=False, answers_once=True, behaviour=lambda h: h.stream_unary)
    unary_stream = _kind(one_request=True, answers_once=False, behaviour=lambda h: h.unary_stream)
    stream_stream = _kind(one_request=False, answers_once=False, behaviour=lambda h: h.stream_stream)

    async def channel_ready(self) -> None:
        return None

    async def close(self, grace: float | None = None) -> None:
        """End every call still going (its caller gets ``CANCELLED``); later calls fail at once. Handlers
        get up to :data:`CLOSE_WAIT_S` to finish their cancellation: no longer, as a gRPC channel does not
        wait for a server's handlers at all."""
        self._closed = True
        for stream in list(self._streams):
            stream.cancel()
        calls, self._calls = self._calls, set()
        for task in calls:
            task.cancel()
        if calls:
            await asyncio.wait(calls, timeout=CLOSE_WAIT_S)

    async def __aenter__(self) -> LocalChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the way of a call --------------------------------------------------------------------------------

    async def _handler(self, method: str, metadata: Metadata) -> grpc.RpcMethodHandler[Any, Any]:
        if self._closed:
            raise rpc_error(grpc.StatusCode.CANCELLED, "the channel is closed")
        found = self._found.get(method)
        if found is not None:
            return found
        found = await self._resolve(_CallDetails(method, metadata))
        if found is None:
            raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
        if not self._interceptors:
            self._found[method] = found
        return found

    async def _lookup(self, details: _CallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        for generic in self._handlers:
            found = generic.service(details)
            if found is not None:
                return found
        return None

    async def _answer(
        self, method: str, metadata: Metadata, timeout: float | None, deserializer: Serializer, pick: Pick
    ) -> Any:
        """A call with one answer: its handler run as a task of its own, as a server runs it (its context
        variables and its cancellation are its own), its answer through the wire form."""
        handler = await self._handler(method, metadata)
        behaviour, request = pick(handler)
        context = _Context(metadata, _deadline(timeout))
        answer = self._start(_answered(behaviour, request, context))
        try:
            if timeout is None:
                response = await answer
            else:
                response = await asyncio.wait_for(answer, timeout)
        except asyncio.TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        except asyncio.CancelledError:
            if answer.cancelled() and self._closed and not _cancelling():
                raise rpc_error(grpc.StatusCode.CANCELLED, "the channel is closed") from None
            raise
        finally:
            context.close()
        data = self._encode(handler.response_serializer, response, "Received")
        return deserializer(data) if deserializer is not None else data

    def _start(self, handling: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = self._context.run(asyncio.ensure_future, handling)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return task

    def _encode(self, serializer: Serializer, message: Any, way: str) -> bytes:
        data: bytes = serializer(message) if serializer is not None else message
        if len(data) > self._limit:
            raise rpc_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{way} message larger than max ({len(data)} vs. {self._limit})",
            )
        return data

    def _request_stream(self, requests: Requests, serializer: Serializer, behaviour: Behaviour) -> Pick:
        """The client's requests as the handler reads them: each through the wire form."""

        async def parsed(handler: Handler) -> AsyncIterator[Any]:
            if isinstance(requests, AsyncIterable):
                async for request in requests:
                    yield _parse(handler, self._encode(serializer, request, "Sent"))
            else:
                for request in requests:
                    yield _parse(handler, self._encode(serializer, request, "Sent"))

        return lambda handler: (_found(behaviour(handler)), parsed(handler))


def _one_request(data: bytes, behaviour: Behaviour) -> Pick:
    return lambda handler: (_found(behaviour(handler)), _parse(handler, data))


def _found(behaviour: Any) -> Any:
    """``behaviour``; ``UNIMPLEMENTED`` when the method handler has none for the client's kind of call
    (its stub and the server disagree about the method)."""
    if behaviour is None:
        raise rpc_error(grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    return behaviour


def _chained(
    interceptor: grpc.aio.ServerInterceptor[Any, Any],
    continuation: Callable[[Any], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
) -> Callable[[Any], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]:
    async def intercepted(details: Any) -> grpc.RpcMethodHandler[Any, Any] | None:
        # (the stubs say a continuation never answers None; grpc's own servers pass one that does)
        return await interceptor.intercept_service(cast(Any, continuation), details)

    return intercepted


def _parse(handler: grpc.RpcMethodHandler[Any, Any], data: bytes) -> Any:
    parse = handler.request_deserializer
    return parse(data) if parse is not None else data


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _cancelling() -> bool:
    """Whether the current task is being cancelled itself (not only the handler it awaited)."""
    task = asyncio.current_task()
    return task is not None and getattr(task, "cancelling", lambda: 0)() > 0


async def _answered(behaviour: Any, request: Any, context: _Context) -> Any:
    """Run a handler that answers once; what it raised becomes the call's status."""
    try:
        response = behaviour(request, context)
        if inspect.isawaitable(response):
            response = await response
        context.finish()
        return response
    except Exception as exc:
        raise _status_of(exc) from None


def _status_of(exc: Exception) -> grpc.aio.AioRpcError:
    """The status a call ends with when its handler raised ``exc``."""
    if isinstance(exc, _Aborted):
        return rpc_error(exc.code, exc.details, exc.trailing)
    if isinstance(exc, grpc.aio.AioRpcError):
        return exc
    log.error("Unexpected error raised by a servicer method", exc_info=exc)
    return rpc_error(grpc.StatusCode.UNKNOWN, f"Unexpected {type(exc)}: {exc}")


_EOF: Any = grpc.aio.EOF  # type: ignore[attr-defined]


class LocalStreamCall:
    """A server-streaming call of a :class:`LocalChannel` (with a request stream, or one request): read
    it with ``read()`` or ``async for``; ``cancel()`` stops its handler."""

    def __init__(
        self,
        channel: LocalChannel,
        method: str,
        metadata: Metadata,
        timeout: float | None,
        deserializer: Serializer,
        pick: Pick,
    ) -> None:
        self._channel = channel
        self._deserializer = deserializer
        self._messages: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._error: BaseException | None = None
        self._ended = False
        self._serialize: Serializer = None
        self._task = channel._start(self._produce(method, metadata, timeout, pick))
        self._task.add_done_callback(self._produced)
        channel._streams.add(self)

    async def _produce(self, method: str, metadata: Metadata, timeout: float | None, pick: Pick) -> None:
        context: _Context | None = None
        try:
            handler = await self._channel._handler(method, metadata)
            behaviour, request = pick(handler)
            self._serialize = handler.response_serializer
            context = _Context(metadata, _deadline(timeout), self._put, self._open)
            produced = behaviour(request, context)
            if timeout is None:
                await self._relay(produced)
            else:
                await asyncio.wait_for(self._relay(produced), timeout)
            context.finish()
        except asyncio.TimeoutError:
            self._error = rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        except Exception as exc:
            self._error = _status_of(exc)
        finally:
            if context is not None:
                context.close()

    async def _relay(self, produced: Any) -> None:
        if hasattr(produced, "__aiter__"):
            async for message in produced:
                await self._put(message)
        elif inspect.isawaitable(produced):  # a handler that sends with context.write()
            await produced

    def _produced(self, task: asyncio.Task[None]) -> None:
        self._channel._streams.discard(self)
        self._end(asyncio.CancelledError() if task.cancelled() else None)

    def _end(self, error: BaseException | None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._error is None:
            self._error = error
        self._open()
        self._readable.set()

    def _open(self) -> None:
        if not self._opened.done():
            self._opened.set_result(None)

    async def _put(self, message: Any) -> None:
        if self._ended:  # cancelled: nobody reads on
            return
        data = self._channel._encode(self._serialize, message, "Received")
        while len(self._messages) >= WINDOW:
            self._writable.clear()
            await self._writable.wait()
        self._messages.append(data)
        self._open()
        self._readable.set()

    async def read(self) -> Any:
        """The next message, or ``grpc.aio.EOF`` after the last; raises how the call failed."""
        while not self._messages:
            if self._ended:
                if self._error is not None:
                    raise self._error
                return _EOF
            self._readable.clear()
            await self._readable.wait()
        data = self._messages.popleft()
        if len(self._messages) < WINDOW:
            self._writable.set()
        return self._deserializer(data) if self._deserializer is not None else data

    async def __aiter__(self) -> AsyncIterator[Any]:
        while (message := await self.read()) is not _EOF:
            yield message

    async def initial_metadata(self) -> grpc.aio.Metadata:
        await asyncio.shield(self._opened)
        return grpc.aio.Metadata()

    def cancel(self) -> bool:
        """Stop the call: its handler is cancelled, and reading it raises ``asyncio.CancelledError``
        from now on, whatever the handler does with its cancellation (as with gRPC)."""
        if self._ended:
            return False
        self._messages.clear()
        self._end(asyncio.CancelledError())
        self._task.cancel()
        return True

    def cancelled(self) -> bool:
        return self._ended and isinstance(self._error, asyncio.CancelledError)

    def done(self) -> bool:
        return self._ended


__all__ = ["CLOSE_WAIT_S", "WINDOW", "LocalChannel", "LocalStreamCall", "rpc_error"]
