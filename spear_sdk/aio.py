"""The async API: ``AsyncClient`` has the sync client's method names, awaited. It works from any event
loop (a notebook's, ``asyncio.run``'s, several threads' at once): each call hops onto the runtime loop."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio

from . import _waiting
from ._handles import (
    END,
    ClientBase,
    ExecutionBase,
    FunctionBase,
    TaskLike,
    module_spec,
    next_chunk,
    process_spec,
)
from ._progress import ProgressModel, await_showing
from ._waiting import ALL_COMPLETED, E, ReturnWhen
from .models import CallOptions, ExecutionState, Health, Stats, TaskRef
from .objects import AsyncObjectRef

if TYPE_CHECKING:
    import pandas as pd

    from .alerts import Alert

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["AsyncClient", "AsyncExecution", "AsyncFunction", "as_completed", "wait"]


class AsyncFunction(FunctionBase):
    """``await f(x)``, ``await f.submit(x)``, ``async for v in f.stream(x)``, ``await f.map(xs)``."""

    async def register(self) -> TaskRef:
        """Register the task now if it is not (the current code of a notebook function); its reference."""
        return await self._runtime.hop(self._register())

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._bound(args, kwargs)
        return await self._runtime.hop(self._core.invoke(self._target, args, kwargs, self.call_options))

    async def submit(self, *args: Any, **kwargs: Any) -> AsyncExecution:
        """Start an execution and return at once; ``await execution`` waits for it."""
        self._bound(args, kwargs)
        submission = self._core.submit(self._target, args, kwargs, self.call_options)
        return AsyncExecution(self._core, self._runtime, submission, self.name, self._target)

    async def stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """The values the function yields, as they arrive; leaving the loop early cancels the execution."""
        self._bound(args, kwargs)
        chunks = self._core.stream(self._target, args, kwargs, self.call_options)
        try:
            while (chunk := await self._runtime.hop(next_chunk(chunks))) is not END:
                yield chunk
        finally:
            # Shielded: a cancelled caller (trio cancels every later await too) still ends the stream.
            with anyio.CancelScope(shield=True):
                await self._runtime.hop(chunks.aclose())

    async def map(
        self,
        *iterables: Iterable[Any],
        progress: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Like :meth:`Function.map`; the bar is drawn on this loop's thread."""
        calls = self._map_calls(iterables, kwargs)
        # The runtime loop only counts; the bar is drawn on this loop's thread.
        model = ProgressModel(self.name, len(calls))
        shown = self._progress_view(model, progress)
        mapping = self._core.map(self._target, calls, self.call_options, model.add, return_exceptions)
        work = self._runtime.hop(mapping)
        return await await_showing(work, model, shown)


