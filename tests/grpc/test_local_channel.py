"""The in-process channel a lab's client uses (``spear_sdk._local_channel``) against a real server: the
same calls through it and through a loopback gRPC channel to that server answer alike, and what only a
transport decides (limits, deadlines, cancellation, flow control, closing) behaves as gRPC's does."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from harness import Harness, HarnessFactory, params, poll, value

from spear_sdk._local_channel import WINDOW, LocalChannel
from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc
from spear_sdk.wire import object_pb2 as opb
from spear_sdk.wire import object_pb2_grpc as ogrpc

SYNC = fpb.EXECUTION_MODE_SYNC
LIMIT = 64 << 20
DEADLINE_S = 10.0


def local(h: Harness, *, message_limit: int = LIMIT) -> Harness:
    """The harness's server, reached through a local channel instead of its socket."""
    server = h.server
    channel = LocalChannel(server.rpc_handlers, server.rpc_interceptors, message_limit=message_limit)
    return Harness(server, channel, fgrpc.FunctionServiceStub(channel), ogrpc.ObjectServiceStub(channel))  # type: ignore[arg-type]


async def outcome(call: Awaitable[Any]) -> tuple[str, str]:
    """How a call ended: ("OK", its response's text form) or (status name, details)."""
    try:
        response = await call
    except grpc.aio.AioRpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", str(response)


async def test_the_same_calls_answer_alike_through_both(make_harness: HarnessFactory) -> None:
    h = await make_harness()
    near = local(h)
    task_id = await h.register("workloads:square")
    calls: list[Callable[[Harness], Awaitable[Any]]] = [
        lambda c: c.fn.GetTask(fpb.GetTaskRequest(task_id=task_id)),
        lambda c: c.fn.GetTask(fpb.GetTaskRequest(task_id="no-such-task")),
        lambda c: c.fn.ListTasks(fpb.ListTasksRequest(limit=-1)),
        lambda c: c.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_id="no-such-task")),
        lambda c: c.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_id=task_id, execution_mode=99)),  # type: ignore[arg-type]
        lambda c: c.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(), execution_mode=SYNC)
        ),
        lambda c: c.fn.GetExecutionStatus(fpb.GetExecutionStatusRequest(execution_id="no-such-execution")),
        lambda c: c.obj.GetObject(opb.GetObjectRequest(key="no/such/object")),
        lambda c: c.obj.PutObject(opb.PutObjectRequest(key="", value=b"x")),
    ]
    for index, call in enumerate(calls):
        far, close = await outcome(call(h)), await outcome(call(near))
        if far[0] == "OK":  # (an answer's ids and times differ from call to call)
            assert close[0] == "OK", f"call {index}: {close}"
        else:
            assert close == far, f"call {index}"
    answer = await near.invoke(task_id, 7)
    assert answer.success and value(answer.result) == 49
    failed = await outcome(near.invoke(task_id))
    assert failed[0] == "OK" and "FAILED" in failed[1]


async def test_bytes_that_do_not_parse_and_unknown_methods(shared: Harness) -> None:
    near = local(shared)
    for channel in (shared.channel, near.channel):
        method = channel.unary_unary("/spearlet.FunctionService/GetTask")
        assert (await outcome(method(b"\xff\xff\xff")))[0] == "INVALID_ARGUMENT"
        missing = channel.unary_unary("/spearlet.FunctionService/NoSuchMethod")
        assert (await outcome(missing(b"")))[0] == "UNIMPLEMENTED"


async def test_the_token_is_checked(make_harness: HarnessFactory) -> None:
    h = await make_harness(token="s3cret")
    near = local(h)
    request = fpb.GetHealthRequest()
    refused = await outcome(near.fn.GetHealth(request))
    assert refused == (await outcome(h.fn.GetHealth(request)))
    assert refused[0] == "UNAUTHENTICATED"
    assert (await outcome(near.fn.GetHealth(request, metadata=(("authorization", "Bearer s3cret"),))))[
        0
    ] == "OK"


async def test_messages_over_the_limit_are_refused_both_ways(shared: Harness) -> None:
    near = local(shared, message_limit=4096)
    sent, details = await outcome(
        near.obj.PutObject(opb.PutObjectRequest(key="local/big", value=b"x" * 8192))
    )
    assert sent == "RESOURCE_EXHAUSTED" and "larger than max" in details
    await shared.obj.PutObject(opb.PutObjectRequest(key="local/big", value=b"x" * 8192, overwrite=True))
    fetch = opb.GetObjectRequest(key="local/big", include_value=True)
    received, details = await outcome(near.obj.GetObject(fetch))
    assert received == "RESOURCE_EXHAUSTED" and "larger than max" in details


async def test_a_deadline_ends_the_call_and_its_execution(shared: Harness) -> None:
    near = local(shared)
    task_id = await shared.register("workloads:sleep")
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(30), execution_mode=SYNC)
    code, _ = await outcome(near.fn.InvokeFunction(request, timeout=0.3))
    assert code == "DEADLINE_EXCEEDED"
    await _ends_cancelled(shared, task_id)


