"""Runs ``process`` artifacts: an executable that speaks JSON lines (see the README, "What runs").

The executable (``location``: a path or a name on ``PATH``; extra argv in ``metadata["args"]`` as a JSON
list) gets one JSON object ``{"function", "args", "kwargs"}`` on stdin, which is then closed. Each stdout
line is one JSON value: in stream mode every line is a chunk, otherwise the last line is the result (no
output: ``None``). stderr goes to the logs, bounded like a function's output. It runs in a session of its
own with ``os.environ`` plus ``Job.environment``; cancelling kills its process group. A process whose
descendants keep its stdout open is waited for until they close it. No memory or CPU figure is reported.

Numbers arrive from most clients as doubles; an integral one is written as a JSON integer (as JavaScript
and Go write it), so that the program reads ``3`` rather than ``3.0``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import shutil
import signal

from spear_sdk.wire import codec
from spearlet.engine.executors.base import (
    ARTIFACT_LOAD_FAILED,
    BAD_ARGUMENTS,
    COMPLETED,
    DEFAULT_LOG_LIMIT,
    FAILED,
    PROCESS_EXIT,
    PROCESS_OUTPUT_INVALID,
    RESULT_NOT_SERIALIZABLE,
    WORKER_CRASHED,
    Artifact,
    Job,
    Outcome,
    Sink,
)
from spearlet.engine.executors.child_process import ChildProcess
from spearlet.engine.logs import LogLimiter

#: Longest stdout line (one JSON value) accepted.
LINE_LIMIT = 256 << 20
#: What the stdout reader buffers before it stops reading the pipe (asyncio pauses at twice its limit).
#: Longer lines are put together piece by piece, so that a reader that falls behind holds the process
#: back instead of filling the server's memory.
_READ_LIMIT = 1 << 20
_STDERR_DRAIN_S = 1.0
_EXACT_DOUBLE_INT = 2**53


class _Failure(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SubprocessRunner:
    """Runs each ``process`` job in a new process (there is nothing to keep warm)."""

    name = "subprocess"
    #: Cancelling kills the process group.
    stops_work = True

    def __init__(self, *, log_limit_bytes: int = DEFAULT_LOG_LIMIT) -> None:
        """``log_limit_bytes`` caps every job's own limit."""
        self._log_cap = log_limit_bytes
        self._running: set[ChildProcess] = set()

    async def run(self, job: Job, sink: Sink) -> Outcome:
        try:
            argv = _argv(job.artifact)
            request = _request(job)
        except _Failure as failure:
            return Outcome(FAILED, error_code=failure.code, error_message=failure.message)
        try:
            proc = await ChildProcess.start(
                argv, env={**os.environ, **job.environment}, read_limit=_READ_LIMIT
            )
        except OSError as exc:
            return Outcome(
                FAILED, error_code=ARTIFACT_LOAD_FAILED, error_message=f"cannot start {argv[0]!r}: {exc}"
            )
        instance_id = f"process-{proc.pid}"
        self._running.add(proc)
        sink.started(instance_id)
        limiter = LogLimiter(min(job.log_limit_bytes, self._log_cap))
        writer = asyncio.ensure_future(_write_request(proc, request))
        errors = asyncio.ensure_future(_pump_stderr(proc, sink, limiter))
        try:
            try:
                result = await _read_results(proc, job, sink)
            except _Failure as failure:
                proc.kill()
                await proc.reap()
                return Outcome(
                    FAILED, error_code=failure.code, error_message=failure.message, instance_id=instance_id
                )
            returncode = await proc.wait()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(errors), _STDERR_DRAIN_S)
            if returncode < 0:
                code, message = WORKER_CRASHED, f"process killed by signal {_signal_name(-returncode)}"
            elif returncode > 0:
                code, message = PROCESS_EXIT, f"process exited with status {returncode}"
            else:
                return Outcome(COMPLETED, result=result, instance_id=instance_id)
            return Outcome(FAILED, error_code=code, error_message=message, instance_id=instance_id)
        except asyncio.CancelledError:
            proc.kill()
            await proc.reap()
            raise
        finally:
            self._running.discard(proc)
            for helper in (writer, errors):
                helper.cancel()
            proc.close()
            # Let them see their cancellation now, rather than warn about it when the loop closes.
            await asyncio.wait((writer, errors))

    async def close(self) -> None:
        """Kill every process still running, and reap them."""
        procs = list(self._running)
        for proc in procs:
            proc.kill()
        for proc in procs:
            await proc.reap()


