"""``map`` sends its calls in InvokeBatch requests, and falls back to one invocation per call on a server
without that extension."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

import spear_sdk
from spear_sdk import _core
from spear_sdk.wire import function_pb2, object_pb2


def test_map_runs_every_call_as_an_execution(
    client: spear_sdk.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "BATCH_CALLS", 700)  # several requests, two of them at a time

    @client.function
    def cube_in_batches(i: int) -> int:
        return i**3

    assert cube_in_batches.map(range(2000), progress=False) == [i**3 for i in range(2000)]
    frame = client.executions(task=cube_in_batches)
    assert len(frame) == 2000
    assert set(frame["status"]) == {"completed"}
    assert frame["execution_id"].is_unique


def test_map_arguments_bigger_than_one_request(
    client: spear_sdk.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_core, "BATCH_BYTES", 64 << 10)
    blob = b"x" * (20 << 10)

    @client.function
    def size_in_batches(data: bytes, extra: int = 0) -> int:
        return len(data) + extra

    assert size_in_batches.map([blob] * 12, range(12), progress=False) == [len(blob) + i for i in range(12)]


@pytest.fixture
def without_batches(lab: spear_sdk.Lab) -> Iterator[str]:
    """A proxy to the lab answering every unary call but InvokeBatch (UNIMPLEMENTED, as older servers do).

    It is a thread-pool server forwarding on a blocking channel: a third asyncio loop running grpc.aio in
    this process (beside the lab's and the SDK's) could leave its server's stop hanging."""
    upstream = grpc.insecure_channel(lab.address)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    for module, service in ((function_pb2, "FunctionService"), (object_pb2, "ObjectService")):
        descriptor = module.DESCRIPTOR.services_by_name[service]
        methods = {
            m.name: grpc.unary_unary_rpc_method_handler(
                _forward(upstream, f"/{descriptor.full_name}/{m.name}")
            )
            for m in descriptor.methods
            if not (m.client_streaming or m.server_streaming) and m.name != "InvokeBatch"
        }
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(descriptor.full_name, methods)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        assert server.stop(0).wait(10), "the proxy did not stop within 10 s"
        upstream.close()


def _forward(upstream: grpc.Channel, path: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
    call = upstream.unary_unary(path, request_serializer=None, response_deserializer=None)

    def forward(request: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            response: bytes = call(request)
        except grpc.RpcError as error:
            context.abort(error.code(), error.details() or "")
        return response

    return forward


def test_map_on_a_server_without_batches_invokes_call_by_call(without_batches: str) -> None:
    with spear_sdk.connect(without_batches) as client:

        @client.function
        def halve_one_by_one(i: int) -> float:
            return i / 2

        assert halve_one_by_one.map(range(30), progress=False) == [i / 2 for i in range(30)]
        assert len(client.executions(task=halve_one_by_one)) == 30
