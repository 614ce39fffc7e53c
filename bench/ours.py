"""Our side of the figures, through public interfaces only: the generated stubs of ``spear_sdk.wire``
against a ``spearlet serve`` child, and the SDK's public API (``connect``, ``function``, ``map``,
``executions``)."""

from __future__ import annotations

import asyncio
import operator
import time

import grpc

import spear_sdk
from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc

from . import workloads
from .measure import WARMUP, inflight_rate, latencies_ms

TRIVIAL = fpb.ArtifactSpec(artifact_type="python", location="operator:neg")
COUNTER = fpb.ArtifactSpec(artifact_type="python", location=f"{workloads.MODULE}:count")
TERMINAL = {
    fpb.EXECUTION_STATUS_COMPLETED,
    fpb.EXECUTION_STATUS_FAILED,
    fpb.EXECUTION_STATUS_CANCELLED,
    fpb.EXECUTION_STATUS_TIMEOUT,
}
_POLL_S = 0.002
_PAGE = 1000


class Spear:
    """A raw-stub client of a spearlet: the same grpc.aio client code the baselines use."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self.stub = fgrpc.FunctionServiceStub(self._channel)
        self._invoke: fpb.InvokeFunctionRequest | None = None
        self._stream_task = ""

    async def setup(self) -> None:
        trivial = await self.stub.RegisterTask(
            fpb.RegisterTaskRequest(task_name="bench-neg", artifact_spec=TRIVIAL)
        )
        counter = await self.stub.RegisterTask(
            fpb.RegisterTaskRequest(task_name="bench-count", artifact_spec=COUNTER)
        )
        self._invoke = fpb.InvokeFunctionRequest(
            task_id=trivial.task.task_id,
            parameters=[fpb.FunctionParameter(value=codec.encode(3))],
            execution_mode=fpb.EXECUTION_MODE_SYNC,
        )
        self._stream_task = counter.task.task_id

    @property
    def invoke_request(self) -> fpb.InvokeFunctionRequest:
        assert self._invoke is not None, "setup() first"
        return self._invoke

    async def _invoke_sync(self) -> None:
        response = await self.stub.InvokeFunction(self.invoke_request)
        assert response.success, response.message

    async def invoke_samples(self, count: int) -> list[float]:
        """P1/P2: sync invokes of ``operator.neg`` one after another (ms each)."""
        return await latencies_ms(self._invoke_sync, count)

    async def sync_inflight_rate(self, count: int, inflight: int) -> float:
        """Sync-mode invokes with ``inflight`` outstanding: each call's answer is its result."""
        return await inflight_rate(self._invoke_sync, count, inflight)

    async def async_rate(self, count: int, inflight: int) -> float:
        """P3: ASYNC-mode invokes, ``inflight`` outstanding, until ``count`` executions have *completed*.

        Completion is read from the server: the last execution's status, then health details until
        nothing is running or pending.
        """
        request = fpb.InvokeFunctionRequest()
        request.CopyFrom(self.invoke_request)
        request.execution_mode = fpb.EXECUTION_MODE_ASYNC
        last: list[str] = [""]

        async def submit() -> None:
            response = await self.stub.InvokeFunction(request)
            assert response.success, response.message
            last[0] = response.execution_id

        for _ in range(WARMUP):
            await submit()
        await self._drain(last[0])
        start = time.perf_counter()
        await inflight_rate(submit, count, inflight, warmup=0)
        await self._drain(last[0])
        return count / (time.perf_counter() - start)

    async def _drain(self, execution_id: str) -> None:
        status = fpb.GetExecutionStatusRequest(execution_id=execution_id)
        while True:
            if (await self.stub.GetExecutionStatus(status)).result.status in TERMINAL:
                break
            await asyncio.sleep(_POLL_S)
        health = fpb.GetHealthRequest(include_details=True)
        while True:
            details = (await self.stub.GetHealth(health)).details
            if details.running_executions == 0 and details.pending_executions == 0:
                return
            await asyncio.sleep(_POLL_S)

    async def stream_rate(self, count: int) -> float:
        """P5: chunks per second of one StreamFunction call of a generator yielding ``count`` ints, start of
        call to final message (after a short unrecorded stream)."""
        async for _ in self.stub.StreamFunction(self._stream_request(10)):
            pass
        request = self._stream_request(count)
        start = time.perf_counter()
        chunks = 0
        async for message in self.stub.StreamFunction(request):
            if message.is_final:
                assert message.status == fpb.EXECUTION_STATUS_COMPLETED, message.error_message
                break
            chunks += 1
        elapsed = time.perf_counter() - start
        assert chunks == count, (chunks, count)
        return count / elapsed

    def _stream_request(self, count: int) -> fpb.InvokeFunctionRequest:
        return fpb.InvokeFunctionRequest(
            task_id=self._stream_task,
            parameters=[fpb.FunctionParameter(value=codec.encode(count))],
            execution_mode=fpb.EXECUTION_MODE_STREAM,
        )

    async def sample_chunk(self) -> bytes:
        """The bytes of a real stream chunk message (the value 1000): the bare stream sends exactly these."""
        async for message in self.stub.StreamFunction(self._stream_request(1001)):
            if not message.is_final and codec.decode(message.chunk_data) == 1000:
                chunk: bytes = message.SerializeToString()
                return chunk
        raise AssertionError("the stream sent no such chunk")

    async def total_executions(self) -> int:
        stats = await self.stub.GetStats(fpb.GetStatsRequest())
        return int(stats.service_stats.total_executions)

    async def all_infos(self, limit: int) -> list[fpb.ExecutionInfo]:
        """The first ``limit`` ExecutionInfos the server lists, page by page (the DataFrame floor's input)."""
        infos: list[fpb.ExecutionInfo] = []
        after = ""
        while len(infos) < limit:
            request = fpb.ListExecutionsRequest(limit=min(_PAGE, limit - len(infos)), start_after=after)
            page = await self.stub.ListExecutions(request)
            infos.extend(page.executions)
            if not page.has_more:
                break
            after = page.next_start_after
        return infos

    async def close(self) -> None:
        await self._channel.close(None)


