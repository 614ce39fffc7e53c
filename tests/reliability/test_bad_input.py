"""R4: random and malformed requests to every RPC, the standard health and reflection services included:
never UNKNOWN or INTERNAL, never a hang, every error says why, the server keeps serving, and what was
stored before is unchanged after (no RPC answers ``UNKNOWN`` or ``INTERNAL``, none loses stored data).

Hypothesis draws the requests (see :mod:`fuzzing`) and runs in a worker thread with a blocking gRPC
client, while the server under test runs on the test's event loop. The server has small limits (64 KiB
objects, 256 KiB messages) so that values over them are cheap to make.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from fuzzing import raw_requests, requests
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from harness import Harness, params, start_harness, stop_harness
from hypothesis import given, settings
from hypothesis import strategies as st
from services import METHODS, path
from soak import SOAK, Record, scale

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

pytestmark = pytest.mark.timeout(3600 if SOAK else 120)

EXAMPLES = scale(150, 5000)
RAW_EXAMPLES = scale(100, 3000)
#: Statuses that would mean a bug (UNKNOWN, INTERNAL) or a hang (DEADLINE_EXCEEDED).
NEVER = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DEADLINE_EXCEEDED}
Outcome = tuple[grpc.StatusCode, str]


@dataclass
class Target:
    harness: Harness
    seeded_task: str
    seeded_executions: list[str]
    seeded_objects: list[str]

    async def snapshot(self) -> list[object]:
        """Everything seeded, as the server reports it."""
        fn, obj = self.harness.fn, self.harness.obj
        taken: list[object] = [
            await fn.GetTask(fpb.GetTaskRequest(task_id=self.seeded_task, include_executions=True))
        ]
        for execution_id in self.seeded_executions:
            taken.append(
                await fn.GetExecutionStatus(
                    fpb.GetExecutionStatusRequest(
                        execution_id=execution_id, include_result=True, include_logs=True
                    )
                )
            )
        for key in self.seeded_objects:
            taken.append(await obj.GetObject(opb.GetObjectRequest(key=key, include_value=True)))
        return taken

    async def still_sound(self) -> None:
        """Serving, healthy, and no execution failed inside the engine."""
        fn = self.harness.fn
        assert (await fn.GetHealth(fpb.GetHealthRequest())).status in ("healthy", "degraded")
        after = ""
        while True:
            page = await fn.ListExecutions(fpb.ListExecutionsRequest(limit=1000, start_after=after))
            assert not [e for e in page.executions if e.error_code == "INTERNAL"], page
            if not page.has_more:
                return
            after = page.next_start_after


@pytest_asyncio.fixture(scope="module")
async def target(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Target]:
    db = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    h = await start_harness(
        store=f"sqlite:///{db}",
        max_object_bytes=64 << 10,
        max_message_bytes=256 << 10,
        default_timeout_ms=2000,  # a backstop: what the fuzzer may run is quick anyway
    )
    registered = await h.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="seeded-square-7f3a",
            artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:square"),
        )
    )
    task_id = registered.task.task_id
    executions = [(await h.invoke(task_id, n)).execution_id for n in range(3)]
    executions.append((await h.invoke(await h.register("workloads:fail"), "seeded")).execution_id)
    objects = ["seeded/7f3a/plain", "seeded/7f3a/pinned"]
    for key in objects:
        await h.obj.PutObject(opb.PutObjectRequest(key=key, value=key.encode() * 100, metadata={"k": key}))
    await h.obj.PinObject(opb.PinObjectRequest(key=objects[1]))
    await h.obj.AddObjectRef(opb.AddObjectRefRequest(key=objects[1], count=4))
    yield Target(h, task_id, executions, objects)
    await stop_harness(h)


@pytest.fixture(autouse=True)
def _no_executables_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Belt and braces: a process artifact the fuzzer names can find no program to run."""
    monkeypatch.setenv("PATH", str(tmp_path))


