"""A real spearlet in the test process on loopback gRPC (port 0), and small helpers to drive it.

The fixtures are registered for every test directory by ``tests/conftest.py``; test modules import the
helpers from here (``from harness import ...``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import pytest_asyncio
from spearlet.app import SpearletServer
from spearlet.config import Config

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc
from spear_sdk.wire import object_pb2_grpc as ogrpc

TERMINAL = {
    fpb.EXECUTION_STATUS_COMPLETED,
    fpb.EXECUTION_STATUS_FAILED,
    fpb.EXECUTION_STATUS_CANCELLED,
    fpb.EXECUTION_STATUS_TIMEOUT,
}
_names = itertools.count()


@dataclass
class Harness:
    server: SpearletServer
    channel: grpc.aio.Channel
    fn: fgrpc.FunctionServiceStub
    obj: ogrpc.ObjectServiceStub

    async def register(
        self, location: str, *, artifact_type: str = "python", name: str = "", **spec: Any
    ) -> str:
        """Register a task under a fresh name; return its id."""
        name = name or f"{location.rsplit(':', 1)[-1]}-{next(_names)}"
        response = await self.fn.RegisterTask(
            fpb.RegisterTaskRequest(
                task_name=name,
                artifact_spec=fpb.ArtifactSpec(artifact_type=artifact_type, location=location, **spec),
            )
        )
        return response.task.task_id

    async def invoke(
        self,
        task_id: str,
        *args: object,
        mode: int = fpb.EXECUTION_MODE_SYNC,
        function_name: str = "",
        context: fpb.ExecutionContext | None = None,
        **kwargs: object,
    ) -> fpb.InvokeFunctionResponse:
        return await self.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_id=task_id,
                function_name=function_name,
                parameters=params(*args, **kwargs),
                execution_mode=mode,  # type: ignore[arg-type]
                context=context,
            )
        )

    async def status(self, execution_id: str, **flags: bool) -> fpb.GetExecutionStatusResponse:
        return await self.fn.GetExecutionStatus(
            fpb.GetExecutionStatusRequest(execution_id=execution_id, **flags)
        )

    async def wait_status(
        self,
        execution_id: str,
        statuses: set[int] | frozenset[int] = frozenset(TERMINAL),
        timeout: float = 20,
    ) -> fpb.GetExecutionStatusResponse:
        """Poll until the execution reaches one of ``statuses`` (terminal by default), with a deadline."""
        response = await self.status(execution_id, include_result=True, include_logs=True)
        deadline = time.monotonic() + timeout
        while response.result.status not in statuses:
            assert time.monotonic() < deadline, f"{execution_id} stuck in {response.result.status}"
            await asyncio.sleep(0.01)
            response = await self.status(execution_id, include_result=True, include_logs=True)
        return response


def params(*args: object, **kwargs: object) -> list[fpb.FunctionParameter]:
    out = [fpb.FunctionParameter(value=codec.encode(a)) for a in args]
    out += [fpb.FunctionParameter(name=k, value=codec.encode(v)) for k, v in kwargs.items()]
    return out


def value(result: fpb.ExecutionResult) -> object:
    return codec.decode(result.result)


async def expect_code(call: Awaitable[object], code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """Await ``call`` and check that it fails with ``code`` and says why."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == code, f"{info.value.code()}: {info.value.details()}"
    assert info.value.details(), "an error status should say why"
    return info.value


async def pages(method: Callable[[Any], Awaitable[Any]], request: Any, most: int = 10_000) -> list[Any]:
    """Every page of a listing RPC, following ``next_start_after`` (and failing if it never ends)."""
    found = []
    while True:
        page = await method(request)
        found.append(page)
        if not page.has_more:
            return found
        assert len(found) < most, "pagination does not end"
        request.start_after = page.next_start_after


async def poll(check: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


HarnessFactory = Callable[..., Awaitable[Harness]]


async def start_harness(**config: Any) -> Harness:
    """Start a server (loopback, memory store, process executor, 2 slots unless told otherwise)."""
    config.setdefault("host", "127.0.0.1")
    config.setdefault("store", "memory://")
    config.setdefault("max_concurrent", 2)
    server = SpearletServer(Config(port=0, **config))
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Harness(server, channel, fgrpc.FunctionServiceStub(channel), ogrpc.ObjectServiceStub(channel))


async def stop_harness(harness: Harness) -> None:
    await harness.channel.close()
    await harness.server.stop(0)


@pytest_asyncio.fixture
async def make_harness() -> AsyncIterator[HarnessFactory]:
    """Start a dedicated server per call (see :func:`start_harness`), stopped after the test."""
    started: list[Harness] = []

    async def make(**config: Any) -> Harness:
        harness = await start_harness(**config)
        started.append(harness)
        return harness

    yield make
    for harness in started:
        await stop_harness(harness)


@pytest_asyncio.fixture(scope="session")
async def shared() -> AsyncIterator[Harness]:
    """One server for the tests that need no isolation (they use their own task names)."""
    harness = await start_harness()
    yield harness
    await stop_harness(harness)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