class SdkCalls:
    """What a notebook user's calls cost through the SDK's public surface, on one client (a lab's, or
    ``connect()``'s to a served spearlet): the S rows."""

    def __init__(self, client: spear_sdk.Client) -> None:
        self.client = client
        self.negate = self.client.function(operator.neg, name="bench-sdk-neg")
        self.negate(1)
        self.nap = self.client.function(time.sleep, name="bench-sdk-nap")
        self.nap(0)

    def call_samples(self, count: int) -> list[float]:
        """S1: milliseconds of each of ``count`` sequential ``f(x)``."""
        samples = []
        negate = self.negate
        for x in range(count):
            start = time.perf_counter()
            negate(x)
            samples.append((time.perf_counter() - start) * 1000)
        return samples

    def push_samples(self, count: int) -> list[float]:
        """S5: milliseconds from an execution's end, as the server recorded it, to the caller blocked in
        ``.result()`` holding the result (the end travels pushed: stored, noticed, streamed, woken)."""
        samples = []
        for _ in range(count):
            execution = self.nap.submit(0.002)  # the caller is waiting before it ends
            execution.result()
            woke = time.time()
            ended = execution.info().completed_at
            assert ended is not None
            samples.append((woke - ended.timestamp()) * 1000)
        return samples

    def submit_result_rate(self, count: int) -> float:
        """S2: ``count`` ``f.submit(x)``, then every ``.result()``: calls per second."""
        start = time.perf_counter()
        executions = [self.negate.submit(x) for x in range(count)]
        results = [e.result() for e in executions]
        elapsed = time.perf_counter() - start
        assert results == [-x for x in range(count)]
        return count / elapsed

    def as_completed_rate(self, count: int) -> float:
        """S3: ``count`` submits, then ``as_completed`` over them: executions per second."""
        start = time.perf_counter()
        executions = [self.negate.submit(x) for x in range(count)]
        finished = sum(1 for _ in spear_sdk.as_completed(executions))
        elapsed = time.perf_counter() - start
        assert finished == count
        return count / elapsed

    def submit_us(self, count: int) -> float:
        """S4: microseconds per ``f.submit(x)`` alone (the results are awaited after the clock stops)."""
        start = time.perf_counter()
        executions = [self.negate.submit(x) for x in range(count)]
        elapsed = time.perf_counter() - start
        spear_sdk.wait(executions)
        return elapsed / count * 1e6


class Sdk(SdkCalls):
    """The notebook SDK connected to the same server: what a data scientist's calls cost."""

    def __init__(self, address: str) -> None:
        super().__init__(spear_sdk.connect(address))

    def map_rate(self, count: int) -> float:
        """P4: ``f.map(range(count))`` calls per second, results checked."""
        start = time.perf_counter()
        results = self.negate.map(range(count), progress=False)
        elapsed = time.perf_counter() - start
        assert results == [-x for x in range(count)]
        return count / elapsed

    def executions_seconds(self, rows: int) -> float:
        """P6: seconds for ``client.executions(limit=rows)`` to return that many as a typed DataFrame."""
        start = time.perf_counter()
        frame = self.client.executions(limit=rows)
        elapsed = time.perf_counter() - start
        assert len(frame) == rows, (len(frame), rows)
        return elapsed

    def close(self) -> None:
        self.client.close()