@pytest.mark.parametrize("name", METHODS)
async def test_random_requests(target: Target, name: str, figures: Record) -> None:
    method = METHODS[name]
    request = requests(method.input_type)
    strategy = st.lists(request, min_size=1, max_size=3) if method.client_streaming else request
    before = await target.snapshot()
    outcomes = await asyncio.to_thread(fuzz, target.harness.server.address, method, strategy, EXAMPLES, False)
    assert await target.snapshot() == before
    await target.still_sound()
    figures(f"{name}: statuses", _summary(outcomes))


@pytest.mark.parametrize("name", METHODS)
async def test_undecodable_bytes(target: Target, name: str) -> None:
    method = METHODS[name]
    strategy = st.lists(raw_requests(), min_size=1, max_size=3) if method.client_streaming else raw_requests()
    before = await target.snapshot()
    await asyncio.to_thread(fuzz, target.harness.server.address, method, strategy, RAW_EXAMPLES, True)
    assert await target.snapshot() == before
    await target.still_sound()


async def test_requests_over_the_message_limit_are_resource_exhausted(target: Target) -> None:
    fn, obj = target.harness.fn, target.harness.obj
    huge = "x" * (300 << 10)
    for call in (
        fn.GetTask(fpb.GetTaskRequest(task_id=huge)),
        obj.PutObject(opb.PutObjectRequest(key="over", value=b"\0" * (300 << 10))),
        fn.InvokeFunction(fpb.InvokeFunctionRequest(task_id=target.seeded_task, parameters=params(huge))),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc.value
    with pytest.raises(grpc.aio.AioRpcError) as over_object_limit:
        await obj.PutObject(opb.PutObjectRequest(key="over", value=b"\0" * (65 << 10)))
    assert over_object_limit.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over the limit" in (over_object_limit.value.details() or "")
    assert not (await obj.GetObject(opb.GetObjectRequest(key="over"))).found


def fuzz(address: str, method: MethodDescriptor, strategy: Any, examples: int, raw: bool) -> Counter[str]:
    """Send ``examples`` requests drawn from ``strategy``; fail on a status that means a bug or a hang."""
    outcomes: Counter[str] = Counter()
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", -1)]) as channel:
        call = _caller(channel, method, raw)

        @settings(settings.get_profile("reliability"), max_examples=examples)
        @given(strategy)
        def check(request: Any) -> None:
            code, details = call(request)
            outcomes[code.name] += 1
            assert code not in NEVER, f"{method.full_name}: {code.name}: {details}\nrequest: {request!r}"
            assert code == grpc.StatusCode.OK or details, f"{method.full_name}: {code.name} without a reason"

        check()
    return outcomes


def _caller(channel: grpc.Channel, method: MethodDescriptor, raw: bool) -> Callable[[Any], Outcome]:
    route = path(method)
    request_type = message_factory.GetMessageClass(method.input_type)
    response_type = message_factory.GetMessageClass(method.output_type)
    coding: dict[str, Any] = {"response_deserializer": response_type.FromString}
    if not raw:
        coding["request_serializer"] = request_type.SerializeToString
    timeout = 20
    if method.client_streaming:
        bidi = channel.stream_stream(route, **coding)
        return lambda requests: _outcome(lambda: list(bidi(iter(requests), timeout=timeout)))
    if method.server_streaming:
        stream = channel.unary_stream(route, **coding)
        # Subscriptions answer, then wait for changes (output): the first answer is enough.
        if method.name in ("Watch", "FollowOutput"):
            return lambda request: _outcome(lambda: _first(stream(request, timeout=timeout)))
        return lambda request: _outcome(lambda: list(stream(request, timeout=timeout)))
    unary = channel.unary_unary(route, **coding)
    return lambda request: _outcome(lambda: unary(request, timeout=timeout))


def _first(call: Any) -> None:
    next(call)
    call.cancel()


def _outcome(send: Callable[[], object]) -> Outcome:
    try:
        send()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


def _summary(outcomes: Counter[str]) -> str:
    return ", ".join(f"{code} {n}" for code, n in outcomes.most_common())
