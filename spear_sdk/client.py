"""The sync API: ``Client``, its function handles and executions. Every call blocks its caller while the
work runs on the runtime loop, so it behaves the same in a script, a thread or a notebook cell."""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, overload

from ._handles import (
    END,
    ClientBase,
    ExecutionBase,
    FunctionBase,
    TaskLike,
    module_spec,
    next_chunk,
    pickled_function,
    process_spec,
    split_options,
)
from ._runtime import Runtime
from .models import CallOptions, ExecutionState, Health, Stats
from .widgets.progress import ProgressModel, follow, view

if TYPE_CHECKING:
    import pandas as pd

F = TypeVar("F", bound=Callable[..., Any])
_WAIT_POLL_S = 0.05
_DONE = frozenset({"completed", "failed", "cancelled", "timeout"})
#: How long an interrupted wait waits for its cancels to reach the server.
_CANCEL_WAIT_S = 5.0

ReturnWhen = Literal["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]
ALL_COMPLETED: Final = "ALL_COMPLETED"
FIRST_COMPLETED: Final = "FIRST_COMPLETED"
FIRST_EXCEPTION: Final = "FIRST_EXCEPTION"


class Function(FunctionBase):
    """A remote function called like a local one: ``f(x)``, ``f.submit(x)``, ``f.stream(x)``, ``f.map()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._bound(args, kwargs)
        return self._runtime.run(self._core.invoke(self._target, args, kwargs, self.call_options))

    def submit(self, *args: Any, **kwargs: Any) -> Execution:
        """Start an execution and return at once; ``.result()`` waits for it."""
        self._bound(args, kwargs)
        execution_id, _ = self._runtime.run(self._core.submit(self._target, args, kwargs, self.call_options))
        return Execution(self._core, self._runtime, execution_id, self.name, self._target)

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
        shown = view(model, progress)
        mapping = self._core.map(self._target, calls, self.call_options, model.add, return_exceptions)
        future = self._runtime.submit(mapping)
        return follow(future, model, shown)


class Execution(ExecutionBase):
    """A submitted execution, like a ``concurrent.futures.Future`` whose work runs on the server."""

    def result(self, timeout: float | None = None) -> Any:
        """The value, once the execution completes; its error if it failed. ``timeout`` bounds this wait
        only (``TimeoutError``); the server-side limit is the ``timeout`` option of the function."""
        try:
            value = self._runtime.run(
                self._core.result(self.execution_id, timeout, self._target),
                on_interrupt=self._cancel_on_interrupt,
            )
        except TimeoutError:
            raise
        except Exception as exc:
            self._last_status = getattr(exc, "status", self._last_status)
            raise
        self._last_status = "completed"
        return value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            self.result(timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            return exc
        return None

    def info(self) -> ExecutionState:
        state = self._runtime.run(self._core.state(self.execution_id))
        self._last_status = state.status
        return state

    @property
    def status(self) -> str:
        """``pending``, ``running``, ``completed``, ``failed``, ``cancelled`` or ``timeout``, asked now."""
        return self.info().status

    def done(self) -> bool:
        return self.status in ("completed", "failed", "cancelled", "timeout")

    def cancel(self) -> bool:
        """Stop the execution; ``False`` if it had already finished."""
        cancelled = self._runtime.run(self._core.cancel(self.execution_id))
        if cancelled:
            self._last_status = "cancelled"
        return cancelled

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
        options, task_options = split_options(defaults)
        shipped = pickled_function(fn, name, task_options)
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

    def stats(self, time_range_hours: int = 0) -> Stats:
        """The server's figures; ``time_range_hours`` > 0 counts only executions created in that window."""
        return self._runtime.run(self._core.stats(time_range_hours))

    def health(self) -> Health:
        return self._runtime.run(self._core.health())

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
    executions: Iterable[Execution],
    timeout: float | None = None,
    return_when: ReturnWhen = ALL_COMPLETED,
) -> tuple[set[Execution], set[Execution]]:
    """Like ``concurrent.futures.wait``: the ``(done, not_done)`` sets once ``return_when`` holds."""
    pending = set(executions)
    done: set[Execution] = set()
    for execution in as_completed(pending, timeout=timeout, _quiet_timeout=True):
        done.add(execution)
        pending.discard(execution)
        if return_when == FIRST_COMPLETED or (
            return_when == FIRST_EXCEPTION and execution._last_status != "completed"
        ):
            break
    return done, pending


def as_completed(
    executions: Iterable[Execution], timeout: float | None = None, *, _quiet_timeout: bool = False
) -> Iterator[Execution]:
    """Yield each execution as it finishes; ``TimeoutError`` if some are still running after ``timeout``."""
    pending = list(dict.fromkeys(executions))
    if not pending:
        return
    runtime = pending[0]._runtime
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        yield from _completed(runtime, pending, deadline, timeout, _quiet_timeout)
    except KeyboardInterrupt:
        # Ctrl-C stops what was waited for, as it does in f() and .result().
        cancels = [runtime.submit(e._cancel_on_interrupt()) for e in pending if e._last_status not in _DONE]
        concurrent.futures.wait(cancels, timeout=_CANCEL_WAIT_S)
        raise


def _completed(
    runtime: Runtime,
    pending: list[Execution],
    deadline: float | None,
    timeout: float | None,
    quiet_timeout: bool,
) -> Iterator[Execution]:
    while pending:
        states = runtime.run(_states(pending))
        still = []
        for execution, state in zip(pending, states, strict=True):
            execution._last_status = state.status
            if state.status in ("completed", "failed", "cancelled", "timeout"):
                yield execution
            else:
                still.append(execution)
        pending = still
        if not pending:
            return
        if deadline is not None and time.monotonic() >= deadline:
            if quiet_timeout:
                return
            raise TimeoutError(f"{len(pending)} executions still running after {timeout} s")
        time.sleep(_WAIT_POLL_S)


async def _states(executions: Sequence[Execution]) -> list[ExecutionState]:
    return list(await asyncio.gather(*(e._core.state(e.execution_id) for e in executions)))
