"""Completions pushed and submits pipelined, against a real spearlet whose RPCs are counted on the server.

The server runs on the SDK's runtime loop (as a lab does) with a server interceptor that counts every RPC
by method and can drop WatchExecutions streams, the way a network would.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from spearlet.app import SpearletServer
from spearlet.config import Config

import spear_sdk
from spear_sdk._runtime import get_runtime
from spear_sdk.errors import InvalidArgument, NotFound, RemoteFunctionError


class Recorder(grpc.aio.ServerInterceptor):
    """Counts calls by method; drops the next ``drops`` WatchExecutions streams after their first answer."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.drops = 0
        self.dropped = 0

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        method = details.method.rsplit("/", 1)[-1]
        self.calls[method] += 1
        handler = await continuation(details)
        if method != "WatchExecutions" or self.drops <= 0:
            return handler
        self.drops -= 1
        inner = handler.stream_stream

        async def dropping(requests: Any, context: Any) -> AsyncIterator[Any]:
            async for message in inner(requests, context):
                yield message
                self.dropped += 1
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the stream dropped")

        return grpc.stream_stream_rpc_method_handler(
            dropping,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class Served:
    def __init__(self, server: SpearletServer, recorder: Recorder) -> None:
        self.server = server
        self.recorder = recorder
        self.client = spear_sdk.Client(server.address)


def _serve(**options: Any) -> Iterator[Served]:
    runtime = get_runtime()
    recorder = Recorder()
    server = SpearletServer(Config(**{"port": 0, "store": "memory://", **options}), [recorder])
    runtime.run(server.start())
    served = Served(server, recorder)
    try:
        yield served
    finally:
        served.client.close()
        runtime.run(server.stop(0))


@pytest.fixture
def served() -> Iterator[Served]:
    yield from _serve(max_concurrent=2)


def square(x: int) -> int:
    return x * x


def nap(x: float) -> float:

    time.sleep(x)
    return x


def test_completions_are_pushed_not_polled(served: Served) -> None:
    f = served.client.function(square)
    executions = [f.submit(i) for i in range(50)]
    assert executions[0].result() == 0
    assert [e.result() for e in executions] == [i * i for i in range(50)]
    more = [f.submit(i) for i in range(50)]
    assert sorted(e.result() for e in spear_sdk.as_completed(more)) == sorted(i * i for i in range(50))
    done, not_done = spear_sdk.wait([f.submit(i) for i in range(20)])
    assert len(done) == 20 and not not_done
    assert all(e.done() for e in done)
    calls = served.recorder.calls
    assert calls["GetExecutionStatus"] == 0, calls
    assert calls["WatchExecutions"] == 1, calls  # one stream for all of them
    assert calls["InvokeFunction"] == 0, calls  # submits went in InvokeMany requests
    assert 1 <= calls["InvokeMany"] <= 120, calls


def test_a_result_arrives_as_soon_as_the_execution_ends(served: Served) -> None:
    f = served.client.function(nap)
    execution = f.submit(0.3)
    assert execution.done() is False
    assert execution.result() == 0.3
    state = execution.info()  # asked now: the stored end
    assert state.completed_at is not None
    assert served.recorder.calls["GetExecutionStatus"] == 1  # only info() asked


def test_submit_errors_surface_from_the_execution(served: Served) -> None:
    client = served.client
    unknown = client.submit("no-such-task", 1)
    with pytest.raises(NotFound, match="no-such-task"):
        unknown.result()
    assert isinstance(unknown.exception(), NotFound)
    assert unknown.done()
    with pytest.raises(NotFound):
        _ = unknown.execution_id

    f = client.function(square)
    unsendable = f.submit(threading.Lock())
    assert isinstance(unsendable.exception(), InvalidArgument)
    raised = f.submit("text")
    assert isinstance(raised.exception(), RemoteFunctionError)
    # the calls after a refused one are untouched
    assert f.submit(7).result() == 49


def test_a_full_queue_surfaces_from_the_executions_it_refused() -> None:
    for served in _serve(max_concurrent=1, max_queued=2):
        f = served.client.function(nap)
        executions = [f.submit(0.2) for _ in range(6)]
        errors = [e.exception() for e in executions]
        refused = [e for e in errors if isinstance(e, spear_sdk.errors.ResourceExhausted)]
        assert refused, errors
        assert all(e.retry_after is not None for e in refused)
        assert sum(e is None for e in errors) == 3  # one running, two queued


def test_submits_from_one_thread_keep_their_order(served: Served) -> None:
    f = served.client.function(square)
    executions = [f.submit(i) for i in range(300)]
    ids = [e.execution_id for e in executions]
    assert ids == sorted(ids)  # ids are time-ordered: admitted in the order submitted
    assert len(set(ids)) == 300


def test_a_dropped_watch_stream_resumes_with_nothing_lost(served: Served) -> None:
    served.recorder.drops = 3
    f = served.client.function(nap)
    executions = [f.submit(0.02) for _ in range(40)]
    finished = list(spear_sdk.as_completed(executions, timeout=60))
    assert sorted(map(id, finished)) == sorted(map(id, executions))
    assert all(e.result() == 0.02 for e in executions)
    assert served.recorder.dropped == 3
    assert served.recorder.calls["WatchExecutions"] == 4
    assert served.recorder.calls["GetExecutionStatus"] == 0


def test_a_server_gone_for_good_is_unavailable_to_its_waiters() -> None:
    for served in _serve(max_concurrent=1):
        f = served.client.function(nap)
        execution, queued = f.submit(30), f.submit(30)
        assert execution.done() is False  # the stream is up
        with spear_sdk.Client(served.server.address) as other:
            unwatched = other.execution(queued.execution_id)  # known here, but awaited by nobody yet
            get_runtime().run(served.server.stop(0))
            with pytest.raises(spear_sdk.errors.ExecutionCancelled):  # its end, pushed as the server stopped
                execution.result(timeout=60)
            with pytest.raises(spear_sdk.errors.ExecutionCancelled):  # awaited since it was accepted
                queued.result(timeout=60)
            with pytest.raises(spear_sdk.errors.Unavailable):  # no server to ask: no wait forever
                unwatched.result(timeout=60)


@pytest.mark.timeout(300)
def test_as_completed_over_100_000_executions(monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread executor (quick calls, so that 100 000 take a reasonable time on 2 cores) runs them in
    # this process, whose environment a call's SPEAR_* variables then reach: restored afterwards.
    for name in ("SPEAR_ADDRESS", "SPEAR_TOKEN", "SPEAR_TLS_CA"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for served in _serve(executor="thread", max_concurrent=2, max_queued=200_000):
        f = served.client.function(square)
        executions = [f.submit(i) for i in range(100_000)]
        seen = 0
        total = 0
        for execution in spear_sdk.as_completed(executions, timeout=280):
            seen += 1
            total += execution.result()
        assert seen == 100_000
        assert total == sum(i * i for i in range(100_000))
        calls = served.recorder.calls
        assert calls["GetExecutionStatus"] == 0
        assert calls["WatchExecutions"] == 1
        assert calls["InvokeMany"] <= 5_000
