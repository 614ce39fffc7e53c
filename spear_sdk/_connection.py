"""One gRPC channel to a spearlet and the two service stubs on it; RPC failures become typed errors.

Everything here runs on the runtime loop (see ``_runtime``): the channel is created there, lazily, on the
first call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from .wire import function_pb2_grpc, object_pb2_grpc
from .wire.errors import RETRY_AFTER_MS, ResourceExhausted, SpearError, Unavailable, error_for_status

#: Large enough for the server's default object limit (64 MiB, ``--max-object-bytes``) plus framing.
MESSAGE_LIMIT = 68 << 20

TlsOption = bool | str | bytes | grpc.ChannelCredentials | None


class Connection:
    """One spearlet's address, credentials and ``grpc.aio`` channel, with the two service stubs on it.

    The channel opens lazily on the first call, on the loop of that call: always the runtime loop, which
    owns it until :meth:`close`. :meth:`call` and :meth:`stream` are the only places an RPC is awaited, and
    :meth:`error` the only place a gRPC failure becomes a :class:`SpearError`: the bearer token is added,
    ``UNAVAILABLE`` names the address, ``RESOURCE_EXHAUSTED`` carries the server's retry hint.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: TlsOption = None,
        message_limit: int | None = None,
    ) -> None:
        if not address or not isinstance(address, str):
            raise ValueError(f"address must be 'host:port', not {address!r}")
        scheme, sep, rest = address.partition("://")
        if sep:
            raise ValueError(
                f"an address is 'host:port' without a scheme: {rest.rstrip('/')!r}, not {address!r} "
                f"(gRPC is not {scheme}; for TLS pass tls=...)"
            )
        self.address = address
        #: Why this connection must not be used again (its lab is gone), for the error of every call.
        self.retired: str | None = None
        #: The channel's message limit both ways (a lab's client takes its server's).
        self.message_limit = message_limit or MESSAGE_LIMIT
        self.secure = bool(tls)
        self._credentials = _channel_credentials(tls)
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel: grpc.aio.Channel | None = None
        #: Makes the channel instead of gRPC's (a lab's client calls its server in this process directly).
        self._make_channel: Callable[[], Any] | None = None
        self._functions: function_pb2_grpc.FunctionServiceStub | None = None
        self._objects: object_pb2_grpc.ObjectServiceStub | None = None
        self._before_close: list[Callable[[], Awaitable[None]]] = []

    def retire(self, why: str) -> None:
        """From now on every call fails at once with ``Unavailable(why)``."""
        self.retired = why

    def open_with(self, make_channel: Callable[[], Any]) -> None:
        """Use the channel ``make_channel`` makes, on the runtime loop, in place of a gRPC channel to
        :attr:`address` (a :class:`~._local_channel.LocalChannel`)."""
        self._make_channel = make_channel

    def _open(self) -> None:
        if self.retired is not None:
            raise Unavailable(self.retired)
        self._channel = self._make_channel() if self._make_channel is not None else self._grpc_channel()
        self._functions = function_pb2_grpc.FunctionServiceStub(self._channel)
        self._objects = object_pb2_grpc.ObjectServiceStub(self._channel)

    def _grpc_channel(self) -> grpc.aio.Channel:
        options = [
            ("grpc.max_receive_message_length", self.message_limit),
            ("grpc.max_send_message_length", self.message_limit),
        ]
        if self._credentials is not None:
            return grpc.aio.secure_channel(self.address, self._credentials, options=options)
        return grpc.aio.insecure_channel(self.address, options=options)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """What every call sends (the bearer token, when there is one)."""
        return self._metadata

    def before_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`close` await ``closer`` first (a stream that must not outlive the channel)."""
        self._before_close.append(closer)

    @property
    def functions(self) -> function_pb2_grpc.FunctionServiceStub:
        if self._functions is None:
            self._open()
        assert self._functions is not None
        return self._functions

    @property
    def objects(self) -> object_pb2_grpc.ObjectServiceStub:
        if self._objects is None:
            self._open()
        assert self._objects is not None
        return self._objects

    async def call(self, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        """Await one unary RPC (``method`` is a stub attribute); a failure raises a :class:`SpearError`."""
        try:
            return await method(request, metadata=self._metadata, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc) from None

    async def call_stream_unary(self, method: Any, requests: AsyncIterator[Any]) -> Any:
        """Await one client-streaming RPC fed from ``requests``."""
        try:
            return await method(requests, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc) from None

    async def stream(self, method: Any, request: Any) -> AsyncIterator[Any]:
        """Iterate a server stream; leaving the loop early cancels the call (and the remote execution)."""
        call = method(request, metadata=self._metadata)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise self.error(exc) from None
        finally:
            call.cancel()

    def error(self, exc: grpc.aio.AioRpcError) -> SpearError:
        code, details = exc.code(), exc.details() or ""
        if code == grpc.StatusCode.UNAVAILABLE:
            return Unavailable(f"cannot reach the spearlet at {self.address}: {details}")
        error = error_for_status(code, details or code.name)
        if isinstance(error, ResourceExhausted):
            error.retry_after = _retry_after(exc.trailing_metadata())
        return error

    async def close(self) -> None:
        for closer in self._before_close:
            await closer()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._functions = self._objects = None
            await channel.close(None)


def _retry_after(metadata: Any) -> float | None:
    """Seconds the server suggests waiting before trying again, when it said so."""
    for key, value in metadata or ():
        if key == RETRY_AFTER_MS:
            try:
                return int(value) / 1000
            except ValueError:
                return None
    return None


def _channel_credentials(tls: TlsOption) -> grpc.ChannelCredentials | None:
    """``True``: the system's roots; a path or PEM bytes: that CA certificate; credentials as given."""
    if tls is None or tls is False:
        return None
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if tls is True:
        return grpc.ssl_channel_credentials()
    pem = tls if isinstance(tls, bytes) else Path(tls).read_bytes()
    return grpc.ssl_channel_credentials(root_certificates=pem)
