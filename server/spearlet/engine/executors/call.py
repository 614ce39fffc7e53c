"""Run one :class:`~.base.Job` inside whatever hosts it: a worker process or a thread of the server.

Both hosts call :func:`run_job`; it loads the artifact, decodes and binds the arguments, calls the function,
encodes the result (or each streamed chunk) and captures what the function prints. How anything travels
back is the host's business: it passes ``emit_log`` and ``emit_chunk``.

Output capture: ``sys.stdout``/``sys.stderr`` are replaced once by proxies that send a write to the capture
of the job running in the writing thread (thread host), or of the process's current job (worker host), and
everything else to the original stream. A capture keeps at most ``log_limit_bytes`` and forwards text in
coalesced pieces: a line at once if nothing went out in the last :data:`FLUSH_INTERVAL`, otherwise (and
partial lines) from one background flusher thread at the end of the interval. A function printing in a
tight loop therefore costs at most ~1/FLUSH_INTERVAL messages a second.

``Job.environment`` is set in ``os.environ`` for the run and restored afterwards. ``os.environ`` belongs
to the process, so with the thread host concurrent jobs see each other's variables.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import os
import pickle
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from spear_sdk.wire import codec
from spearlet.engine.executors.base import (
    ARTIFACT_LOAD_FAILED,
    BAD_ARGUMENTS,
    COMPLETED,
    EXCEPTION,
    FAILED,
    OUT_OF_MEMORY,
    RESULT_NOT_SERIALIZABLE,
    Artifact,
    Job,
    Outcome,
)
from spearlet.engine.executors.memory_limit import memory_limit

#: Longest a captured line waits before it is forwarded, when lines come faster than this.
FLUSH_INTERVAL = 0.05
#: Loaded artifacts kept per process (LRU), keyed by ``Artifact.cache_key``.
CACHE_SIZE = 256
_TRACEBACK_LIMIT = 64 * 1024


def truncation_marker(limit: int) -> str:
    return f"[... output truncated at {limit} bytes ...]\n"


# -- bounded, coalesced output capture ---------------------------------------------------------------


class LogLimiter:
    """Lets through at most ``limit`` UTF-8 bytes of text, then one truncation marker line."""

    __slots__ = ("limit", "remaining", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.remaining = self.limit
        self.truncated = False

    def clip(self, text: str) -> str:
        """The part of ``text`` to keep ('' once the limit is reached)."""
        if self.truncated or not text:
            return ""
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if size <= self.remaining:
            self.remaining -= size
            return text
        head = text.encode("utf-8", "surrogatepass")[: self.remaining].decode("utf-8", "ignore")
        self.remaining = 0
        self.truncated = True
        newline = "" if not head or head.endswith("\n") else "\n"
        return head + newline + truncation_marker(self.limit)


class OutputCapture:
    """One job's stdout and stderr, bounded and forwarded through ``emit`` in coalesced pieces."""

    def __init__(self, emit: Callable[[str], None], limit: int) -> None:
        self._emit = emit
        self._limiter = LogLimiter(limit)
        self._pending: list[str] = []
        # Reentrant: a failing emit may print, and that print comes back here.
        self._lock = threading.RLock()
        self._last_emit = 0.0
        self._scheduled = False
        self._closed = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            if self._closed:
                return len(text)
            kept = self._limiter.clip(text)
            if kept:
                self._pending.append(kept)
                now = time.monotonic()
                if "\n" in kept and now - self._last_emit >= FLUSH_INTERVAL:
                    self._flush_locked(now)
                elif not self._scheduled:
                    self._scheduled = True
                    _flusher.schedule(self, max(now, self._last_emit + FLUSH_INTERVAL))
        return len(text)

    def write_unbounded(self, text: str) -> None:
        """Add text that must survive truncation (the traceback of a failure)."""
        with self._lock:
            if not self._closed:
                self._pending.append(text)

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._closed:
                self._flush_locked(time.monotonic())

    def close(self) -> None:
        """Forward what is left; later writes (from threads the function left behind) are dropped."""
        with self._lock:
            self._flush_locked(time.monotonic())
            self._closed = True

    def _flush_locked(self, now: float) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last_emit = now
        # Emitting under the lock keeps pieces in order. Logs are best effort: a broken channel shows up
        # again, and is handled, when the host sends the result.
        with contextlib.suppress(Exception):
            self._emit(text)


