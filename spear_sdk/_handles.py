"""What the sync and async surfaces share: function and execution handles (naming, shipping, options,
reprs, and the bookkeeping a call does beside ``Core``'s work), the clients' connection and live views, and
the stream helper.

The coroutines here (``_result``, ``_info``, ...) run on the runtime loop like ``Core``'s: ``Client`` blocks
on them and ``AsyncClient`` awaits them, so a handle's state changes the same way on both surfaces.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import _nested, _repr, _shipping
from ._completions import Watched
from ._connection import Connection, TlsOption
from ._core import Core, PickledFunction, Target
from ._progress import NoView, ProgressModel, ProgressView
from ._runtime import Runtime, get_runtime
from ._submits import Submission
from .models import CallOptions, ExecutionState, TaskRef
from .wire import function_pb2
from .wire.errors import InvalidArgument, Unavailable
from .wire.names import task_name_too_long

if TYPE_CHECKING:
    from .alerts import Alert, Breach
    from .widgets.panel import Panel
    from .widgets.watch import Watch

CALL_OPTIONS = frozenset({"timeout", "retries", "metadata", "environment", "forward_output"})
#: Task options that travel in the artifact's metadata and apply to every run of the task.
TASK_OPTIONS = frozenset({"memory_limit_mb"})

H = TypeVar("H", bound="FunctionBase")
#: What :func:`next_chunk` returns after the last chunk of a stream.
END = object()


def split_options(defaults: Mapping[str, Any]) -> tuple[CallOptions, dict[str, str]]:
    """``function(..., **defaults)``: call options, and task options as artifact metadata."""
    unknown = set(defaults) - CALL_OPTIONS - TASK_OPTIONS
    if unknown:
        raise TypeError(
            f"unknown option {sorted(unknown)[0]!r}; options are "
            f"{', '.join(sorted(CALL_OPTIONS | TASK_OPTIONS))}"
        )
    call = CallOptions().merged(**{k: v for k, v in defaults.items() if k in CALL_OPTIONS})
    task = {k: str(v) for k, v in defaults.items() if k in TASK_OPTIONS and v is not None}
    return call, task


def pickled_function(
    fn: Callable[..., Any], name: str | None, artifact_metadata: Mapping[str, str]
) -> PickledFunction:
    """Serialize a notebook function (closures, lambdas, inner imports) with cloudpickle."""
    if not callable(fn):
        raise TypeError(f"client.function needs a callable, not {type(fn).__name__}")
    if name is not None:
        check_task_name(name)  # before the work of serializing
    try:
        payload = _shipping.ship(fn, _label(fn))
    except _shipping.ShippingError as exc:
        raise InvalidArgument(str(exc)) from None
    default = _label(fn)
    if default == "<lambda>":
        # A lambda has no name of its own; its code names it, so that two lambdas never share a task.
        default = f"lambda-{hashlib.sha256(payload).hexdigest()[:8]}"
    check_task_name(name or default)
    return PickledFunction(
        name=name or default,
        payload=payload,
        description=(inspect.getdoc(fn) or "").strip().split("\n", 1)[0],
        artifact_metadata=dict(artifact_metadata),
        source_file=getattr(getattr(fn, "__code__", None), "co_filename", ""),
    )


def check_task_name(name: str) -> None:
    """The server's limit, checked here so that nothing is uploaded for a name it would refuse."""
    if isinstance(name, str) and (too_long := task_name_too_long(name)) is not None:
        raise InvalidArgument(too_long)


def module_spec(target: str, artifact_metadata: Mapping[str, str]) -> tuple[str, function_pb2.ArtifactSpec]:
    """``"pkg.mod:fn"``: a function the server imports."""
    module, sep, attr = target.partition(":")
    if not (module and sep and attr):
        raise InvalidArgument(f"register_module takes 'package.module:function', not {target!r}")
    spec = function_pb2.ArtifactSpec(
        artifact_type="python", location=target, metadata=dict(artifact_metadata)
    )
    return attr.rsplit(".", 1)[-1], spec


def process_spec(
    command: str, args: Sequence[str], artifact_metadata: Mapping[str, str]
) -> tuple[str, function_pb2.ArtifactSpec]:
    """An executable that gets the call as JSON on stdin and answers with JSON lines on stdout."""
    if not command:
        raise InvalidArgument("register_process needs the command to run")
    metadata = {**artifact_metadata, "args": json.dumps([str(a) for a in args])}
    spec = function_pb2.ArtifactSpec(artifact_type="process", location=command, metadata=metadata)
    return os.path.basename(command), spec


