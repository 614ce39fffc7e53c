"""What both clients do, as coroutines that run on the runtime loop.

``Client`` blocks on these and ``AsyncClient`` awaits them; the handles add only their own bookkeeping
(``_handles``), so the two surfaces cannot drift apart. See ``docs/sdk.md`` for the layers around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import linecache
import re
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import _listing, _output, _provenance
from ._completions import Completions, Watched
from ._connection import Connection
from ._listing import PAGE_LIMIT
from ._output import OutputFollower
from ._status import TERMINAL, status_code, status_name
from ._submits import Submission, Submitter
from ._transfer import Arguments, ObjectTransfer
from .models import CallOptions, ExecutionState, Health, Stats, TaskRef
from .wire import function_pb2, object_pb2
from .wire.errors import (
    ExecutionError,
    InvalidArgument,
    NotFound,
    SpearError,
    Unimplemented,
    error_for_execution,
)
from .wire.names import task_name_too_long

if TYPE_CHECKING:
    from .frames import ExecutionColumns

#: Asks the server for exact Python results (tuples stay tuples), see the README's "values" section.
PYTHON_ACCEPT = "application/x-python-pickle"
FUNCTION_OBJECT_PREFIX = "spear/functions/"
MAP_CONCURRENCY = 64
#: How ``map`` cuts its calls into InvokeBatch requests, and how many it keeps in flight.
BATCH_CALLS = 5000
BATCH_BYTES = 4 << 20
BATCH_CONCURRENCY = 2
_POLL_FIRST_S, _POLL_MAX_S = 0.002, 0.1
_COMPLETED = function_pb2.EXECUTION_STATUS_COMPLETED
_CANCEL_TIMEOUT_S = 5.0
#: ``Core._request``'s cell when the call is being made now (cell numbers are positive).
_CELL_NOW = -1
#: Request templates kept per client before the cache starts over.
_TEMPLATES = 256
#: A template's key: task id, function name, ``id()`` of the call options, execution mode.
_TemplateKey = tuple[str, str, int, int]


@dataclass(frozen=True)
class PickledFunction:
    """A notebook function, serialized once when it is defined, registered on first need."""

    name: str
    payload: bytes
    description: str = ""
    artifact_metadata: Mapping[str, str] | None = None
    #: Where the function was defined here, to show its source lines in a remote traceback.
    source_file: str = ""
    checksum: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "checksum", hashlib.sha256(self.payload).hexdigest())


Target = TaskRef | PickledFunction | str


@dataclass(frozen=True)
class ExecutionPage:
    """One page of the executions listing, in creation order."""

    executions: Sequence[function_pb2.ExecutionInfo]
    #: Where the next page starts (the last execution id of this one).
    next_start_after: str
    has_more: bool


class Core:
    """The SDK's single implementation of every operation, as coroutines on the runtime loop.

    It turns Python calls into requests (values through the codec, call options into the execution
    context, the notebook cell into metadata), sends them over its :class:`Connection`, and turns the
    answers into values, :mod:`~spear_sdk.models` objects or typed errors. It owns the client-side state
    of a connection: which registration each task name has (so a notebook function is shipped once per
    version, and concurrent first calls share one registration). Every method must run on the runtime
    loop (``Runtime.run`` / ``Runtime.hop`` put it there), never on a caller's loop.
    """

    def __init__(
        self, connection: Connection, loop: asyncio.AbstractEventLoop, inline_limit: int | None = None
    ) -> None:
        self.connection = connection
        #: Large values: objects, arguments by reference, results read back (``_transfer``).
        self.transfer = ObjectTransfer(connection, inline_limit)
        self._refs: dict[str, TaskRef] = {}  # task name -> the newest registration seen
        #: Requests built once per (task, options, mode), copied for each call (see ``_template``).
        self._templates: dict[_TemplateKey, tuple[CallOptions, function_pb2.InvokeFunctionRequest]] = {}
        self._registering: dict[tuple[str, str], asyncio.Future[TaskRef]] = {}
        self.output = OutputFollower(connection)
        #: Forward what functions print to this process (a call's ``forward_output`` overrides it).
        self.forward_output = True
        #: The ends this client awaits, pushed by the server.
        self.completions = Completions(connection)
        self._submitter = Submitter(
            loop,
            lambda: self.connection.functions,
            connection.call,
            self.transfer.release,
            self.completions.watch,
        )

    @property
    def _functions(self) -> Any:
        return self.connection.functions

    @property
    def _objects(self) -> Any:
        return self.connection.objects

    # -- tasks -----------------------------------------------------------------------------------

    async def register_pickled(self, fn: PickledFunction) -> TaskRef:
        """Store the payload and register (or update) the task; concurrent calls share one registration."""
        key = (fn.name, fn.checksum)
        pending = self._registering.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._register_pickled(fn))
            self._registering[key] = pending
            pending.add_done_callback(lambda _: self._registering.pop(key, None))
        return await asyncio.shield(pending)

    async def _register_pickled(self, fn: PickledFunction) -> TaskRef:
        object_key = f"{FUNCTION_OBJECT_PREFIX}{fn.name}/{fn.checksum[:16]}"
        await self.connection.call(
            self._objects.PutObject,
            object_pb2.PutObjectRequest(
                key=object_key,
                value=fn.payload,
                overwrite=True,
                metadata={"content-type": "application/vnd.cloudpickle", "function": fn.name},
            ),
        )
        spec = function_pb2.ArtifactSpec(
            artifact_type="pickle",
            location=f"object://{object_key}",
            checksum=f"sha256:{fn.checksum}",
            metadata=dict(fn.artifact_metadata or {}),
        )
        return await self.register(fn.name, spec, description=fn.description)

    async def register(self, name: str, spec: function_pb2.ArtifactSpec, *, description: str = "") -> TaskRef:
        response = await self.connection.call(
            self._functions.RegisterTask,
            function_pb2.RegisterTaskRequest(
                task_name=name,
                task_description=description,
                artifact_spec=spec,
                check_import=spec.artifact_type == "python",
            ),
        )
        ref = task_ref(response.task)
        self._refs[ref.name] = ref
        return ref

    def registered(self, name: str) -> TaskRef | None:
        return self._refs.get(name)

    async def resolve(self, target: Target) -> TaskRef:
        if isinstance(target, TaskRef):
            return target
        if isinstance(target, PickledFunction):
            ref = self._refs.get(target.name)
            if ref is not None and ref.checksum == target.checksum:
                return ref
            return await self.register_pickled(target)
        ref = self._refs.get(target)
        if ref is None:
            ref = await self.task(target)
            self._refs[target] = ref
        return ref

    async def task(self, name: str) -> TaskRef:
        """The task registered under ``name``."""
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"a task is named by a non-empty string, not {name!r}")
        if (too_long := task_name_too_long(name)) is not None:
            raise InvalidArgument(too_long)
        response = await self.connection.call(
            self._functions.ListTasks,
            function_pb2.ListTasksRequest(prefix=name, limit=1, include_details=True),
        )
        for info in response.tasks:
            if info.task_name == name:
                return task_ref(info)
        raise NotFound(f"no task named {name!r}; register one with client.function(...)")

    async def delete_task(self, target: Target, *, force: bool, cleanup: bool) -> int:
        ref = await self.resolve(target)
        response = await self.connection.call(
            self._functions.DeleteTask,
            function_pb2.DeleteTaskRequest(task_id=ref.task_id, force=force, cleanup_executions=cleanup),
        )
        self._refs.pop(ref.name, None)
        return int(response.cleaned_executions)

    # -- invocations -----------------------------------------------------------------------------

    async def invoke(
        self, target: Target, args: Sequence[object], kwargs: Mapping[str, object], options: CallOptions
    ) -> object:
        request, implicit = await self._request(
            target, args, kwargs, options, function_pb2.EXECUTION_MODE_SYNC
        )
        try:
            response = await self.connection.call(self._functions.InvokeFunction, request)
        except NotFound:
            self._forget(target)
            raise
        finally:  # the server held what it needed while the call ran
            await self.transfer.release(implicit)
        if _output.SESSION_KEY in request.invocation_metadata:
            await self.output.settle(response.execution_id, response.result.metrics)
        # Nobody holds this execution: its result object goes with the value.
        return await self._outcome(response.execution_id, response.result, target, owned=True)

    def submit(
        self, target: Target, args: Sequence[object], kwargs: Mapping[str, object], options: CallOptions
    ) -> Submission:
        """Queue an ASYNC invocation from any thread, without waiting for the server (see ``_submits``):
        the request is built (the arguments encoded, large ones stored as objects) and sent on the loop."""
        cell = _provenance.current_cell()

        async def build() -> tuple[function_pb2.InvokeFunctionRequest, list[str]]:
            try:
                mode = function_pb2.EXECUTION_MODE_ASYNC
                return await self._request(target, args, kwargs, options, mode, cell)
            except NotFound:
                self._forget(target)
                raise

        return self._submitter.submit(build)

    async def stream(
        self, target: Target, args: Sequence[object], kwargs: Mapping[str, object], options: CallOptions
    ) -> AsyncGenerator[object, None]:
        request, implicit = await self._request(
            target, args, kwargs, options, function_pb2.EXECUTION_MODE_STREAM
        )
        try:
            async for message in self._stream_messages(request, implicit):
                if not message.is_final:
                    yield await self.transfer.value(message.chunk_data)
                    continue
                if message.status != _COMPLETED:
                    raise error_for_execution(
                        execution_id=message.execution_id,
                        status=status_name(message.status) or "failed",
                        error_code=message.metadata.get("error_code", ""),
                        error_message=message.error_message,
                        remote_error=_remote_error(message, target),
                        logs=await self._logs(message.execution_id, target),
                    )
                return
        finally:
            if implicit:
                await self.transfer.release(implicit)

    async def _stream_messages(
        self, request: function_pb2.InvokeFunctionRequest, implicit: list[str]
    ) -> AsyncGenerator[Any, None]:
        """StreamFunction's messages; the first one means the execution holds its own references."""
        async for message in self.connection.stream(self._functions.StreamFunction, request):
            if implicit:
                await self.transfer.release(implicit)
                implicit.clear()
            yield message

    async def map(
        self,
        target: Target,
        calls: Sequence[tuple[Sequence[object], Mapping[str, object]]],
        options: CallOptions,
        on_done: Callable[[int], object],
        return_exceptions: bool = False,
    ) -> list[object]:
        """Run every call; results in call order. The first failure cancels the calls still running and is
        raised, with the call's position as its ``index``; with ``return_exceptions`` each failure is the
        result of its call instead.

        The calls go in ``InvokeBatch`` requests of at most :data:`BATCH_CALLS` calls and
        :data:`BATCH_BYTES` of arguments, :data:`BATCH_CONCURRENCY` at a time; a server without that
        extension gets one invocation per call, :data:`MAP_CONCURRENCY` at a time.
        """
        if not calls:
            return []
        template, _ = await self._request(target, (), {}, options, function_pb2.EXECUTION_MODE_SYNC)
        implicit: list[str] = []
        try:
            encoded: list[list[function_pb2.FunctionParameter]] = []
            for index, (args, kwargs) in enumerate(calls):
                arguments = await self._item_arguments(index, args, kwargs)
                implicit += arguments.implicit
                encoded.append(arguments.parameters)
            batches = _batches(encoded)
            results: list[object] = [None] * len(calls)
            pending = iter(batches)

            async def work() -> None:
                for start, batch in pending:
                    await self._run_batch(target, template, batch, start, results, on_done, return_exceptions)

            try:
                await _all(work() for _ in range(min(BATCH_CONCURRENCY, len(batches))))
            except Unimplemented:
                return await self._map_one_by_one(target, calls, options, on_done, return_exceptions)
            except NotFound:
                self._forget(target)
                raise
            return results
        finally:  # a batch's calls are held by this client until the batch ends
            await self.transfer.release(implicit)

    async def _item_arguments(
        self, index: int, args: Sequence[object], kwargs: Mapping[str, object]
    ) -> Arguments:
        """The arguments of the map's call ``index``; an argument that cannot be sent names the call."""
        try:
            return await self.transfer.arguments(args, kwargs)
        except InvalidArgument as exc:
            raise _map_failure(exc, index, False) from None

    async def _run_batch(
        self,
        target: Target,
        template: function_pb2.InvokeFunctionRequest,
        batch: list[function_pb2.BatchCall],
        start: int,
        results: list[object],
        on_done: Callable[[int], object],
        return_exceptions: bool,
    ) -> None:
        request = function_pb2.InvokeBatchRequest(template=template, calls=batch)
        async for message in self.connection.stream(self._functions.InvokeBatch, request):
            for item in message.results:
                index = start + item.index
                try:
                    results[index] = await self._outcome(item.execution_id, item.result, target, owned=True)
                except _ITEM_ERRORS as exc:
                    results[index] = _map_failure(exc, index, return_exceptions)
            on_done(len(message.results))

    async def _map_one_by_one(
        self,
        target: Target,
        calls: Sequence[tuple[Sequence[object], Mapping[str, object]]],
        options: CallOptions,
        on_done: Callable[[int], object],
        return_exceptions: bool,
    ) -> list[object]:
        results: list[object] = [None] * len(calls)
        indexes = iter(range(len(calls)))

        async def work() -> None:
            for index in indexes:
                args, kwargs = calls[index]
                try:
                    results[index] = await self.invoke(target, args, kwargs, options)
                except _ITEM_ERRORS as exc:
                    results[index] = _map_failure(exc, index, return_exceptions)
                on_done(1)

        await _all(work() for _ in range(min(MAP_CONCURRENCY, len(calls))))
        return results

    async def _request(
        self,
        target: Target,
        args: Sequence[object],
        kwargs: Mapping[str, object],
        options: CallOptions,
        mode: int,
        cell: int | None = _CELL_NOW,
    ) -> tuple[function_pb2.InvokeFunctionRequest, list[str]]:
        """The request, and the keys of the objects made for its arguments (this client's to release).
        ``cell``: the notebook cell that made the call, when it was made earlier (a queued submit)."""
        if cell == _CELL_NOW:
            cell = _provenance.current_cell()
        ref = await self.resolve(target)
        arguments: Arguments = await self.transfer.arguments(args, kwargs)
        request = function_pb2.InvokeFunctionRequest()
        request.CopyFrom(self._template(ref, options, mode))
        request.parameters.extend(arguments.parameters)
        if arguments.object_refs:
            request.object_refs.extend(arguments.object_refs)
        metadata = request.invocation_metadata
        if cell is not None and _provenance.CELL_KEY not in metadata:
            metadata[_provenance.CELL_KEY] = str(cell)
        forward = self.forward_output if options.forward_output is None else options.forward_output
        if forward and (session := await self.output.session_for_call()) is not None:
            metadata[_output.SESSION_KEY] = session
        return request, arguments.implicit

    def _template(self, ref: TaskRef, options: CallOptions, mode: int) -> function_pb2.InvokeFunctionRequest:
        """What every call of ``ref`` with ``options`` in ``mode`` sends but for its arguments and cell,
        built once: a copy of it costs a fraction of building the request with its maps anew."""
        key = (ref.task_id, ref.function_name, id(options), mode)
        cached = self._templates.get(key)
        if cached is not None and cached[0] is options:
            return cached[1]
        context = function_pb2.ExecutionContext(
            environment=dict(options.environment),
            headers={"accept": PYTHON_ACCEPT},
            timeout_ms=0 if options.timeout is None else max(1, round(options.timeout * 1000)),
            max_retries=options.retries or 0,
        )
        template = function_pb2.InvokeFunctionRequest(
            invocation_type=function_pb2.INVOCATION_TYPE_EXISTING_TASK,
            task_id=ref.task_id,
            function_name=ref.function_name,
            execution_mode=mode,  # type: ignore[arg-type]
            context=context,
            invocation_metadata=dict(options.metadata),
        )
        if len(self._templates) >= _TEMPLATES:  # handles come and go (``options()`` makes new ones)
            self._templates.clear()
        self._templates[key] = (options, template)  # (the options kept alive: their id stays theirs)
        return template

    def _forget(self, target: Target) -> None:
        """A task deleted behind our back: look it up (or register it) afresh next time."""
        name = target if isinstance(target, str) else target.name
        self._refs.pop(name, None)

    async def _outcome(
        self,
        execution_id: str,
        result: function_pb2.ExecutionResult,
        target: Target | None = None,
        *,
        owned: bool = False,
    ) -> object:
        if result.status == _COMPLETED:
            return await self.transfer.value(result.result, owned=owned)
        raise error_for_execution(
            execution_id=execution_id,
            status=status_name(result.status) or "failed",
            error_code=result.error_code,
            error_message=result.error_message,
            remote_error=_remote_error(result, target),
            logs=await self._logs(execution_id, target),
        )

    # -- executions ------------------------------------------------------------------------------

    async def status(self, execution_id: str, *, result: bool = False, logs: bool = False) -> Any:
        response = await self.connection.call(
            self._functions.GetExecutionStatus,
            function_pb2.GetExecutionStatusRequest(
                execution_id=execution_id, include_result=result, include_logs=logs
            ),
        )
        if not response.found:
            raise NotFound(f"execution {execution_id!r} not found")
        return response

    async def state(self, execution_id: str) -> ExecutionState:
        response = await self.status(execution_id)
        state = ExecutionState.from_result(response.result)
        state.task_name = response.task_name
        return state

    async def wait(
        self, execution_id: str, timeout: float | None = None, watched: Watched | None = None
    ) -> ExecutionState:
        """The terminal state, as the server pushes it; ``TimeoutError`` after ``timeout`` seconds.
        ``watched``: the execution's watch, when its handle holds one already."""
        watched = watched or self.completions.watch(execution_id)
        if watched is not None:
            try:
                result = await asyncio.wait_for(asyncio.shield(watched.ended), timeout)
            except TimeoutError:
                raise TimeoutError(f"execution {execution_id} is still running after {timeout} s") from None
            except Unimplemented:  # the server cannot push: poll
                return await self._poll(execution_id, timeout)
            state = ExecutionState.from_result(result)
            state.raw_result = result
            return state
        return await self._poll(execution_id, timeout)

    async def ended(self, execution_id: str, watched: Watched | None = None) -> bool:
        """Whether the execution has ended, as far as the server has said (one round trip the first time
        an id is asked about, none after)."""
        watched = watched or self.completions.watch(execution_id)
        if watched is None:
            return (await self.state(execution_id)).status in TERMINAL
        await asyncio.shield(watched.answered)
        if watched.ended.done() and isinstance(watched.ended.exception(), Unimplemented):
            return (await self.state(execution_id)).status in TERMINAL
        if watched.ended.done() and watched.ended.exception() is not None:
            raise watched.ended.exception()  # type: ignore[misc]
        return watched.ended.done()

    def watch_many(self, execution_ids: Iterable[str]) -> list[Watched] | None:
        """Await these executions' ends through the pushed stream; None when the server cannot push."""
        return self.completions.watch_many(execution_ids)

    async def _poll(self, execution_id: str, timeout: float | None) -> ExecutionState:
        """Ask until the execution is terminal (a server without WatchExecutions)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_FIRST_S
        while True:
            response = await self.status(execution_id, result=True)
            state = ExecutionState.from_result(response.result)
            if state.status in TERMINAL:
                state.raw_result = response.result
                return state
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"execution {execution_id} is still {state.status} after {timeout} s")
                delay = min(delay, left)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)

    async def result(
        self,
        execution_id: str,
        timeout: float | None = None,
        target: Target | None = None,
        watched: Watched | None = None,
    ) -> object:
        state = await self.wait(execution_id, timeout, watched)
        assert state.raw_result is not None
        return await self._outcome(execution_id, state.raw_result, target)

    async def cancel(self, execution_id: str, reason: str = "cancelled from the SDK") -> bool:
        response = await self.connection.call(
            self._functions.CancelExecution,
            function_pb2.CancelExecutionRequest(execution_id=execution_id, reason=reason),
            timeout=_CANCEL_TIMEOUT_S,
        )
        return bool(response.success)

    async def cancel_quietly(self, execution_id: str, reason: str) -> None:
        """Cancel on the way out of an interrupted wait, where a failure has nobody to tell."""
        with contextlib.suppress(SpearError):
            await self.cancel(execution_id, reason)

    async def _logs(self, execution_id: str, target: Target | None = None) -> tuple[str, ...]:
        try:
            response = await self.status(execution_id, logs=True)
        except SpearError:
            return ()
        if isinstance(target, PickledFunction) and target.source_file:
            return tuple(_localize(line, target.source_file) for line in response.logs)
        return tuple(response.logs)

    async def logs(self, execution_id: str) -> list[str]:
        return list((await self.status(execution_id, logs=True)).logs)

    # -- listings and figures ----------------------------------------------------------------------

    async def list_executions(
        self,
        task: Target | None,
        status: str | None,
        limit: int | None,
        last: int | None = None,
        since: _listing.Since = None,
    ) -> ExecutionColumns:
        if last is not None and limit is not None:
            raise ValueError("give limit (the first rows) or last (the newest rows), not both")
        request = function_pb2.ListExecutionsRequest()
        if task is not None:
            request.task_id = (await self.resolve(task)).task_id
        if status is not None:
            request.status_filter = status_code(status)  # type: ignore[assignment]
        from .frames import ExecutionColumns  # pandas loads on the first listing, not at import

        columns = ExecutionColumns()
        if last is None and since is None:
            await self._paginate(self._functions.ListExecutions, request, "executions", limit, columns.add)
            return columns
        rows = await _listing.newest(self.connection, request, last, since)
        rows.reverse()  # creation order, like every listing
        columns.add(rows if limit is None else rows[:limit])
        return columns

    async def executions_page(
        self, start_after: str = "", limit: int = PAGE_LIMIT, *, newest_first: bool = False
    ) -> ExecutionPage:
        """The executions created after ``start_after`` (an execution id; ``""`` from the first), at most
        ``limit`` (1 to :data:`PAGE_LIMIT`): a reader that keeps its own cursor, like the live panel.
        ``newest_first`` reads from the newest down (a server without that extension ignores it)."""
        if not 1 <= limit <= PAGE_LIMIT:
            raise InvalidArgument(f"limit is between 1 and {PAGE_LIMIT}, not {limit}")
        page = await self.connection.call(
            self._functions.ListExecutions,
            function_pb2.ListExecutionsRequest(
                start_after=start_after, limit=limit, newest_first=newest_first
            ),
        )
        return ExecutionPage(tuple(page.executions), page.next_start_after, page.has_more)

    async def list_tasks(self, prefix: str | None, limit: int | None) -> list[Any]:
        request = function_pb2.ListTasksRequest(prefix=prefix or "", include_details=True)
        rows: list[Any] = []
        await self._paginate(self._functions.ListTasks, request, "tasks", limit, rows.extend)
        return rows

    async def list_objects(self, prefix: str | None, limit: int | None) -> list[Any]:
        request = object_pb2.ListObjectsRequest(prefix=prefix or "")
        rows: list[Any] = []
        await self._paginate(self._objects.ListObjects, request, "objects", limit, rows.extend)
        return rows

    async def _paginate(
        self, method: Any, request: Any, field: str, limit: int | None, consume: Callable[[Any], object]
    ) -> None:
        """Follow ``next_start_after`` to the end, or until ``limit`` rows, handing each page's rows to
        ``consume`` while the next page is on its way."""
        if limit is not None and limit < 0:
            raise InvalidArgument(f"limit must not be negative, not {limit}")
        wanted = limit

        def ask(start_after: str) -> asyncio.Future[Any]:
            page_request = type(request)()
            page_request.CopyFrom(request)
            page_request.start_after = start_after
            page_request.limit = PAGE_LIMIT if wanted is None else min(PAGE_LIMIT, wanted)
            return asyncio.ensure_future(self.connection.call(method, page_request))

        if wanted == 0:
            return
        pending: asyncio.Future[Any] | None = ask(request.start_after)
        try:
            while pending is not None:
                page = await pending
                rows = getattr(page, field)
                if wanted is not None:
                    wanted -= len(rows)
                more = page.has_more and (wanted is None or wanted > 0)
                pending = ask(page.next_start_after) if more else None
                consume(rows)
        finally:
            if pending is not None:
                pending.cancel()

    async def stats(self, time_range_hours: int) -> Stats:
        if time_range_hours < 0:
            raise InvalidArgument(f"time_range_hours must not be negative, not {time_range_hours}")
        response = await self.connection.call(
            self._functions.GetStats,
            function_pb2.GetStatsRequest(
                include_task_stats=True, include_execution_stats=True, time_range_hours=time_range_hours
            ),
        )
        return Stats(response)

    async def health(self, timeout: float | None = None) -> Health:
        response = await self.connection.call(
            self._functions.GetHealth, function_pb2.GetHealthRequest(include_details=True), timeout=timeout
        )
        return Health(response)


def task_ref(info: function_pb2.TaskInfo) -> TaskRef:
    spec = info.artifact_spec
    checksum = spec.checksum.removeprefix("sha256:")
    try:
        version = int(info.metadata.get("version", "1"))
    except ValueError:
        version = 1
    return TaskRef(
        task_id=info.task_id,
        name=info.task_name,
        version=version,
        artifact_type=spec.artifact_type,
        function_name="",
        checksum=checksum,
    )


_DYNAMIC_FRAME = re.compile(r'^  File "<dynamic-code>", line (\d+), in ')


def _localize(line: str, source_file: str) -> str:
    """A frame of shipped code as a local frame: its file (cloudpickle drops it) and its source line."""
    match = _DYNAMIC_FRAME.match(line)
    if match is None:
        return line
    source = linecache.getline(source_file, int(match.group(1))).strip()
    frame = line.replace("<dynamic-code>", source_file, 1)
    return f"{frame}\n    {source}" if source else frame


def _remote_error(
    message: function_pb2.ExecutionResult | function_pb2.StreamExecutionResult, target: Target | None
) -> function_pb2.RemoteError | None:
    """What the function raised, its shipped frames shown as local ones (None: the server did not say)."""
    if not message.HasField("remote_error"):
        return None
    remote = message.remote_error
    if isinstance(target, PickledFunction) and target.source_file:
        lines = remote.traceback.split("\n")
        traceback = "\n".join(_localize(line, target.source_file) for line in lines)
        remote = function_pb2.RemoteError(type=remote.type, message=remote.message, traceback=traceback)
    return remote


#: How one call of a map fails (the others are the map's own failures: the server, the task).
_ITEM_ERRORS = (ExecutionError, InvalidArgument)


def _map_failure(error: SpearError, index: int, return_exceptions: bool) -> SpearError:
    """``error`` of the map's call ``index``, marked with it: returned as that call's result when
    ``return_exceptions``, else raised."""
    error.index = index
    error.message = f"map item {index}: {error.message}"
    error.args = (error.message,)
    if return_exceptions:
        return error
    raise error


def _batches(
    calls: list[list[function_pb2.FunctionParameter]],
) -> list[tuple[int, list[function_pb2.BatchCall]]]:
    """``calls`` cut into requests of at most BATCH_CALLS calls and about BATCH_BYTES, with their offsets."""
    batches: list[tuple[int, list[function_pb2.BatchCall]]] = []
    current: list[function_pb2.BatchCall] = []
    size = 0
    for index, parameters in enumerate(calls):
        call = function_pb2.BatchCall(parameters=parameters)
        call_size = call.ByteSize()
        if current and (len(current) >= BATCH_CALLS or size + call_size > BATCH_BYTES):
            batches.append((index - len(current), current))
            current, size = [], 0
        current.append(call)
        size += call_size
    batches.append((len(calls) - len(current), current))
    return batches


async def _all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run them together; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
