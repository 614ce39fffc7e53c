"""What every RPC handler shares: request parsing, error-to-status mapping, pagination and enum checks."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import DecodeError, Message

from spear_sdk.wire.errors import RETRY_AFTER_MS, InvalidArgument, SpearError

from .engine.scheduler import Overloaded
from .store import StoreError

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
#: Room kept in a page's response for all but its items (has_more, next_start_after).
_PAGE_FRAMING = 8 << 10

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]


class MalformedRequest:
    """Stands in for a request whose bytes did not parse, so the handler can answer INVALID_ARGUMENT.

    grpc would otherwise answer a deserializer's exception with UNKNOWN.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(message: type[Message]) -> Callable[[bytes], Message | MalformedRequest]:
    def parse(data: bytes) -> Message | MalformedRequest:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return MalformedRequest(f"malformed {message.DESCRIPTOR.name}: {exc}")

    return parse


class Encoded:
    """A response already in wire form (see ``pages``), passed to the transport as it is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


def _serialize(response: Message | Encoded) -> bytes:
    return response.data if isinstance(response, Encoded) else response.SerializeToString()


def service_handler(
    servicer: object, service: ServiceDescriptor, module: ModuleType
) -> grpc.GenericRpcHandler[Any, Any]:
    """The servicer's methods as one handler, with requests parsed by :func:`_lenient`.

    Any servicer of any arity: the standard health and reflection services are served through this too,
    so that they answer undecodable bytes with INVALID_ARGUMENT as well.
    """
    handlers = {}
    for method in service.methods:
        request = getattr(module, method.input_type.name)
        arity = (method.client_streaming, method.server_streaming)
        handlers[method.name] = _FACTORIES[arity](
            _CHECKED[arity](getattr(servicer, method.name)),
            request_deserializer=_lenient(request),
            response_serializer=_serialize,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


async def _refuse_malformed(request: object, context: Context) -> None:
    if isinstance(request, MalformedRequest):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.reason)


def _checked_unary(behaviour: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def checked(request: object, context: Context) -> Any:
        await _refuse_malformed(request, context)
        result = behaviour(request, context)  # a library's servicer may be synchronous
        return await result if inspect.isawaitable(result) else result

    return checked


def _checked_server_stream(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if not inspect.isasyncgenfunction(behaviour):  # a coroutine that sends with context.write()

        async def writes(request: object, context: Context) -> None:
            await _refuse_malformed(request, context)
            await behaviour(request, context)

        return writes

    async def checked(request: object, context: Context) -> AsyncIterator[Any]:
        await _refuse_malformed(request, context)
        async for item in behaviour(request, context):
            yield item

    return checked


async def _checked_requests(requests: AsyncIterator[object], context: Context) -> AsyncIterator[object]:
    async for request in requests:
        await _refuse_malformed(request, context)
        yield request


def _checked_client_stream(behaviour: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def checked(requests: AsyncIterator[object], context: Context) -> Any:
        return await behaviour(_checked_requests(requests, context), context)

    return checked


def _checked_bidi_stream(behaviour: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    async def checked(requests: AsyncIterator[object], context: Context) -> AsyncIterator[Any]:
        async for item in behaviour(_checked_requests(requests, context), context):
            yield item

    return checked


# Both keyed by (client_streaming, server_streaming).
_FACTORIES: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
_CHECKED: dict[tuple[bool, bool], Callable[[Any], Callable[..., Any]]] = {
    (False, False): _checked_unary,
    (False, True): _checked_server_stream,
    (True, False): _checked_client_stream,
    (True, True): _checked_bidi_stream,
}


def refusal(exc: BaseException) -> tuple[grpc.StatusCode, str, int] | None:
    """The status, message and retry hint (ms, 0: none) an error is answered with, as :func:`unary`
    would abort with it; None for an error that is a bug (those abort the whole call as INTERNAL)."""
    if isinstance(exc, SpearError):
        return exc.code, exc.message, exc.retry_after_ms if isinstance(exc, Overloaded) else 0
    if isinstance(exc, StoreError):
        log.error("store failure: %s", exc)
        return grpc.StatusCode.UNAVAILABLE, f"the store did not answer: {exc}", 0
    return None


async def _abort(context: Context, exc: BaseException, method: str) -> None:
    if isinstance(exc, Overloaded):
        # The hint travels as trailing metadata, where a client's retry logic can read it.
        hint = ((RETRY_AFTER_MS, str(exc.retry_after_ms)),)
        await context.abort(exc.code, exc.message, trailing_metadata=hint)
    if isinstance(exc, SpearError):
        await context.abort(exc.code, exc.message)
    if isinstance(exc, StoreError):
        log.error("store failure in %s: %s", method, exc)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"the store did not answer: {exc}")
    log.exception("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}: {type(exc).__name__}: {exc}")


def unary(
    handler: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Answer a ``SpearError`` with its status; anything else is a bug, reported as INTERNAL and logged."""

    @functools.wraps(handler)
    async def wrapper(self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            return await handler(self, request, context)
        except Exception as exc:
            await _abort(context, exc, handler.__name__)
            raise  # unreachable: abort raises

    return wrapper


def server_stream(
    handler: Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]],
) -> Callable[[S, Req, grpc.aio.ServicerContext[Req, Resp]], AsyncIterator[Resp]]:
    """:func:`unary` for server-streaming handlers."""

    @functools.wraps(handler)
    async def wrapper(
        self: S, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in handler(self, request, context):
                yield item
        except Exception as exc:
            await _abort(context, exc, handler.__name__)

    return wrapper


def page_size(limit: int) -> int:
    """Paging (docs/protocol.md): 0 -> 100, above 1000 -> 1000, negative -> INVALID_ARGUMENT."""
    if limit < 0:
        raise InvalidArgument(f"limit must not be negative (got {limit})")
    return min(limit or DEFAULT_PAGE, MAX_PAGE)


def paginate(items: Sequence[T], size: int, key: Callable[[T], str]) -> tuple[Sequence[T], bool, str]:
    """Cut ``size + 1`` fetched items to a page: (page, has_more, next_start_after)."""
    has_more = len(items) > size
    page = items[:size]
    return page, has_more, key(page[-1]) if has_more and page else ""


def fitting(sizes: Iterable[int], limit: int) -> int:
    """How many leading items of a page, of these serialized sizes, fit in a response of ``limit`` bytes.

    At least one: an item too big on its own could be sent in no page at all. A page cut short ends
    with ``has_more`` set, so that a client goes on from its last item instead of meeting the limit.
    """
    total = _PAGE_FRAMING
    count = 0
    for size in sizes:
        total += size + 6  # the item's tag and length prefix
        if total > limit and count > 0:
            break
        count += 1
    return count


def check_enum(enum: EnumTypeWrapper, value: int, field: str) -> None:
    if value not in _enum_values(enum):
        raise InvalidArgument(f"{field} {value} is not a valid {enum.DESCRIPTOR.name}")


@functools.cache
def _enum_values(enum: EnumTypeWrapper) -> frozenset[int]:
    # EnumTypeWrapper.values() builds a new list on every call, and invocations check two enums each.
    return frozenset(enum.values())


def require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")


__all__ = [
    "Encoded",
    "MalformedRequest",
    "check_enum",
    "fitting",
    "page_size",
    "paginate",
    "refusal",
    "require",
    "server_stream",
    "unary",
]