def _label(fn: Callable[..., Any]) -> str:
    inner = getattr(fn, "func", fn)  # functools.partial
    return str(getattr(inner, "__name__", type(inner).__name__))


class FunctionBase:
    """A registered task as a callable; ``options(...)`` gives a configured copy."""

    def __init__(
        self,
        core: Core,
        runtime: Runtime,
        target: Target,
        options: CallOptions,
        fn: Callable[..., Any] | None = None,
        ref: TaskRef | None = None,
    ) -> None:
        self._core = core
        self._ref = target if isinstance(target, TaskRef) else ref
        self._runtime = runtime
        self._target = target
        self._fn = fn
        self.call_options = options
        if fn is not None:
            self.__doc__ = fn.__doc__
            self.__wrapped__ = fn

    @property
    def name(self) -> str:
        return self._target if isinstance(self._target, str) else self._target.name

    @property
    def ref(self) -> TaskRef | None:
        """The registration of this handle's code (``None`` before the first one)."""
        if self._ref is None:
            ref = self._core.registered(self.name)
            if isinstance(self._target, PickledFunction) and ref is not None:
                self._ref = ref if ref.checksum == self._target.checksum else None
        return self._ref

    @property
    def task_id(self) -> str | None:
        ref = self.ref
        return ref.task_id if ref else None

    @property
    def version(self) -> int | None:
        ref = self.ref
        return ref.version if ref else None

    async def _register(self) -> TaskRef:
        self._ref = await self._core.resolve(self._target)
        return self._ref

    @staticmethod
    def _progress_view(model: ProgressModel, enabled: bool) -> ProgressView:
        """How ``map`` shows its progress: the views are UI, loaded only when a bar is wanted."""
        if not enabled:
            return NoView()
        from .widgets.progress import view

        return view(model, enabled)

    def __reduce__(self) -> tuple[Any, ...]:
        # A handle travels without its client: where it lands, it finds one (see ``_nested``).
        return (
            _rebuild_function,
            (type(self), self._target, self.call_options, self._core.connection.address),
        )

    def __copy__(self: H) -> H:
        return type(self)(self._core, self._runtime, self._target, self.call_options, self._fn, self._ref)

    def __deepcopy__(self: H, memo: dict[int, Any]) -> H:
        return self.__copy__()  # a handle is a reference to a task: copies share the client

    def options(self: H, **changes: Any) -> H:
        """A handle that calls with these options: ``timeout`` (server-side limit, seconds), ``retries``
        (reruns after a lost worker), ``metadata`` and ``environment`` (merged with the current ones)."""
        options = self.call_options.merged(**changes)
        return type(self)(self._core, self._runtime, self._target, options, self._fn, self._ref)

    def _bound(self, args: Sequence[object], kwargs: Mapping[str, object], item: int | None = None) -> None:
        """Raise ``TypeError`` here, before any round trip, for a call the function's signature refuses
        (known for notebook functions; tasks registered otherwise are checked by the server)."""
        signature = self._call_signature()
        if signature is None:
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            where = f"map item {item}: " if item is not None else f"{self.name}(): "
            raise TypeError(f"{where}{exc}") from None

    def _call_signature(self) -> inspect.Signature | None:
        if self._fn is None:
            return None
        cached = self.__dict__.get("_cached_signature", False)
        if cached is False:
            try:
                cached = inspect.signature(self._fn)
            except (TypeError, ValueError):  # a builtin or callable without an introspectable signature
                cached = None
            self.__dict__["_cached_signature"] = cached
        return cached  # type: ignore[no-any-return]

    def _map_calls(
        self, iterables: Sequence[Iterable[Any]], kwargs: Mapping[str, Any]
    ) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """``map``'s calls: one item of each iterable, and the keyword arguments every call shares."""
        columns = [list(iterable) for iterable in iterables]
        lengths = {len(column) for column in columns}
        if len(lengths) > 1:
            sizes = ", ".join(str(len(column)) for column in columns)
            raise ValueError(f"map needs iterables of the same length, not of lengths {sizes}")
        calls = [(args, dict(kwargs)) for args in zip(*columns, strict=True)]
        for index, (args, shared) in enumerate(calls):
            self._bound(args, shared, index)
        return calls

    def _signature(self) -> str:
        try:
            return str(inspect.signature(self._fn)) if self._fn is not None else "(...)"
        except (TypeError, ValueError):
            return "(...)"

    def _kind(self) -> str:
        if isinstance(self._target, PickledFunction):
            return "pickle"
        ref = self.ref
        return ref.artifact_type if ref else "task"

    def __repr__(self) -> str:
        version = self.version
        registered = f"version {version}" if version is not None else "not registered yet"
        return f"<{type(self).__name__} {self.name}{self._signature()}: {self._kind()} task, {registered}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        options = {k: v for k, v in vars(self.call_options).items() if v not in (None, {})}
        return _repr.bundle(
            self,
            "function.html",
            name=self.name,
            signature=self._signature(),
            artifact_type=self._kind(),
            version=self.version if self.version is not None else "(not registered yet)",
            task_id=self.task_id or "",
            options=", ".join(f"{k}={v!r}" for k, v in options.items()) or "defaults",
        )


