"""FunctionService: thin handlers that validate, call the engine, and build responses (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import copy
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from typing import Any

import grpc

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc
from spear_sdk.wire.errors import InvalidArgument, Unavailable
from spear_sdk.wire.refs import REF_PREFIX

from . import convert
from .engine import lifecycle as lc
from .engine.by_reference import adopt_value
from .engine.core import Engine, Invocation
from .engine.logs import log_lines
from .engine.output import SENT_METRIC
from .function_stats import active_counts, add_function_stats, window_seconds
from .health import HealthMonitor, ResourceMeter
from .importable import check_module
from .pages import chunk_message, execution_page
from .rpc import (
    Encoded,
    check_enum,
    fitting,
    page_size,
    paginate,
    refusal,
    require,
    server_stream,
    unary,
)
from .stats import ExecutionFigures
from .store.records import StoredExecution, StoredTask
from .watching import WatchStream

Context = grpc.aio.ServicerContext[Any, Any]
MOST_ACTIVE = 5
# Room kept in a batch's response for its framing beside the results.
_GROUP_FRAMING = 1024
DEFAULT_TASK_EXECUTIONS = 10


class FunctionService(function_pb2_grpc.FunctionServiceServicer):
    """The gRPC FunctionService: one method per RPC of docs/protocol.md.

    Each handler checks what the engine cannot (enum values, request shape), calls one or two methods of
    the :class:`Engine`, and builds the response with :mod:`.convert`; it never touches the store or the
    executor itself. Errors are raised as :mod:`spear_sdk.wire.errors` exceptions, which the decorators of
    :mod:`.rpc` turn into gRPC statuses in one place."""

    def __init__(self, engine: Engine, monitor: HealthMonitor, meter: ResourceMeter) -> None:
        self.engine = engine
        self.monitor = monitor
        self.meter = meter

    # -- invoking -----------------------------------------------------------------------------------

    @unary
    async def InvokeFunction(
        self, request: fpb.InvokeFunctionRequest, context: Context
    ) -> fpb.InvokeFunctionResponse:
        _check_invocation_enums(request)
        mode = request.execution_mode
        if mode == fpb.EXECUTION_MODE_STREAM:
            raise InvalidArgument("execution_mode STREAM is served by StreamFunction")
        live = await self.engine.submit(convert.invocation(request, stream=False))
        if request.wait or mode != fpb.EXECUTION_MODE_ASYNC:
            try:
                record = await self.engine.wait(live)
            except asyncio.CancelledError:
                self.engine.cancel_soon(live.execution_id, "the caller cancelled the call")
                raise
            success = record.status == lc.COMPLETED
            message = "completed" if success else f"{lc.status_name(record.status)}: {record.error_message}"
            estimate = 0
        else:
            return self._accepted(await self.engine.accepted(live))
        response = fpb.InvokeFunctionResponse(
            success=success,
            message=message,
            execution_id=record.execution_id,
            task_id=record.task_id,
            instance_id=record.instance_id,
            status_endpoint=convert.STATUS_ENDPOINT.format(record.execution_id),
            estimated_completion_ms=estimate,
        )
        convert.fill_execution_result(response.result, record)
        if live.forwarded and record.status in lc.TERMINAL:
            response.result.metrics[SENT_METRIC] = str(live.forwarded)
        return response

    @server_stream
    async def FollowOutput(
        self, request: fpb.FollowOutputRequest, context: Context
    ) -> AsyncIterator[fpb.FollowOutputResponse]:
        require(request.session, "session")

        async def opened() -> None:
            # The client waits for this before it names the session in an invocation: from here on,
            # nothing the session's executions print is missed.
            await context.send_initial_metadata(())

        async for message in self.engine.output.follow(request.session, opened):
            yield message

    def _accepted(self, record: StoredExecution) -> fpb.InvokeFunctionResponse:
        """The answer to an ASYNC invocation: the new record, as admitted."""
        response = fpb.InvokeFunctionResponse(
            success=True,
            message="accepted",
            execution_id=record.execution_id,
            task_id=record.task_id,
            instance_id=record.instance_id,
            status_endpoint=convert.STATUS_ENDPOINT.format(record.execution_id),
            estimated_completion_ms=self.engine.stats.estimate_ms(record.task_name, record.function_name),
        )
        convert.fill_execution_result(response.result, record)
        return response

    @unary
    async def InvokeMany(self, request: fpb.InvokeManyRequest, context: Context) -> fpb.InvokeManyResponse:
        outcomes = [fpb.InvokeOutcome() for _ in request.invocations]
        invocations: list[Invocation] = []
        checked: list[fpb.InvokeOutcome] = []
        for outcome, invocation in zip(outcomes, request.invocations, strict=True):
            try:
                _check_invocation_enums(invocation)
                if invocation.execution_mode != fpb.EXECUTION_MODE_ASYNC or invocation.wait:
                    raise InvalidArgument(
                        "InvokeMany takes ASYNC invocations (execution_mode ASYNC, no wait)"
                    )
                invocations.append(convert.invocation(invocation, stream=False))
            except Exception as exc:
                _refuse(outcome, exc)
                continue
            checked.append(outcome)
        # Admitted in order, each accepted or refused alone.
        admitted: list[tuple[fpb.InvokeOutcome, StoredExecution, asyncio.Future[None]]] = []
        for outcome, live in zip(checked, await self.engine.submit_many(invocations), strict=True):
            if isinstance(live, Exception):
                _refuse(outcome, live)
            else:
                admitted.append((outcome, copy.copy(live.record), live.created))
        if admitted:
            self.engine.executions.hurry()
        for outcome, record, created in admitted:
            await asyncio.shield(created)  # shared with the store's writer: a dropped call must not cancel it
            outcome.response.CopyFrom(self._accepted(record))
        return fpb.InvokeManyResponse(outcomes=outcomes)

    @server_stream
    async def WatchExecutions(
        self, requests: AsyncIterator[fpb.WatchExecutionsRequest], context: Context
    ) -> AsyncIterator[fpb.WatchExecutionsResponse]:
        stream = WatchStream(self.engine)
        reader = asyncio.ensure_future(stream.read(requests))
        try:
            async for message in stream.messages():
                yield message
        finally:
            reader.cancel()
            stream.close()

    @server_stream
    async def StreamFunction(
        self, request: fpb.InvokeFunctionRequest, context: Context
    ) -> AsyncIterator[fpb.StreamExecutionResult | Encoded]:
        _check_invocation_enums(request)
        live = await self.engine.submit(convert.invocation(request, stream=True))
        chunks = live.chunks
        assert chunks is not None
        execution_id = live.execution_id
        head = fpb.StreamExecutionResult(
            execution_id=execution_id, status=fpb.EXECUTION_STATUS_RUNNING
        ).SerializeToString()
        try:
            reported = False
            while (data := await chunks.get()) is not None:
                if not reported:  # a chunk reports the execution RUNNING: so it must be stored
                    await self.engine.stored(live)
                    reported = True
                if data.startswith(REF_PREFIX):  # a value a worker wrote as a file: an object now
                    await adopt_value(self.engine.objects, data, execution_id)
                yield chunk_message(head, data)
        finally:
            if not live.done.is_set():  # the client went away mid-stream
                self.engine.cancel_soon(execution_id, "the caller dropped the stream")
        record = await self.engine.wait(live)
        yield fpb.StreamExecutionResult(
            execution_id=execution_id,
            status=record.status,  # type: ignore[arg-type]
            is_final=True,
            error_message=record.error_message,
            remote_error=record.remote_error(),
            metadata={
                "error_code": record.error_code,
                "task_id": record.task_id,
                "instance_id": record.instance_id,
                "execution_time_ms": str(record.execution_time_ms),
                "attempts": str(record.attempt),
            },
        )

    @server_stream
    async def InvokeBatch(
        self, request: fpb.InvokeBatchRequest, context: Context
    ) -> AsyncIterator[fpb.InvokeBatchResponse]:
        template = request.template
        _check_invocation_enums(template)
        if template.execution_mode not in (fpb.EXECUTION_MODE_UNKNOWN, fpb.EXECUTION_MODE_SYNC):
            raise InvalidArgument("a batch runs its calls as SYNC invocations: leave execution_mode unset")
        if template.parameters:
            raise InvalidArgument("a batch's template takes no parameters: give them in calls")
        finished: deque[tuple[int, StoredExecution]] = deque()
        arrived = asyncio.Event()

        def on_result(index: int, record: StoredExecution) -> None:
            finished.append((index, record))
            arrived.set()

        batch = await self.engine.start_batch(
            convert.invocation(template, stream=False),
            [[(p.name, p.value) for p in call.parameters] for call in request.calls],
            on_result,
        )
        ended = asyncio.ensure_future(batch.wait())
        room = self.engine.config.message_limit - _GROUP_FRAMING
        try:
            remaining = len(request.calls)
            while remaining:
                if not finished:
                    if ended.done():
                        raise batch.error or Unavailable("the batch ended before all its calls did")
                    arrived.clear()
                    await asyncio.wait(
                        (ended, asyncio.ensure_future(arrived.wait())), return_when="FIRST_COMPLETED"
                    )
                    continue
                # Built in place: a message handed to a constructor is copied, its result value with it.
                response, size = fpb.InvokeBatchResponse(), 0
                results = response.results
                while finished and size < room:
                    index, record = finished.popleft()
                    item = results.add(index=index, execution_id=record.execution_id)
                    convert.fill_execution_result(item.result, record)
                    size += item.ByteSize() + 6
                remaining -= len(results)
                yield response
        finally:
            self.engine.end_batch(batch)
            ended.cancel()

    @unary
    async def GetExecutionStatus(
        self, request: fpb.GetExecutionStatusRequest, context: Context
    ) -> fpb.GetExecutionStatusResponse:
        record = await self.engine.get_execution(request.execution_id)
        if record is None:
            return fpb.GetExecutionStatusResponse(
                found=False, message=f"execution {request.execution_id!r} not found"
            )
        logs = log_lines(await self.engine.logs(record.execution_id)) if request.include_logs else []
        return fpb.GetExecutionStatusResponse(
            found=True,
            result=convert.execution_result(record, include_value=request.include_result),
            logs=logs,
            message=lc.status_name(record.status),
            task_name=record.task_name,
        )

    @unary
    async def CancelExecution(
        self, request: fpb.CancelExecutionRequest, context: Context
    ) -> fpb.CancelExecutionResponse:
        outcome = await self.engine.cancel(request.execution_id, request.reason)
        return fpb.CancelExecutionResponse(
            success=outcome.success,
            message=outcome.message,
            final_status=outcome.final_status,  # type: ignore[arg-type]
        )

    # -- tasks --------------------------------------------------------------------------------------

    @unary
    async def RegisterTask(
        self, request: fpb.RegisterTaskRequest, context: Context
    ) -> fpb.RegisterTaskResponse:
        if not request.HasField("artifact_spec"):
            raise InvalidArgument("artifact_spec is required")
        spec = request.artifact_spec
        if request.check_import and spec.artifact_type == "python" and ":" in spec.location:
            check_module(spec.location)
        registration = await self.engine.register_task(
            request.task_name,
            convert.artifact_from_proto(request.artifact_spec),
            request.task_description,
            dict(request.metadata),
        )
        task = registration.task
        verb = "registered" if registration.created else "updated" if registration.updated else "unchanged"
        return fpb.RegisterTaskResponse(
            success=True,
            message=f"task {task.name!r} {verb} (version {task.version})",
            task=convert.task_info(task, (await self.engine.current_figures()).task(task.task_id)),
            created=registration.created,
            updated=registration.updated,
        )

    @unary
    async def ListTasks(self, request: fpb.ListTasksRequest, context: Context) -> fpb.ListTasksResponse:
        size = page_size(request.limit)
        tasks = await self.engine.tasks_page(request.prefix, request.start_after, size + 1)
        page, has_more, next_after = paginate(tasks, size, lambda t: t.name)
        stats = await self.engine.current_figures()
        infos = [convert.task_info(t, stats.task(t.task_id), details=request.include_details) for t in page]
        fit = fitting((i.ByteSize() for i in infos), self.engine.config.message_limit)
        if fit < len(infos):
            infos, has_more, next_after = infos[:fit], True, page[fit - 1].name
        return fpb.ListTasksResponse(tasks=infos, has_more=has_more, next_start_after=next_after)

    @unary
    async def GetTask(self, request: fpb.GetTaskRequest, context: Context) -> fpb.GetTaskResponse:
        require(request.task_id, "task_id")
        task = await self.engine.get_task(request.task_id)
        if task is None:
            return fpb.GetTaskResponse(found=False, message=f"task {request.task_id!r} not found")
        info = convert.task_info(task, (await self.engine.current_figures()).task(task.task_id))
        executions = []
        if request.include_executions:
            count = page_size(request.execution_limit or DEFAULT_TASK_EXECUTIONS)
            executions = [r.info() for r in await self.engine.newest_executions(task.task_id, count)]
            # As many of the newest as one response can carry beside the task.
            room = self.engine.config.message_limit - info.ByteSize()
            executions = executions[: fitting((e.ByteSize() for e in executions), room)]
        return fpb.GetTaskResponse(found=True, task=info, executions=executions)

    @unary
    async def DeleteTask(self, request: fpb.DeleteTaskRequest, context: Context) -> fpb.DeleteTaskResponse:
        require(request.task_id, "task_id")
        cleaned = await self.engine.delete_task(
            request.task_id, force=request.force, cleanup=request.cleanup_executions
        )
        return fpb.DeleteTaskResponse(
            success=True,
            message=f"task {request.task_id!r} deleted",
            deleted=True,
            cleaned_executions=cleaned,
        )

    @unary
    async def ListExecutions(self, request: fpb.ListExecutionsRequest, context: Context) -> Encoded:
        size = page_size(request.limit)
        check_enum(fpb.ExecutionStatus, request.status_filter, "status_filter")
        rows = await self.engine.execution_infos(
            task_id=request.task_id,
            status=request.status_filter,
            start_after=request.start_after,
            count=size + 1,
            newest_first=request.newest_first,
        )
        page, has_more, next_after = paginate(rows, size, lambda row: row[0])
        infos = [info for _, info in page]
        fit = fitting(map(len, infos), self.engine.config.message_limit)
        if fit < len(infos):
            infos, has_more, next_after = infos[:fit], True, page[fit - 1][0]
        return execution_page(infos, has_more, next_after)

    # -- health and stats ---------------------------------------------------------------------------

    @unary
    async def GetHealth(self, request: fpb.GetHealthRequest, context: Context) -> fpb.GetHealthResponse:
        verdict = await self.monitor.refresh()
        response = fpb.GetHealthResponse(
            status=verdict.status, message=verdict.message, uptime_seconds=int(self.engine.uptime_s)
        )
        if request.include_details:
            engine = self.engine
            current = await engine.current_figures()
            tasks = await engine.all_tasks()
            response.details.CopyFrom(
                fpb.HealthDetails(
                    active_tasks=len(current.active_tasks),
                    running_executions=current.running,
                    pending_executions=current.pending,
                    total_memory_used=self.meter.memory_bytes(engine.worker_pids()),
                    total_executions=current.figures.total,
                    system_info=self.monitor.system_info(),
                    task_count=len(tasks),
                    object_count=engine.objects.count,
                    total_object_size=engine.objects.total_size,
                )
            )
            if (cluster := self.monitor.cluster_details()) is not None:
                response.details.cluster.CopyFrom(cluster)
        return response

    @unary
    async def GetStats(self, request: fpb.GetStatsRequest, context: Context) -> fpb.GetStatsResponse:
        window_s = window_seconds(request)
        engine = self.engine
        tasks = await engine.all_tasks()
        pids = engine.worker_pids()
        memory = self.meter.memory_bytes(pids)
        current = await engine.current_figures()
        response = fpb.GetStatsResponse(
            service_stats=fpb.ServiceStats(
                uptime_seconds=int(engine.uptime_s),
                total_tasks=len(tasks),
                total_executions=current.figures.total,
                total_memory_used=memory,
                cpu_usage_percent=self.meter.cpu_percent(pids),
                memory_usage_percent=self.meter.memory_percent(memory),
            )
        )
        if (cluster := self.monitor.cluster_details()) is not None:
            response.service_stats.cluster.CopyFrom(cluster)
        if not (request.include_task_stats or request.include_execution_stats):
            return response
        # A window longer than the clock's history means all of it (and keeps id_floor finite).
        since_time = max(0.0, time.time() - window_s) if window_s else 0.0
        if request.only_function_stats:
            runs = await engine.function_figures(since_time)
            if engine.shared:  # every server's executions, counted in the store
                figures = await engine.figures_since(since_time) if since_time else current.figures
                add_function_stats(response.execution_stats, figures.by_function, runs)
            else:
                active = active_counts((live.record for live in engine.live.values()), since_time)
                add_function_stats(response.execution_stats, None, runs, active)
            return response
        figures = current.figures
        if since_time:
            figures = await engine.figures_since(since_time)
        if request.include_task_stats:
            response.task_stats.CopyFrom(_task_stats(tasks, figures, current.active_tasks))
        if request.include_execution_stats:
            response.execution_stats.CopyFrom(_execution_stats(figures))
            runs = await engine.function_figures(since_time)
            add_function_stats(response.execution_stats, figures.by_function, runs)
        return response


def _task_stats(tasks: list[StoredTask], figures: ExecutionFigures, active: frozenset[str]) -> fpb.TaskStats:
    by_type = Counter(task.artifact.artifact_type for task in tasks)
    busiest = sorted(
        (t for t in tasks if t.task_id in figures.tasks),
        key=lambda t: (-figures.tasks[t.task_id].executions, t.name),
    )[:MOST_ACTIVE]
    active_known = active & {t.task_id for t in tasks}
    return fpb.TaskStats(
        active_tasks=len(active_known),
        idle_tasks=len(tasks) - len(active_known),
        tasks_by_type=by_type,
        most_active_tasks=[convert.task_info(t, figures.tasks[t.task_id]) for t in busiest],
    )


def _execution_stats(figures: ExecutionFigures) -> fpb.ExecutionStats:
    by_status = figures.by_status
    return fpb.ExecutionStats(
        running_executions=by_status[lc.RUNNING],
        pending_executions=by_status[lc.PENDING],
        completed_executions=by_status[lc.COMPLETED],
        failed_executions=by_status[lc.FAILED],
        average_execution_time_ms=figures.average_time_ms,
        success_rate_percent=figures.success_rate_percent,
        executions_by_function={name: n for name, n in figures.by_function.items() if n > 0},
        cancelled_executions=by_status[lc.CANCELLED],
        timeout_executions=by_status[lc.TIMEOUT],
    )


def _check_invocation_enums(request: fpb.InvokeFunctionRequest) -> None:
    check_enum(fpb.InvocationType, request.invocation_type, "invocation_type")
    check_enum(fpb.ExecutionMode, request.execution_mode, "execution_mode")


def _refuse(outcome: fpb.InvokeOutcome, exc: Exception) -> None:
    """Fill an InvokeMany outcome with why its invocation was refused (a bug is raised on)."""
    refused = refusal(exc)
    if refused is None:
        raise exc
    code, message, retry_after_ms = refused
    outcome.error_status = code.value[0]
    outcome.error_message = message
    outcome.retry_after_ms = retry_after_ms