class AsyncExecution(ExecutionBase):
    """A submitted execution; ``await execution`` is ``await execution.result()``."""

    async def result(self, timeout: float | None = None) -> Any:
        """Like :meth:`Execution.result`."""
        return await self._runtime.hop(self._result(timeout))

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    async def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the execution ended with, ``None`` if it completed (waits like ``result``)."""
        return await self._runtime.hop(self._exception(timeout))

    async def info(self) -> ExecutionState:
        return await self._runtime.hop(self._info())

    async def status(self) -> str:
        return (await self.info()).status

    async def done(self) -> bool:
        return await self._runtime.hop(self._done())

    async def cancel(self) -> bool:
        return await self._runtime.hop(self._cancel())

    async def logs(self) -> list[str]:
        return await self._runtime.hop(self._core.logs(self.execution_id))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self._bundle()


class AsyncClient(ClientBase):
    """The async twin of :class:`spear_sdk.Client`: same methods, awaited."""

    @overload
    def function(self, fn: F, *, name: str | None = None, **defaults: Any) -> AsyncFunction: ...
    @overload
    def function(
        self, fn: None = None, *, name: str | None = None, **defaults: Any
    ) -> Callable[[F], AsyncFunction]: ...

    def function(
        self, fn: F | None = None, *, name: str | None = None, **defaults: Any
    ) -> AsyncFunction | Callable[[F], AsyncFunction]:
        """Like :meth:`Client.function`. The registration starts at once, without blocking this loop;
        the first call (or ``await f.register()``) waits for it, and raises its error if it failed."""
        if fn is None:
            return lambda f: self.function(f, name=name, **defaults)
        shipped, options = self._ship(fn, name, defaults)
        self._runtime.submit(self._core.register_pickled(shipped))
        return AsyncFunction(self._core, self._runtime, shipped, options, fn)

    async def register_module(
        self, target: str, *, name: str | None = None, description: str = "", **defaults: Any
    ) -> AsyncFunction:
        options, registering = self._registration(
            lambda meta: module_spec(target, meta), name, description, defaults
        )
        return AsyncFunction(self._core, self._runtime, await self._runtime.hop(registering), options)

    async def register_process(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        name: str | None = None,
        description: str = "",
        **defaults: Any,
    ) -> AsyncFunction:
        options, registering = self._registration(
            lambda meta: process_spec(command, args, meta), name, description, defaults
        )
        return AsyncFunction(self._core, self._runtime, await self._runtime.hop(registering), options)

    async def task(self, name: str) -> AsyncFunction:
        ref = await self._runtime.hop(self._core.task(name))
        return AsyncFunction(self._core, self._runtime, ref, CallOptions())

    def _handle(self, task: TaskLike) -> AsyncFunction:
        if isinstance(task, AsyncFunction):
            return task
        return AsyncFunction(self._core, self._runtime, self._target(task), CallOptions())

    async def invoke(self, task: TaskLike, *args: Any, **kwargs: Any) -> Any:
        return await self._handle(task)(*args, **kwargs)

    async def submit(self, task: TaskLike, *args: Any, **kwargs: Any) -> AsyncExecution:
        return await self._handle(task).submit(*args, **kwargs)

    def stream(self, task: TaskLike, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._handle(task).stream(*args, **kwargs)

    async def map(
        self,
        task: TaskLike,
        *iterables: Iterable[Any],
        progress: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return await self._handle(task).map(
            *iterables, progress=progress, return_exceptions=return_exceptions, **kwargs
        )

    async def execution(self, execution_id: str) -> AsyncExecution:
        state = await self._runtime.hop(self._core.state(execution_id))
        execution = AsyncExecution(self._core, self._runtime, execution_id, state.task_name)
        execution._last_status = state.status
        return execution

    async def delete_task(
        self, task: TaskLike, *, force: bool = False, cleanup_executions: bool = False
    ) -> int:
        target = self._target(task)
        return await self._runtime.hop(
            self._core.delete_task(target, force=force, cleanup=cleanup_executions)
        )

    async def executions(
        self,
        task: TaskLike | None = None,
        status: str | None = None,
        limit: int | None = None,
        *,
        last: int | None = None,
        since: dt.datetime | dt.timedelta | None = None,
    ) -> pd.DataFrame:
        target = None if task is None else self._target(task)
        listing = self._core.list_executions(target, status, limit, last, since)
        return (await self._runtime.hop(listing)).frame()

    async def tasks(self, prefix: str | None = None, limit: int | None = None) -> pd.DataFrame:
        from . import frames

        return frames.tasks_frame(await self._runtime.hop(self._core.list_tasks(prefix, limit)))

    async def objects(self, prefix: str | None = None, limit: int | None = None) -> pd.DataFrame:
        from . import frames

        return frames.objects_frame(await self._runtime.hop(self._core.list_objects(prefix, limit)))

    async def put(self, value: Any) -> AsyncObjectRef:
        stored = await self._runtime.hop(self._core.transfer.put(value))
        return AsyncObjectRef(stored, self._core.transfer, self._runtime)

    async def stats(self, time_range_hours: int = 0) -> Stats:
        return await self._runtime.hop(self._core.stats(time_range_hours))

    async def health(self) -> Health:
        return await self._runtime.hop(self._core.health())

    async def check(self, timeout: float | None = None) -> Health:
        """One health call that waits up to ``timeout`` seconds for the server to answer."""
        return await self._runtime.hop(self._core.health(timeout=timeout))

    async def alerts(self, rules: Sequence[Alert]) -> pd.DataFrame:
        """Evaluate alert rules now (see :meth:`Client.alerts`)."""
        from . import alerts

        active, _ = await self._runtime.hop(alerts.check(self._core, rules, alerts.tracker_for(self)))
        return alerts.breaches_frame(active)

    async def close(self) -> None:
        self._stop_views()
        self._runtime.forget(self._connection.close)
        await self._runtime.hop(self._connection.close())

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def wait(
    executions: Iterable[E],
    timeout: float | None = None,
    return_when: ReturnWhen = ALL_COMPLETED,
) -> tuple[set[E], set[E]]:
    """The async twin of :func:`spear_sdk.wait`: the ``(done, not_done)`` sets once ``return_when`` holds."""
    chosen = list(executions)
    if not chosen:
        return set(), set()
    return await chosen[0]._runtime.hop(_waiting.wait_for(chosen, timeout, return_when))


async def as_completed(executions: Iterable[E], timeout: float | None = None) -> AsyncIterator[E]:
    """The async twin of :func:`spear_sdk.as_completed`: each execution as it finishes (``async for``)."""
    chosen = list(executions)
    if not chosen:
        return
    runtime = chosen[0]._runtime
    finished = _waiting.completions(chosen, timeout)
    try:
        while (execution := await runtime.hop(next_chunk(finished))) is not END:
            yield execution
    finally:
        with anyio.CancelScope(shield=True):
            await runtime.hop(finished.aclose())