async def test_cancelling_the_caller_cancels_the_execution(shared: Harness) -> None:
    near = local(shared)
    task_id = await shared.register("workloads:sleep")
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(30), execution_mode=SYNC)
    caller = asyncio.ensure_future(near.fn.InvokeFunction(request))
    await _running(shared, task_id)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await _ends_cancelled(shared, task_id)


async def _running(h: Harness, task_id: str) -> None:
    async def started() -> bool:
        listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
        return any(e.status == fpb.EXECUTION_STATUS_RUNNING for e in listing.executions)

    await poll(started, what="the execution to run")


async def _ends_cancelled(h: Harness, task_id: str) -> None:
    async def cancelled() -> bool:
        listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
        return bool(listing.executions) and all(
            e.status == fpb.EXECUTION_STATUS_CANCELLED for e in listing.executions
        )

    await poll(cancelled, what="the execution to end cancelled")


async def test_a_stream_comes_whole_and_in_order(shared: Harness) -> None:
    near = local(shared)
    task_id = await shared.register("workloads:count")
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(500))
    messages = [m async for m in near.fn.StreamFunction(request)]
    assert [codec.decode(m.chunk_data) for m in messages[:-1]] == list(range(500))
    assert messages[-1].is_final and messages[-1].status == fpb.EXECUTION_STATUS_COMPLETED


class _Counting:
    """A server stream of numbers that notes how far it has got: what a reader may be ahead of."""

    def __init__(self) -> None:
        self.produced = 0
        self.stubborn_started = asyncio.Event()
        self.released = asyncio.Event()

    async def numbers(self, request: bytes, context: object) -> AsyncIterator[bytes]:
        for n in range(10 * WINDOW):
            self.produced = n + 1
            yield n.to_bytes(4, "little")

    async def written(self, request: bytes, context: Any) -> None:
        for n in range(3):
            await context.write(n.to_bytes(4, "little"))

    async def stubborn(self, request: bytes, context: object) -> bytes:
        """Goes on after its cancellation until the test lets it go."""
        self.stubborn_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await self.released.wait()
        return b"done anyway"

    async def boom(self, request: bytes, context: object) -> bytes:
        raise ValueError("a bug in the servicer")


def _counting_channel(counting: _Counting) -> LocalChannel:
    handler = grpc.method_handlers_generic_handler(
        "test.Counting",
        {
            "Numbers": grpc.unary_stream_rpc_method_handler(counting.numbers),
            "Written": grpc.unary_stream_rpc_method_handler(counting.written),
            "Stubborn": grpc.unary_unary_rpc_method_handler(counting.stubborn),
            "Boom": grpc.unary_unary_rpc_method_handler(counting.boom),
        },
    )
    return LocalChannel([handler], message_limit=LIMIT)


async def test_a_handler_waits_for_a_slow_reader() -> None:
    counting = _Counting()
    call = _counting_channel(counting).unary_stream("/test.Counting/Numbers")(b"")
    read = 0
    async for data in call:
        assert int.from_bytes(data, "little") == read
        read += 1
        for _ in range(3):  # the handler gets turns of the loop to run ahead in
            await asyncio.sleep(0)
        assert counting.produced - read <= WINDOW + 1, "the handler ran ahead of its reader"
    assert read == 10 * WINDOW


async def test_a_handler_may_send_with_write() -> None:
    call = _counting_channel(_Counting()).unary_stream("/test.Counting/Written")(b"")
    assert [int.from_bytes(data, "little") async for data in call] == [0, 1, 2]


async def test_an_exception_a_handler_lets_out_is_unknown() -> None:
    channel = _counting_channel(_Counting())
    code, details = await outcome(channel.unary_unary("/test.Counting/Boom")(b""))
    assert code == "UNKNOWN" and "a bug in the servicer" in details


async def test_closing_the_channel_ends_its_calls(shared: Harness) -> None:
    near = local(shared)
    stream = near.fn.FollowOutput(fpb.FollowOutputRequest(session="local-close"))
    await stream.initial_metadata()
    task_id = await shared.register("workloads:sleep")
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(30), execution_mode=SYNC)
    caller = asyncio.ensure_future(near.fn.InvokeFunction(request))
    await _running(shared, task_id)
    await near.channel.close()
    with pytest.raises(asyncio.CancelledError):  # as a gRPC channel's streams end when it closes
        await stream.read()
    assert (await outcome(caller))[0] == "CANCELLED"
    assert (await outcome(near.fn.GetHealth(fpb.GetHealthRequest())))[0] == "CANCELLED"
    await _ends_cancelled(shared, task_id)


async def test_closing_does_not_wait_long_for_a_handler_that_outlives_its_cancellation() -> None:
    counting = _Counting()
    channel = _counting_channel(counting)
    caller = asyncio.ensure_future(channel.unary_unary("/test.Counting/Stubborn")(b""))
    await asyncio.wait_for(counting.stubborn_started.wait(), DEADLINE_S)
    await asyncio.wait_for(channel.close(), DEADLINE_S)
    assert not counting.released.is_set() and not caller.done(), "close waited for the handler to end"
    counting.released.set()
    assert await asyncio.wait_for(caller, DEADLINE_S) == b"done anyway"
