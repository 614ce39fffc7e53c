"""Every service the server registers, and every method of them, for tests that must cover all RPCs."""

from __future__ import annotations

import grpc
from google.protobuf.descriptor import MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

SERVICES = (
    fpb.DESCRIPTOR.services_by_name["FunctionService"],
    opb.DESCRIPTOR.services_by_name["ObjectService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)
#: ``"Service.Method"`` -> its descriptor.
METHODS: dict[str, MethodDescriptor] = {f"{s.name}.{m.name}": m for s in SERVICES for m in s.methods}


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


async def call_raw(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    data: bytes,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.StatusCode:
    """Send ``data`` as the request (as the only one, for a client stream); the status of the call.

    A server stream is read up to its first message: enough to know it was let through.
    """
    route = path(method)
    try:
        if method.client_streaming:
            bidi = channel.stream_stream(route)(iter((data,)), metadata=metadata, timeout=10)
            await bidi.read()
            bidi.cancel()
        elif method.server_streaming:
            stream = channel.unary_stream(route)(data, metadata=metadata, timeout=10)
            await stream.read()
            stream.cancel()
        else:
            await channel.unary_unary(route)(data, metadata=metadata, timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK
