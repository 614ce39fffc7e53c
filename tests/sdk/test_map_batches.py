"""``map`` sends its calls in InvokeBatch requests, and falls back to one invocation per call on a server
without that extension."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

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
    """A proxy to the lab answering every unary call but InvokeBatch (UNIMPLEMENTED, as older servers do)."""
    started = threading.Event()
    address: list[str] = []
    servers: list[grpc.aio.Server] = []
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        upstream = grpc.aio.insecure_channel(lab.address)
        server = grpc.aio.server()
        for module, service in ((function_pb2, "FunctionService"), (object_pb2, "ObjectService")):
            descriptor = module.DESCRIPTOR.services_by_name[service]
            methods = {
                m.name: grpc.unary_unary_rpc_method_handler(
                    _forward(upstream, f"/{descriptor.full_name}/{m.name}")
                )
                for m in descriptor.methods
                if not (m.client_streaming or m.server_streaming)
            }
            server.add_generic_rpc_handlers(
                [grpc.method_handlers_generic_handler(descriptor.full_name, methods)]
            )
        address.append(f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}")
        servers.append(server)
        await server.start()
        started.set()
        await server.wait_for_termination()
        await upstream.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield address[0]
    asyncio.run_coroutine_threadsafe(servers[0].stop(0), loop).result(10)
    thread.join(10)
    loop.close()


def _forward(upstream: grpc.aio.Channel, path: str) -> Callable[[bytes, Any], Awaitable[bytes]]:
    call = upstream.unary_unary(path)

    async def forward(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        response: bytes = await call(request)
        return response

    return forward


def test_map_on_a_server_without_batches_invokes_call_by_call(without_batches: str) -> None:
    with spear_sdk.connect(without_batches) as client:

        @client.function
        def halve_one_by_one(i: int) -> float:
            return i / 2

        assert halve_one_by_one.map(range(30), progress=False) == [i / 2 for i in range(30)]
        assert len(client.executions(task=halve_one_by_one)) == 30