def _rebuild_function(cls: type[H], target: Target, options: CallOptions, address: str) -> H:
    return cls(_nested.core_for(address), get_runtime(), target, options)


class ExecutionBase:
    """One submitted execution, named by ``execution_id`` (which waits for the server's answer to a
    submit still on its way)."""

    def __init__(
        self,
        core: Core,
        runtime: Runtime,
        execution: str | Submission,
        name: str,
        target: Target | None = None,
    ) -> None:
        self._core = core
        self._target = target
        self._runtime = runtime
        self._submission = execution if isinstance(execution, Submission) else None
        self._execution_id = execution if isinstance(execution, str) else None
        self.name = name
        self._last_status = "pending"
        #: The pushed end this handle awaits (kept, so that a result once pushed is not asked for again).
        self._watched: Watched | None = None

    def _watch(self, execution_id: str) -> Watched | None:
        """The execution's watch on its client's stream (None: the server cannot push)."""
        watched = self._watched
        if watched is None and self._submission is not None:
            watched = self._watched = self._submission.watched  # awaited since the server took it
        if watched is None or _broke(watched):
            watched = self._watched = self._core.completions.watch(execution_id)
        return watched

    @property
    def execution_id(self) -> str:
        """The server's id for it; waits for the server's answer to a submit still on its way, and raises
        the error that refused it."""
        if self._execution_id is None:
            assert self._submission is not None
            self._execution_id = self._submission.id_blocking(self._runtime.check_blocking_allowed)
        return self._execution_id

    async def _id(self) -> str:
        """:attr:`execution_id`, awaited on the runtime loop."""
        if self._execution_id is None:
            assert self._submission is not None
            try:
                self._execution_id = await self._submission.id()
            except Exception:
                self._last_status = "failed"
                raise
        return self._execution_id

    async def _result(self, timeout: float | None) -> Any:
        try:
            execution_id = await self._id()
            value = await self._core.result(execution_id, timeout, self._target, self._watch(execution_id))
        except TimeoutError:
            raise
        except Exception as exc:
            self._last_status = getattr(exc, "status", self._last_status)
            raise
        self._last_status = "completed"
        return value

    async def _exception(self, timeout: float | None) -> BaseException | None:
        try:
            await self._result(timeout)
        except TimeoutError:
            raise
        except Exception as exc:
            return exc
        return None

    async def _info(self) -> ExecutionState:
        state = await self._core.state(await self._id())
        self._last_status = state.status
        return state

    async def _done(self) -> bool:
        try:
            execution_id = await self._id()
        except Exception:  # refused when submitted: done, with its error
            return True
        return await self._core.ended(execution_id, self._watch(execution_id))

    async def _cancel(self) -> bool:
        cancelled = await self._core.cancel(await self._id())
        if cancelled:
            self._last_status = "cancelled"
        return cancelled

    def _cancel_on_interrupt(self) -> Any:
        return self._cancel_quietly("interrupted while waiting for the result")

    async def _cancel_quietly(self, reason: str) -> None:
        """Cancel on the way out of an interrupted wait, where a failure has nobody to tell."""
        try:
            execution_id = await self._id()
        except Exception:  # refused: there is nothing to cancel
            return
        await self._core.cancel_quietly(execution_id, reason)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}: {self._last_status}>"

    def _bundle(self, error: str = "") -> dict[str, str]:
        return _repr.bundle(
            self,
            "execution.html",
            name=self.name,
            execution_id=self._execution_id or "(on its way)",
            status=self._last_status,
            error=error,
        )