class _Flusher:
    """One daemon thread per process that forwards captured text whose interval has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[OutputCapture, float] = {}
        self._wake_at = math.inf  # when the thread will look next; 0 while it is busy
        self._thread: threading.Thread | None = None

    def schedule(self, capture: OutputCapture, due: float) -> None:
        with self._cond:
            self._due.setdefault(capture, due)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spearlet-log-flusher", daemon=True)
                self._thread.start()
            if due < self._wake_at:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready = [capture for capture, due in self._due.items() if due <= now]
                for capture in ready:
                    del self._due[capture]
                if not ready:
                    self._wake_at = min(self._due.values(), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = 0.0
                    continue
            for capture in ready:
                capture.flush()


_flusher = _Flusher()
# Routing for the stream proxies: the capture of each thread running a job (thread host), and the one
# for every thread of the process (worker host, which runs one job at a time).
_thread_captures: dict[int, OutputCapture] = {}
_process_capture: OutputCapture | None = None
_install_lock = threading.Lock()


class _StreamProxy:
    """Stands in for ``sys.stdout``/``sys.stderr`` and routes each write to the capture it belongs to."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def write(self, text: str) -> int:
        capture = _thread_captures.get(threading.get_ident(), _process_capture)
        if capture is not None:
            return capture.write(text)
        if self._original is None:
            return len(text)
        return int(self._original.write(text))

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        routed = _thread_captures.get(threading.get_ident(), _process_capture)
        if routed is None and self._original is not None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install_stream_proxies() -> None:
    """Put the proxies in place (again, if someone replaced ``sys.stdout``/``sys.stderr`` since)."""
    if isinstance(sys.stdout, _StreamProxy) and isinstance(sys.stderr, _StreamProxy):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _StreamProxy):
            sys.stdout = _StreamProxy(sys.stdout)
        if not isinstance(sys.stderr, _StreamProxy):
            sys.stderr = _StreamProxy(sys.stderr)


# -- environment ---------------------------------------------------------------------------------------


def _apply_environment(environment: Mapping[str, str]) -> dict[str, str | None]:
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    return saved


