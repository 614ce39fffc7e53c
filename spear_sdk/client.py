"""The sync API: ``Client``, its function handles and executions. Every call blocks its caller while the
work runs on the runtime loop, so it behaves the same in a script, a thread or a notebook cell."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

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
from ._progress import ProgressModel, run_showing
from ._waiting import ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION, E, ReturnWhen
from .models import CallOptions, ExecutionState, Health, Stats, TaskRef
from .objects import ObjectRef

if TYPE_CHECKING:
    import pandas as pd

    from .alerts import Alert

F = TypeVar("F", bound=Callable[..., Any])

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "Execution",
    "Function",
    "ReturnWhen",
    "as_completed",
    "wait",
]


class Function(FunctionBase):
    """A remote function called like a local one: ``f(x)``, ``f.submit(x)``, ``f.stream(x)``, ``f.map()``."""

    def register(self) -> TaskRef:
        """Register the task now if it is not (the current code of a notebook function); its reference."""
        return self._runtime.run(self._register())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._bound(args, kwargs)
        return self._runtime.run(self._core.invoke(self._target, args, kwargs, self.call_options))

    def submit(self, *args: Any, **kwargs: Any) -> Execution:
        """Start an execution and return at once; ``.result()`` waits for it."""
        self._bound(args, kwargs)
        submission = self._core.submit(self._target, args, kwargs, self.call_options)
        return Execution(self._core, self._runtime, submission, self.name, self._target)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        """The values the function yields, as they arrive; leaving the loop early cancels the execution."""
        self._bound(args, kwargs)
        chunks = self._core.stream(self._target, args, kwargs, self.call_options)
        try:
            while (chunk := self._runtime.run(next_chunk(chunks))) is not END:
                yield chunk
        finally:
            self._runtime.submit(chunks.aclose())

    def map(
        self,
        *iterables: Iterable[Any],
        progress: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """``[f(*args, **kwargs) for args in zip(*iterables, strict=True)]``, run concurrently; results in
        order. ``kwargs`` go to every call; iterables of unequal length are a ``ValueError``.

        ``progress`` shows a progress bar (a widget in a notebook, drawn by this thread; text elsewhere).
        The first failure cancels the calls still running and is raised, with the failing call's position
        as its ``.index`` (and in its message); ``return_exceptions=True`` puts errors in the results.
        """
        calls = self._map_calls(iterables, kwargs)
        model = ProgressModel(self.name, len(calls))
        self._runtime.check_blocking_allowed()
        shown = self._progress_view(model, progress)
        work = self._core.map(self._target, calls, self.call_options, model.add, return_exceptions)
        return run_showing(self._runtime, work, model, shown)


class Execution(ExecutionBase):
    """A submitted execution, like a ``concurrent.futures.Future`` whose work runs on the server."""

    def result(self, timeout: float | None = None) -> Any:
        """The value, once the execution completes; its error if it failed. ``timeout`` bounds this wait
        only (``TimeoutError``); the server-side limit is the ``timeout`` option of the function."""
        return self._runtime.run(self._result(timeout), on_interrupt=self._cancel_on_interrupt)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the execution ended with, ``None`` if it completed (waits like ``result``)."""
        return self._runtime.run(self._exception(timeout), on_interrupt=self._cancel_on_interrupt)

    def info(self) -> ExecutionState:
        """Where the execution stands now: status, failure reason, times and metrics."""
        return self._runtime.run(self._info())

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``completed``, ``failed``, ``cancelled`` or ``timeout``, asked now."""
        return self.info().status

    def done(self) -> bool:
        """Whether the execution has finished (completed or not), asked now."""
        return self._runtime.run(self._done())

    def cancel(self) -> bool:
        """Stop the execution; ``False`` if it had already finished."""
        return self._runtime.run(self._cancel())

    def logs(self) -> list[str]:
        """What the function printed so far (stdout and stderr), line by line."""
        return self._runtime.run(self._core.logs(self.execution_id))

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            state = self.info()
        except Exception:  # a repr must render even when the server is gone
            return self._bundle()
        return self._bundle(state.error_message)


class Client(ClientBase):
    """A connection to a spearlet: register functions, call them, and read executions, stats and health.

    ``Client(address, token=None, tls=None)``: ``tls`` is ``True`` (system roots), a CA certificate (path
    or PEM bytes) or ``grpc.ChannelCredentials``.
    """

    # -- functions -------------------------------------------------------------------------------

    @overload
    def function(self, fn: F, *, name: str | None = None, **defaults: Any) -> Function: ...
    @overload
    def function(
        self, fn: None = None, *, name: str | None = None, **defaults: Any
    ) -> Callable[[F], Function]: ...

    def function(
        self, fn: F | None = None, *, name: str | None = None, **defaults: Any
    ) -> Function | Callable[[F], Function]:
        """Ship a notebook function to the server as a task (``@client.function`` or ``client.function(fn)``).

        Running the defining cell again with changed code updates the same task (version + 1).
        ``defaults`` are call options (``timeout``, ``retries``, ``metadata``, ``environment``) and task
        options (``memory_limit_mb``).
        """
        if fn is None:
            return lambda f: self.function(f, name=name, **defaults)
        shipped, options = self._ship(fn, name, defaults)
        ref = self._runtime.run(self._core.register_pickled(shipped))
        return Function(self._core, self._runtime, shipped, options, fn, ref)

    def register_module(
        self, target: str, *, name: str | None = None, description: str = "", **defaults: Any
    ) -> Function:
        """Register ``"package.module:function"``, imported by the server."""
        options, registering = self._registration(
            lambda meta: module_spec(target, meta), name, description, defaults
        )
        return Function(self._core, self._runtime, self._runtime.run(registering), options)

    def register_process(
        self,
        command: str,
        args: Sequence[str] = (),
        *,
        name: str | None = None,
        description: str = "",
        **defaults: Any,
    ) -> Function:
        """Register an executable: it reads the call as JSON on stdin and writes JSON lines on stdout."""
        options, registering = self._registration(
            lambda meta: process_spec(command, args, meta), name, description, defaults
        )
        return Function(self._core, self._runtime, self._runtime.run(registering), options)

    def task(self, name: str) -> Function:
        """A handle for a task registered earlier (by anyone) under ``name``."""
        ref = self._runtime.run(self._core.task(name))
        return Function(self._core, self._runtime, ref, CallOptions())

    def _handle(self, task: TaskLike) -> Function:
        if isinstance(task, Function):
            return task
        return Function(self._core, self._runtime, self._target(task), CallOptions())

    def invoke(self, task: TaskLike, *args: Any, **kwargs: Any) -> Any:
        """Call a task (by name or handle) and return its value."""
        return self._handle(task)(*args, **kwargs)

    def submit(self, task: TaskLike, *args: Any, **kwargs: Any) -> Execution:
        return self._handle(task).submit(*args, **kwargs)

    def stream(self, task: TaskLike, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return self._handle(task).stream(*args, **kwargs)

    def map(
        self,
        task: TaskLike,
        *iterables: Iterable[Any],
        progress: bool = True,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        return self._handle(task).map(
            *iterables, progress=progress, return_exceptions=return_exceptions, **kwargs
        )

    def execution(self, execution_id: str) -> Execution:
        """A handle for an execution known by its id (from ``executions()`` or another session)."""
        state = self._runtime.run(self._core.state(execution_id))
        execution = Execution(self._core, self._runtime, execution_id, state.task_name)
        execution._last_status = state.status
        return execution

    def delete_task(self, task: TaskLike, *, force: bool = False, cleanup_executions: bool = False) -> int:
        """Delete a task (``force`` cancels its running work); returns how many executions were removed."""
        target = self._target(task)
        return self._runtime.run(self._core.delete_task(target, force=force, cleanup=cleanup_executions))

    # -- tables and figures ----------------------------------------------------------------------

    def executions(
        self,
        task: TaskLike | None = None,
        status: str | None = None,
        limit: int | None = None,
        *,
        last: int | None = None,
        since: dt.datetime | dt.timedelta | None = None,
    ) -> pd.DataFrame:
        """Executions in creation order (``frames.EXECUTION_SCHEMA``): all of them, the first ``limit``,
        or the newest ``last``; ``since`` (a datetime, or a timedelta back from now) keeps those created
        at or after it."""

        target = None if task is None else self._target(task)
        return self._runtime.run(self._core.list_executions(target, status, limit, last, since)).frame()

    def tasks(self, prefix: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Tasks in name order (``frames.TASK_SCHEMA``)."""
        from . import frames

        return frames.tasks_frame(self._runtime.run(self._core.list_tasks(prefix, limit)))

    def objects(self, prefix: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Stored objects in key order (``frames.OBJECT_SCHEMA``)."""
        from . import frames

        return frames.objects_frame(self._runtime.run(self._core.list_objects(prefix, limit)))

    def put(self, value: Any) -> ObjectRef:
        """Store ``value`` on the server once; pass the reference to functions (alone or inside lists,
        tuples and dicts) and they receive the value. It lives until ``.delete()`` (or the lab stops)."""
        stored = self._runtime.run(self._core.transfer.put(value))
        return ObjectRef(stored, self._core.transfer, self._runtime)

    def stats(self, time_range_hours: int = 0) -> Stats:
        """The server's figures; ``time_range_hours`` > 0 counts only executions created in that window."""
        return self._runtime.run(self._core.stats(time_range_hours))

    def health(self) -> Health:
        return self._runtime.run(self._core.health())

    def alerts(self, rules: Sequence[Alert]) -> pd.DataFrame:
        """Evaluate alert rules now: one row per breach (function, metric, op, value, threshold, window,
        since); ``since`` is when this client first saw the breach on."""
        from . import alerts

        active, _ = self._runtime.run(alerts.check(self._core, rules, alerts.tracker_for(self)))
        return alerts.breaches_frame(active)

    def check(self, timeout: float | None = None) -> Health:
        """One health call that waits up to ``timeout`` seconds for the server to answer."""
        return self._runtime.run(self._core.health(timeout=timeout))

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop_views()
        self._runtime.forget(self._connection.close)
        self._runtime.run(self._connection.close())

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait(
    executions: Iterable[E],
    timeout: float | None = None,
    return_when: ReturnWhen = ALL_COMPLETED,
) -> tuple[set[E], set[E]]:
    """Like ``concurrent.futures.wait``: the ``(done, not_done)`` sets once ``return_when`` holds."""
    chosen = list(executions)
    if not chosen:
        return set(), set()
    return chosen[0]._runtime.run(
        _waiting.wait_for(chosen, timeout, return_when), on_interrupt=_waiting.canceller(chosen)
    )


def as_completed(executions: Iterable[E], timeout: float | None = None) -> Iterator[E]:
    """Yield each execution as it finishes; ``TimeoutError`` if some are still running after ``timeout``."""
    chosen = list(executions)
    if not chosen:
        return
    runtime = chosen[0]._runtime
    finished = _waiting.completions(chosen, timeout)
    try:
        while (
            execution := runtime.run(next_chunk(finished), on_interrupt=_waiting.canceller(chosen))
        ) is not END:
            yield execution
    finally:
        runtime.submit(finished.aclose())