def _broke(watched: Watched) -> bool:
    """The watch ended without the execution's end (its stream's server went away): watch again."""
    ended = watched.ended
    return ended.done() and isinstance(ended.exception(), Unavailable)


TaskLike = str | FunctionBase | TaskRef


class ClientBase:
    """The connection and the reprs that ``Client`` and ``AsyncClient`` share."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: TlsOption = None,
        forward_output: bool = True,
        inline_limit_bytes: int | None = None,
        message_limit: int | None = None,
    ) -> None:
        self._connection = Connection(address, token=token, tls=tls, message_limit=message_limit)
        self._runtime: Runtime = get_runtime()
        self._core = Core(self._connection, self._runtime.loop, inline_limit_bytes)
        self.forward_output = forward_output
        _nested.remember(self._core)
        self._has_token = bool(token)
        self._runtime.on_shutdown(self._connection.close)
        #: What stops this client's live views when it closes.
        self._view_stoppers: list[Callable[[], None]] = []

    @property
    def address(self) -> str:
        return self._connection.address

    @staticmethod
    def _ship(
        fn: Callable[..., Any], name: str | None, defaults: Mapping[str, Any]
    ) -> tuple[PickledFunction, CallOptions]:
        """``function(fn, name=..., **defaults)``: the function serialized for the server, and the
        handle's call options (task options travel with the artifact)."""
        options, task_options = split_options(defaults)
        return pickled_function(fn, name, task_options), options

    @property
    def forward_output(self) -> bool:
        """Whether what remote functions print shows here as it is printed (per call: the
        ``forward_output`` option)."""
        return self._core.forward_output

    @forward_output.setter
    def forward_output(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"forward_output is True or False, not {value!r}")
        self._core.forward_output = value

    def _registration(
        self,
        spec_for: Callable[[Mapping[str, str]], tuple[str, function_pb2.ArtifactSpec]],
        name: str | None,
        description: str,
        defaults: Mapping[str, Any],
    ) -> tuple[CallOptions, Coroutine[Any, Any, TaskRef]]:
        """``register_module`` / ``register_process``: the handle's options, and the registration to await
        (``spec_for`` builds the artifact, and its default task name, from the task options)."""
        options, task_options = split_options(defaults)
        default_name, spec = spec_for(task_options)
        check_task_name(name or default_name)
        return options, self._core.register(name or default_name, spec, description=description)

    def panel(
        self,
        interval: float = 1.0,
        *,
        alerts: Sequence[Alert] | None = None,
        on_alert: Callable[[Breach], Any] | None = None,
    ) -> Panel:
        """A live monitoring panel (an ipywidget): health, running / pending / completed / failed counts,
        throughput and latency over time, success rate and run-time percentiles by function and the latest
        executions. With ``alerts`` (a list of :class:`~spear_sdk.Alert`) it shows their breaches, and calls
        ``on_alert(breach)`` once per new breach.

        It refreshes every ``interval`` seconds on the event loop running here (a notebook's) until it is
        closed or this client closes; without a running loop, ``refresh()`` updates it. Needs the ``lab``
        extra (ipywidgets).
        """
        from .widgets.panel import Panel

        return Panel(self._core, self._runtime, interval, self._view_stoppers, alerts, on_alert)

    def watch(self, executions: Iterable[ExecutionBase], interval: float = 1.0) -> Watch:
        """A live table of these executions (status, duration, result or error) that stops refreshing once
        all of them have finished, or when closed."""
        from .widgets.watch import Watch

        chosen = [(e.execution_id, e.name) for e in dict.fromkeys(executions)]
        return Watch(self._core, self._runtime, chosen, interval, self._view_stoppers)

    def _stop_views(self) -> None:
        for stop in list(self._view_stoppers):
            stop()

    @staticmethod
    def _target(task: TaskLike) -> Target:
        return task._target if isinstance(task, FunctionBase) else task

    def __repr__(self) -> str:
        tls = "on" if self._connection.secure else "off"
        return f"<{type(self).__name__} tls={tls} token={'on' if self._has_token else 'off'}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _repr.bundle(
            self,
            "client.html",
            address=self.address,
            tls="on" if self._connection.secure else "off",
            token="on" if self._has_token else "off",
        )


async def next_chunk(chunks: Any) -> Any:
    """The next chunk, or ``END``: a coroutine cannot hand ``StopAsyncIteration`` across threads."""
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return END