def _restore_environment(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# -- loading artifacts -----------------------------------------------------------------------------------


class _Failure(Exception):
    """Ends a job with ``FAILED``; ``details`` goes to the logs. ``raised``: what the user's code raised."""

    def __init__(
        self, code: str, message: str, details: str = "", raised: BaseException | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details
        self.raised = raised


_Loaded = tuple[Callable[..., Any], "inspect.Signature | None", str]
_cache: OrderedDict[tuple[str, str, str], _Loaded] = OrderedDict()
_cache_lock = threading.Lock()


def load(artifact: Artifact) -> _Loaded:
    """(callable, its signature or None, a name for messages); cached under ``artifact.cache_key``."""
    key = (artifact.type, artifact.cache_key, artifact.function_name)
    if artifact.cache_key:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return hit
    loaded = _load(artifact)
    if artifact.cache_key:
        with _cache_lock:
            _cache[key] = loaded
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    return loaded


def _load(artifact: Artifact) -> _Loaded:
    if artifact.type == "python":
        fn, name = _load_python(artifact.location, artifact.function_name)
    elif artifact.type == "pickle":
        fn, name = _load_pickle(artifact.payload, artifact.function_name)
    else:
        raise _Failure(ARTIFACT_LOAD_FAILED, f"artifact type {artifact.type!r} does not run in this executor")
    if not callable(fn):
        raise _Failure(ARTIFACT_LOAD_FAILED, f"{name} is not callable (it is a {type(fn).__name__})")
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none; the call itself will check
        signature = None
    return fn, signature, name


def _load_python(location: str, function_name: str) -> tuple[object, str]:
    module_name, _, attr = location.partition(":")
    attr = function_name or attr
    if not module_name or not attr:
        raise _Failure(
            ARTIFACT_LOAD_FAILED, f"a python artifact's location is 'package.module:attr', not {location!r}"
        )
    try:
        obj: object = importlib.import_module(module_name)
    except BaseException as exc:
        # The module's own failure deserves its traceback; a missing module does not.
        details = "" if isinstance(exc, ModuleNotFoundError) else _format_exception(exc)
        raise _Failure(
            ARTIFACT_LOAD_FAILED, f"cannot import module {module_name!r}: {_describe(exc)}", details
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise _Failure(
                ARTIFACT_LOAD_FAILED, f"module {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj, f"{module_name}:{attr}"


def _load_pickle(payload: bytes | None, function_name: str) -> tuple[object, str]:
    if payload is None:
        raise _Failure(ARTIFACT_LOAD_FAILED, "the pickle artifact has no payload")
    try:
        obj = pickle.loads(payload)
    except BaseException as exc:
        raise _Failure(
            ARTIFACT_LOAD_FAILED, f"cannot unpickle the function: {_describe(exc)}", _format_exception(exc)
        ) from None
    if isinstance(obj, dict):
        names = ", ".join(sorted(map(str, obj))) or "none"
        if function_name:
            if function_name not in obj:
                raise _Failure(
                    ARTIFACT_LOAD_FAILED,
                    f"no function {function_name!r} in the pickled artifact (it has: {names})",
                )
            return obj[function_name], function_name
        if len(obj) != 1:
            raise _Failure(
                ARTIFACT_LOAD_FAILED,
                f"the pickled artifact holds several functions ({names}); set function_name",
            )
        name, fn = next(iter(obj.items()))
        return fn, str(name)
    return obj, getattr(obj, "__qualname__", function_name or "the pickled function")


# -- running -----------------------------------------------------------------------------------------------


def run_job(
    job: Job,
    *,
    instance_id: str,
    emit_log: Callable[[str], None],
    emit_chunk: Callable[[bytes], None],
    process_wide: bool,
    clock: Callable[[], float] = time.process_time,
    peak_memory: Callable[[], int] | None = None,
) -> Outcome:
    """Run ``job`` to its end in the calling thread.

    ``process_wide`` routes output of every thread to this job (a worker runs one job at a time); otherwise
    only the calling thread's. ``clock`` measures CPU time; ``peak_memory`` (bytes) is read at the end.
    Exceptions from ``emit_chunk`` (the host's channel broke) propagate.
    """
    global _process_capture
    capture = OutputCapture(emit_log, job.log_limit_bytes)
    install_stream_proxies()
    ident = threading.get_ident()
    if process_wide:
        _process_capture = capture
    else:
        _thread_captures[ident] = capture
    saved_env = _apply_environment(job.environment) if job.environment else None
    started = clock()
    result: bytes | None = None
    code = message = ""
    remote: tuple[str, str, str] = ("", "", "")
    # A thread shares the server's address space: the engine never gives a thread host a limit.
    limit_mb = job.memory_limit_mb if process_wide else 0
    try:
        result = _execute(job, capture, emit_chunk, limit_mb)
    except _Failure as failure:
        code, message = failure.code, failure.message
        details = failure.details[-_TRACEBACK_LIMIT:]
        if details:
            capture.write_unbounded(details)
        if failure.raised is not None:
            remote = (type(failure.raised).__name__, str(failure.raised), details)
    finally:
        cpu_ms = (clock() - started) * 1000.0
        if saved_env is not None:
            _restore_environment(saved_env)
        if process_wide:
            _process_capture = None
        else:
            _thread_captures.pop(ident, None)
        capture.close()
    return Outcome(
        status=FAILED if code else COMPLETED,
        result=result,
        error_code=code,
        error_message=message,
        memory_used_bytes=peak_memory() if peak_memory is not None else 0,
        cpu_time_ms=cpu_ms,
        instance_id=instance_id,
        remote_type=remote[0],
        remote_message=remote[1],
        remote_traceback=remote[2],
    )


def _execute(
    job: Job, capture: OutputCapture, emit_chunk: Callable[[bytes], None], limit_mb: int
) -> bytes | None:
    fn, signature, name = load(job.artifact)
    args, kwargs = _decode_arguments(job)
    if signature is not None:
        try:
            signature.bind(*args, **kwargs)  # checks only: the call below takes the originals
        except TypeError as exc:
            raise _Failure(BAD_ARGUMENTS, f"bad arguments for {name}{signature}: {exc}") from None
    # What the function raised is described only once the limit is lifted: that takes memory too.
    try:
        with memory_limit(limit_mb):
            return _call(job, fn, args, kwargs, emit_chunk)
    except _Raised as raised:
        raise _user_failure(raised.exc, limit_mb) from None
    except MemoryError as exc:  # while encoding what the function returned or yielded
        raise _out_of_memory(exc, limit_mb) from None


class _Raised(Exception):
    """Carries an exception of the user's code out of the memory limit."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc


def _call(
    job: Job,
    fn: Callable[..., Any],
    args: list[object],
    kwargs: dict[str, object],
    emit_chunk: Callable[[bytes], None],
) -> bytes | None:
    try:
        value = fn(*args, **kwargs)
        if inspect.iscoroutine(value):
            value = _run_coroutine(value)
        if inspect.isgenerator(value) and not job.stream:
            value = list(value)
    except BaseException as exc:
        raise _Raised(exc) from None
    if not job.stream:
        return _encode(job, value)
    if not inspect.isgenerator(value):
        emit_chunk(_encode(job, value))
        return None
    while True:
        try:
            item = next(value)
        except StopIteration:
            return None
        except BaseException as exc:
            raise _Raised(exc) from None
        try:
            data = _encode(job, item)
        except (_Failure, MemoryError):
            value.close()
            raise
        emit_chunk(data)


def _decode_arguments(job: Job) -> tuple[list[object], dict[str, object]]:
    allow = job.allow_pickle
    args: list[object] = []
    for position, data in enumerate(job.args):
        try:
            args.append(codec.decode_bytes(data, allow_pickle=allow))
        except Exception as exc:
            raise _Failure(BAD_ARGUMENTS, f"cannot decode argument {position}: {exc}") from None
    kwargs: dict[str, object] = {}
    for name, data in job.kwargs.items():
        try:
            kwargs[name] = codec.decode_bytes(data, allow_pickle=allow)
        except Exception as exc:
            raise _Failure(BAD_ARGUMENTS, f"cannot decode argument {name!r}: {exc}") from None
    return args, kwargs


def _encode(job: Job, value: object) -> bytes:
    try:
        return codec.encode_bytes(value, exact=job.exact_results, allow_pickle=True)
    except MemoryError:
        raise
    except Exception as exc:
        raise _Failure(RESULT_NOT_SERIALIZABLE, f"the result cannot be serialized: {exc}") from None


def _run_coroutine(coroutine: Any) -> object:
    import asyncio  # only async functions pay for it

    return asyncio.run(coroutine)


def _user_failure(exc: BaseException, limit_mb: int) -> _Failure:
    if isinstance(exc, MemoryError):
        return _out_of_memory(exc, limit_mb)
    return _Failure(EXCEPTION, _describe(exc), _format_exception(exc), raised=exc)


def _out_of_memory(exc: MemoryError, limit_mb: int) -> _Failure:
    """(``raised`` is set: the MemoryError came from the user's code or what it returned.)"""
    if limit_mb:
        message = (
            f"out of memory: the call needed more than its limit of {limit_mb} MiB "
            f'(artifact_spec.metadata["memory_limit_mb"]); {_describe(exc)}'
        )
    else:
        message = f"out of memory: {_describe(exc)}"
    return _Failure(OUT_OF_MEMORY, message, _format_exception(exc), raised=exc)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _format_exception(exc: BaseException) -> str:
    """The traceback without the frames of this module, so that it starts at the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


__all__ = [
    "CACHE_SIZE",
    "FLUSH_INTERVAL",
    "LogLimiter",
    "OutputCapture",
    "install_stream_proxies",
    "load",
    "run_job",
    "truncation_marker",
]
