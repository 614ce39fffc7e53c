"""What every RPC handler shares: error-to-status mapping, pagination and enum checks."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import ModuleType
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import DecodeError, Message

from spear_sdk.wire.errors import InvalidArgument, SpearError

from .store import StoreError

log = logging.getLogger(__name__)

DEFAULT_PAGE = 100
MAX_PAGE = 1000

S = TypeVar("S")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
T = TypeVar("T")


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


def service_handler(
    servicer: object, service: ServiceDescriptor, module: ModuleType
) -> grpc.GenericRpcHandler[Any, Any]:
    """The servicer's methods as one handler, with requests parsed by :func:`_lenient`."""
    handlers = {}
    for method in service.methods:
        request = getattr(module, method.input_type.name)
        response = getattr(module, method.output_type.name)
        factory = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=_lenient(request),
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _check_parsed(request: object) -> None:
    if isinstance(request, MalformedRequest):
        raise InvalidArgument(request.reason)


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
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
            _check_parsed(request)
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
            _check_parsed(request)
            async for item in handler(self, request, context):
                yield item
        except Exception as exc:
            await _abort(context, exc, handler.__name__)

    return wrapper


def page_size(limit: int) -> int:
    """SPEC §3 pagination: 0 -> 100, above 1000 -> 1000, negative -> INVALID_ARGUMENT."""
    if limit < 0:
        raise InvalidArgument(f"limit must not be negative (got {limit})")
    return min(limit or DEFAULT_PAGE, MAX_PAGE)


def paginate(items: Sequence[T], size: int, key: Callable[[T], str]) -> tuple[Sequence[T], bool, str]:
    """Cut ``size + 1`` fetched items to a page: (page, has_more, next_start_after)."""
    has_more = len(items) > size
    page = items[:size]
    return page, has_more, key(page[-1]) if has_more and page else ""


def check_enum(enum: EnumTypeWrapper, value: int, field: str) -> None:
    if value not in enum.values():
        raise InvalidArgument(f"{field} {value} is not a valid {enum.DESCRIPTOR.name}")


def require(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required")


__all__ = ["MalformedRequest", "check_enum", "page_size", "paginate", "require", "server_stream", "unary"]
