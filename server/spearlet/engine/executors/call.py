"""Run one :class:`~.base.Job` inside whatever hosts it: a worker process or a thread of the server.

Both hosts call :func:`run_job`; it loads the artifact (:mod:`.loading`), decodes and binds the arguments,
calls the function, encodes the result (or each streamed chunk) and captures what the function prints
(:mod:`.capture`). How anything travels back is the host's business: it passes ``emit_log`` and
``emit_chunk``.

``Job.environment`` is set in ``os.environ`` for the run. In a worker process, which runs one job at a
time, it stays set after the run, and the next job changes only what differs (:class:`_WorkerEnvironment`):
every job carries the server's own variables, and setting and restoring them each time cost a worker more
than the call of a small function. ``os.environ`` belongs to the process, so with the thread host
concurrent jobs see each other's variables; there a variable gets its value from before the first of them
back when the last of them ends (:class:`_Environment`).
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from spear_sdk.wire import codec
from spearlet.engine.executors import large_values, object_cache
from spearlet.engine.executors.base import (
    BAD_ARGUMENTS,
    COMPLETED,
    EXCEPTION,
    FAILED,
    OUT_OF_MEMORY,
    RESULT_NOT_SERIALIZABLE,
    Job,
    Outcome,
)
from spearlet.engine.executors.capture import OutputCapture, attach, detach, install_stream_proxies
from spearlet.engine.executors.loading import Failure, describe, format_exception, load
from spearlet.engine.executors.memory_limit import memory_limit

_TRACEBACK_LIMIT = 64 * 1024


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
    capture = OutputCapture(emit_log, job.log_limit_bytes)
    install_stream_proxies()
    attach(capture, process_wide=process_wide)
    if process_wide:
        _WORKER_ENVIRONMENT.switch(job.environment)
    elif job.environment:
        _ENVIRONMENT.apply(job.environment)
    started = clock()
    result: bytes | None = None
    code = message = ""
    remote: tuple[str, str, str] = ("", "", "")
    # A thread shares the server's address space: the engine never gives a thread host a limit.
    limit_mb = job.memory_limit_mb if process_wide else 0
    try:
        result = _execute(job, capture, emit_chunk, limit_mb)
    except Failure as failure:
        code, message = failure.code, failure.message
        details = failure.details[-_TRACEBACK_LIMIT:]
        if details:
            capture.write_unbounded(details)
        if failure.raised is not None:
            remote = (type(failure.raised).__name__, str(failure.raised), details)
    finally:
        cpu_ms = (clock() - started) * 1000.0
        if job.environment and not process_wide:
            _ENVIRONMENT.restore(job.environment)
        detach(process_wide=process_wide)
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
    if signature is not None and (kwargs or not _takes_positionally(signature, len(args))):
        try:
            signature.bind(*args, **kwargs)  # checks only: the call below takes the originals
        except TypeError as exc:
            raise Failure(BAD_ARGUMENTS, f"bad arguments for {name}{signature}: {exc}") from None
    # What the function raised is described only once the limit is lifted: that takes memory too.
    try:
        with memory_limit(limit_mb):
            return _call(job, fn, args, kwargs, emit_chunk)
    except _Raised as raised:
        raise _user_failure(raised.exc, limit_mb) from None
    except MemoryError as exc:  # while encoding what the function returned or yielded
        raise _out_of_memory(exc, limit_mb) from None


#: For each signature seen (by ``id``, the signature kept alive with its figures): how many positional
#: arguments it takes, at least and at most (``None``: any number).
_POSITIONAL: dict[int, tuple[inspect.Signature, int, int | None]] = {}


def _takes_positionally(signature: inspect.Signature, count: int) -> bool:
    """Whether ``count`` positional arguments (and no keyword ones) bind to ``signature``: what
    ``signature.bind`` would find, for a fraction of its cost, on every call of a small function."""
    known = _POSITIONAL.get(id(signature))
    if known is None or known[0] is not signature:
        least, most = 0, 0
        for parameter in signature.parameters.values():
            if parameter.kind is parameter.VAR_POSITIONAL:
                most = -1
            elif parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                most += 1  # (all come before a VAR_POSITIONAL)
                if parameter.default is parameter.empty:
                    least += 1
            elif parameter.kind is parameter.KEYWORD_ONLY and parameter.default is parameter.empty:
                least = -1  # a required keyword-only parameter: positional arguments never suffice
                break
        if len(_POSITIONAL) >= 1024:
            _POSITIONAL.clear()
        known = _POSITIONAL[id(signature)] = (signature, least, None if most < 0 else most)
    _, fewest, at_most = known
    return 0 <= fewest <= count and (at_most is None or count <= at_most)


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
        except (Failure, MemoryError):
            value.close()
            raise
        emit_chunk(data)


def _decode_arguments(job: Job) -> tuple[list[object], dict[str, object]]:
    with object_cache.resolving(job.object_dir):
        return _decode_each(job)


def _decode_each(job: Job) -> tuple[list[object], dict[str, object]]:
    allow = job.allow_pickle
    args: list[object] = []
    for position, data in enumerate(job.args):
        try:
            args.append(codec.decode_bytes(data, allow_pickle=allow))
        except Exception as exc:
            raise Failure(BAD_ARGUMENTS, f"cannot decode argument {position}: {exc}") from None
    kwargs: dict[str, object] = {}
    for name, data in job.kwargs.items():
        try:
            kwargs[name] = codec.decode_bytes(data, allow_pickle=allow)
        except Exception as exc:
            raise Failure(BAD_ARGUMENTS, f"cannot decode argument {name!r}: {exc}") from None
    return args, kwargs


def _encode(job: Job, value: object) -> bytes:
    try:
        return large_values.encode(job, value)
    except (MemoryError, Failure):
        raise
    except Exception as exc:
        raise Failure(RESULT_NOT_SERIALIZABLE, f"the result cannot be serialized: {exc}") from None


def _run_coroutine(coroutine: Any) -> object:
    import asyncio  # only async functions pay for it

    return asyncio.run(coroutine)


def _user_failure(exc: BaseException, limit_mb: int) -> Failure:
    if isinstance(exc, MemoryError):
        return _out_of_memory(exc, limit_mb)
    return Failure(EXCEPTION, describe(exc), format_exception(exc, __file__), raised=exc)


def _out_of_memory(exc: MemoryError, limit_mb: int) -> Failure:
    """(``raised`` is set: the MemoryError came from the user's code or what it returned.)"""
    if limit_mb:
        message = (
            f"out of memory: the call needed more than its limit of {limit_mb} MiB "
            f'(artifact_spec.metadata["memory_limit_mb"]); {describe(exc)}'
        )
    else:
        message = f"out of memory: {describe(exc)}"
    return Failure(OUT_OF_MEMORY, message, format_exception(exc, __file__), raised=exc)


# -- environment ---------------------------------------------------------------------------------------


class _Environment:
    """The variables jobs set, counted per name: each job sets its values, and a variable's value from
    before the first job that set it comes back when the last of them ends. Saving and restoring per job
    would not do with jobs on several threads: a job that starts while another runs would save the
    other's value, and put it back after both ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._before: dict[str, tuple[str | None, int]] = {}  # name -> (value before any job, jobs)

    def apply(self, environment: Mapping[str, str]) -> None:
        with self._lock:
            for name, value in environment.items():
                before, users = self._before.get(name, (os.environ.get(name), 0))
                self._before[name] = (before, users + 1)
                os.environ[name] = value

    def restore(self, environment: Mapping[str, str]) -> None:
        with self._lock:
            for name in environment:
                before, users = self._before.pop(name)
                if users > 1:
                    self._before[name] = (before, users - 1)
                elif before is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = before


_ENVIRONMENT = _Environment()


class _WorkerEnvironment:
    """The variables of the jobs of a process that runs one job at a time: each job's are in place when
    it starts; a variable an earlier job set and this one does not has its value from before the first
    such job back. A variable already holding the job's value is not set again (the function may have
    changed it: its value is read, not remembered)."""

    def __init__(self) -> None:
        self._before: dict[str, str | None] = {}  # name -> its value before a job set it

    def switch(self, environment: Mapping[str, str]) -> None:
        environ = os.environ
        before = self._before
        for name in [name for name in before if name not in environment]:
            value = before.pop(name)
            if value is None:
                environ.pop(name, None)
            else:
                environ[name] = value
        for name, value in environment.items():
            current = environ.get(name)
            if name not in before:
                before[name] = current
            if current != value:
                environ[name] = value


_WORKER_ENVIRONMENT = _WorkerEnvironment()


__all__ = ["install_stream_proxies", "run_job"]