def _argv(artifact: Artifact) -> list[str]:
    executable = shutil.which(artifact.location) if artifact.location else None
    if executable is None:
        raise _Failure(
            ARTIFACT_LOAD_FAILED, f"executable {artifact.location!r} not found (or not executable)"
        )
    try:
        extra = json.loads(artifact.metadata.get("args", "[]"))
    except ValueError as exc:
        raise _Failure(ARTIFACT_LOAD_FAILED, f"metadata['args'] is not JSON: {exc}") from None
    if not isinstance(extra, list) or not all(isinstance(arg, str) for arg in extra):
        raise _Failure(ARTIFACT_LOAD_FAILED, "metadata['args'] must be a JSON list of strings")
    return [executable, *extra]


def _request(job: Job) -> bytes:
    def decode(data: bytes, name: str) -> object:
        try:
            value = _integral(codec.decode_bytes(data, allow_pickle=job.allow_pickle))
            json.dumps(value, allow_nan=False)
        except (ValueError, TypeError) as exc:  # CodecError is a ValueError
            raise _Failure(BAD_ARGUMENTS, f"argument {name} cannot be sent as JSON: {exc}") from None
        return value

    args = [decode(data, str(position)) for position, data in enumerate(job.args)]
    kwargs = {name: decode(data, repr(name)) for name, data in job.kwargs.items()}
    message = {"function": job.artifact.function_name, "args": args, "kwargs": kwargs}
    return json.dumps(message, allow_nan=False).encode() + b"\n"


def _integral(value: object) -> object:
    """``value`` with integral floats (within a double's exact range) as ints."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT_DOUBLE_INT else value
    if isinstance(value, (list, tuple)):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


async def _write_request(proc: ChildProcess, request: bytes) -> None:
    stdin = proc.stdin
    assert stdin is not None
    try:
        stdin.write(request)
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it did not want its input; its exit status tells the rest
    finally:
        stdin.close()


async def _pump_stderr(proc: ChildProcess, sink: Sink, limiter: LogLimiter) -> None:
    stderr = proc.stderr
    assert stderr is not None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while data := await stderr.read(1 << 16):
        text = limiter.clip(decoder.decode(data))
        if text:
            sink.log(text)
    text = limiter.clip(decoder.decode(b"", final=True))
    if text:
        sink.log(text)


async def _read_results(proc: ChildProcess, job: Job, sink: Sink) -> bytes | None:
    """Chunks go to the sink as they come; returns the encoded result (None in stream mode)."""
    stdout = proc.stdout
    assert stdout is not None
    last: object = None
    number = 0
    while True:
        line = await _read_line(stdout)
        if not line:
            break
        number += 1
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            shown = line[:200].decode("utf-8", "replace").rstrip()
            raise _Failure(
                PROCESS_OUTPUT_INVALID, f"stdout line {number} is not JSON ({exc}): {shown!r}"
            ) from None
        if job.stream:
            if not sink.chunk(_encode(job, value)):
                await sink.writable()  # stdout is not read meanwhile: the process blocks on it
        else:
            last = value
    return None if job.stream else _encode(job, last)


async def _read_line(stdout: asyncio.StreamReader) -> bytes:
    """The next line, newline included (b"" at the end), up to :data:`LINE_LIMIT` bytes."""
    pieces: list[bytes] = []
    size = 0
    while True:
        try:
            pieces.append(await stdout.readuntil(b"\n"))
        except asyncio.IncompleteReadError as end:  # the last line, without a newline
            pieces.append(end.partial)
        except asyncio.LimitOverrunError as overrun:  # no newline in what is buffered: take that much
            piece = await stdout.readexactly(overrun.consumed)
            size += len(piece)
            if size > LINE_LIMIT:
                raise _Failure(
                    PROCESS_OUTPUT_INVALID, f"a stdout line is longer than {LINE_LIMIT} bytes"
                ) from None
            pieces.append(piece)
            continue
        return b"".join(pieces)


def _encode(job: Job, value: object) -> bytes:
    try:
        return codec.encode_bytes(value, exact=job.exact_results, allow_pickle=True)
    except codec.CodecError as exc:
        raise _Failure(RESULT_NOT_SERIALIZABLE, f"the result cannot be serialized: {exc}") from None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
