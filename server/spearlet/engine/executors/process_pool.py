"""A warm pool of spawned worker processes, each read directly by the event loop.

Workers are spawned with ``subprocess.Popen`` (never
forked, never ``multiprocessing``'s spawn, which re-imports ``__main__``), each in its own session so that
its whole process group can be killed. Each worker has a socket of a ``socketpair``; the loop reads it with
``add_reader`` and splits the frames itself (:mod:`.messages` defines them), so a call costs two
socket messages and no thread hop. A worker's exit is watched with a pidfd on the loop too, which is also
where it is reaped.

A worker that dies fails only its own job (``WORKER_CRASHED``) and is replaced in the background; a
cancelled job's worker is killed, reaped, and replaced. When a stream's reader falls behind (the sink's
``chunk`` says so) the loop stops reading that worker's socket until the sink is writable again: the
worker then blocks on its full socket, and so does the generator. Replacements that cannot start are
retried with a backoff, and :attr:`ProcessExecutor.healthy` turns False after a few failures in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import pickle
import signal
import socket
import subprocess
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import cast

from spearlet.engine.executors.base import (
    DEFAULT_LOG_LIMIT,
    FAILED,
    NOT_STARTED,
    STOPPED,
    WORKER_CRASHED,
    Executor,
    Job,
    Outcome,
    Pipeline,
    Sink,
)
from spearlet.engine.executors.messages import (
    CHUNK,
    LOG,
    READY,
    RESULT,
    STARTED,
    ChunkMessage,
    LogMessage,
    ResultMessage,
    WorkerMessage,
    job_message,
    outcome_of,
)
from spearlet.engine.executors.worker_process import describe_exit, init_message, start_worker

log = logging.getLogger(__name__)

#: Spawn failures in a row after which the pool reports itself unhealthy.
UNHEALTHY_AFTER = 3
_BACKOFF_MAX_S = 2.0
_REAP_TIMEOUT_S = 5.0
_READ_SIZE = 1 << 16
_BIG_READ_MAX = 1 << 23
_FRAME_LIMIT = 0x7FFFFFFF
_PICKLE = pickle.HIGHEST_PROTOCOL


def _frame(payload: bytes) -> bytes:
    """A frame as :class:`multiprocessing.connection.Connection` reads it."""
    size = len(payload)
    if size <= _FRAME_LIMIT:
        return size.to_bytes(4, "big") + payload
    return b"\xff\xff\xff\xff" + size.to_bytes(8, "big") + payload


def _resolved(loop: asyncio.AbstractEventLoop, outcome: Outcome) -> asyncio.Future[Outcome]:
    fut: asyncio.Future[Outcome] = loop.create_future()
    fut.set_result(outcome)
    return fut


def describe_worker_exit(pid: int, returncode: int) -> str:
    return f"worker process {pid} {describe_exit(returncode)}"


def _has_exited(pid: int, proc: subprocess.Popen[bytes]) -> bool:
    """Without reaping it where possible, so that its process group can still be killed safely."""
    waitid = getattr(os, "waitid", None)
    if waitid is None:
        return proc.poll() is not None
    try:
        return waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


class WorkerState(enum.Enum):
    """Where a worker process is in its life; it only moves down this list."""

    #: Spawned; its "ready" has not come yet.
    STARTING = "starting"
    #: Takes jobs (idle or busy: its ``entries`` say which).
    READY = "ready"
    #: Its socket closed or its exit was seen: it takes no more jobs, and its exit brings a replacement.
    DEAD = "dead"
    #: Killed on purpose: whatever it still sends is ignored.
    KILLED = "killed"


class _Worker:
    """The pool's handle on one worker process. Its state changes only through the methods below."""

    __slots__ = (
        "buf",
        "entries",
        "exited",
        "fresh",
        "instance_id",
        "paused",
        "pid",
        "pidfd",
        "proc",
        "ready",
        "sock",
        "state",
    )

    def __init__(
        self, proc: subprocess.Popen[bytes], sock: socket.socket, fresh: bool, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.instance_id = f"worker-{proc.pid}"
        self.sock: socket.socket | None = sock
        self.buf = bytearray()
        #: Started for one job (``Job.fresh_instance``), never parked in the pool.
        self.fresh = fresh
        self.state = WorkerState.STARTING
        #: Its socket is not being read until its sink is writable again.
        self.paused = False
        self.pidfd: int | None = None
        #: Resolved with True on "ready", False if the worker exits first.
        self.ready: asyncio.Future[bool] = loop.create_future()
        #: Resolved with the return code once the worker is reaped.
        self.exited: asyncio.Future[int] = loop.create_future()
        #: The jobs sent to it, oldest (running) first, each with its outcome and sink.
        self.entries: deque[tuple[asyncio.Future[Outcome], Sink]] = deque()

    @property
    def dead(self) -> bool:
        return self.state in (WorkerState.DEAD, WorkerState.KILLED)

    @property
    def killed(self) -> bool:
        return self.state is WorkerState.KILLED

    def became_ready(self) -> None:
        """Its "ready" arrived (perhaps read only after its exit: then it stays dead)."""
        if self.state is WorkerState.STARTING:
            self.state = WorkerState.READY
        self.ready.set_result(True)

    def lost(self) -> None:
        """Its socket closed or its exit was seen."""
        if not self.dead:
            self.state = WorkerState.DEAD

    def mark_killed(self) -> bool:
        """About to be killed on purpose; False if it already was."""
        if self.killed:
            return False
        self.state = WorkerState.KILLED
        return True


class ProcessExecutor(Executor):
    """Runs each job in a warm worker process; cancelling a job kills its worker."""

    name = "process"
    stops_work = True
    limits_memory = True

    def __init__(
        self, size: int, *, log_limit_bytes: int = DEFAULT_LOG_LIMIT, start_timeout_s: float = 60.0
    ) -> None:
        """``size`` warm workers; ``log_limit_bytes`` caps every job's own limit."""
        if size < 1:
            raise ValueError("a process pool needs at least one worker")
        self._size = size
        self._log_cap = log_limit_bytes
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[_Worker] = set()  # every live one, warm or fresh
        self._warm: set[_Worker] = set()  # the warm ones, starting or ready
        self._idle: deque[_Worker] = deque()
        self._waiters: deque[asyncio.Future[_Worker | None]] = deque()
        self._failures = 0  # spawn failures in a row
        self._last_error = ""
        self._refill_handle: asyncio.TimerHandle | None = None
        self._changed: asyncio.Event | None = None
        self._closed = False
        self._resumers: set[asyncio.Task[None]] = set()  # one per paused worker

    # -- Executor -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()
        self._refill_now()
        deadline = self._loop.time() + self._start_timeout_s
        while not self._has_ready():
            remaining = deadline - self._loop.time()
            if self._failures >= UNHEALTHY_AFTER or remaining <= 0:
                reason = self._last_error or f"none became ready within {self._start_timeout_s:g} s"
                await self.close()
                raise RuntimeError(f"no worker process could be started: {reason}")
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def run(self, job: Job, sink: Sink) -> Outcome:
        if self._loop is None or self._closed:
            raise RuntimeError("the process executor is not running (call start() first)")
        if job.log_limit_bytes > self._log_cap:
            job = replace(job, log_limit_bytes=self._log_cap)
        if job.fresh_instance:
            return await self._run_fresh(job, sink)
        worker = self._idle.pop() if self._idle else await self._acquire()
        if worker is None:
            return Outcome(FAILED, error_code=WORKER_CRASHED, error_message=self._unavailable())
        return await self._run_on(worker, job, sink)

    async def close(self) -> None:
        self._closed = True
        if self._refill_handle is not None:
            self._refill_handle.cancel()
            self._refill_handle = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        workers = list(self._workers)
        for worker in workers:
            self._fail_job(worker, "the process executor was closed")
            self._kill(worker)
        for resumer in self._resumers:
            resumer.cancel()
        for worker in workers:
            await self._reap(worker)
        if self._resumers:
            await asyncio.wait(self._resumers)

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if not w.exited.done()]

    @property
    def healthy(self) -> bool:
        return self._failures < UNHEALTHY_AFTER

    # -- running a job ------------------------------------------------------------------------------------

    async def _acquire(self) -> _Worker | None:
        """An idle warm worker, once one is free; None if none can be started."""
        assert self._loop is not None
        if not self.healthy and not self._has_ready():
            return None
        waiter: asyncio.Future[_Worker | None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and (worker := waiter.result()) is not None:
                self._release(worker)  # handed over just as we were cancelled
            raise

    async def _run_on(self, worker: _Worker, job: Job, sink: Sink) -> Outcome:
        (fut,) = await self._send(worker, [job], [sink])
        if not job.announce_start:  # it starts on arrival
            sink.started(worker.instance_id)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                # Still running: stop the work for real before the cancellation goes on.
                self._stop(worker)
                await self._reap(worker)
            raise

    async def _send(
        self, worker: _Worker, jobs: Sequence[Job], sinks: Sequence[Sink]
    ) -> list[asyncio.Future[Outcome]]:
        """Queue ``jobs`` on ``worker`` in one write; it runs them in order."""
        assert self._loop is not None
        try:
            data = b"".join(_frame(pickle.dumps(job_message(job), _PICKLE)) for job in jobs)
        except Exception as exc:  # only a job the engine built badly
            if not worker.entries:
                self._release(worker)
            raise RuntimeError(f"cannot send the job to a worker: {exc}") from exc
        futures = [self._loop.create_future() for _ in jobs]
        worker.entries.extend(zip(futures, sinks, strict=True))
        sock = worker.sock
        if sock is None:  # died after it was handed to us
            if worker.exited.done():
                self._fail_job(worker, self._died(worker))
            return futures
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._on_eof(worker)  # dead: its exit fails the jobs
            return futures
        if sent < len(data):
            try:
                await self._loop.sock_sendall(sock, data[sent:])
            except OSError:  # the send failed half-way: the worker is gone
                self._on_eof(worker)
        return futures

    async def start_pipeline(self, jobs: Sequence[Job], sinks: Sequence[Sink]) -> Pipeline:
        """Send ``jobs`` to one warm worker as a pipeline: it runs them one after another, with no round
        trip between them. :meth:`Pipeline.stop` kills the worker; jobs it had not started come back
        :data:`NOT_STARTED`."""
        if self._loop is None or self._closed:
            raise RuntimeError("the process executor is not running (call start() first)")
        jobs = [
            replace(job, log_limit_bytes=self._log_cap) if job.log_limit_bytes > self._log_cap else job
            for job in jobs
        ]
        worker = self._idle.pop() if self._idle else await self._acquire()
        if worker is None:
            failed = Outcome(FAILED, error_code=WORKER_CRASHED, error_message=self._unavailable())
            return Pipeline([_resolved(self._loop, failed) for _ in jobs], lambda: None)
        return Pipeline(await self._send(worker, jobs, sinks), lambda: self._stop(worker, once_gone=True))

    def _stop(self, worker: _Worker, *, once_gone: bool = False) -> None:
        """Kill the worker now: its running job ends STOPPED, the ones queued behind it NOT_STARTED; with
        ``once_gone``, only once the process has exited, as a single job's cancel returns only then."""
        entries, worker.entries = worker.entries, deque()

        def end(*_unused: object) -> None:
            for index, (fut, _sink) in enumerate(entries):
                if not fut.done():
                    code = STOPPED if index == 0 else NOT_STARTED
                    fut.set_result(Outcome(FAILED, error_code=code, instance_id=worker.instance_id))

        self._kill(worker)
        if not once_gone or worker.exited.done():
            end()
            return
        worker.exited.add_done_callback(end)
        assert self._loop is not None
        self._loop.call_later(_REAP_TIMEOUT_S, end)  # (one that never exits is logged by _reap)

    async def _run_fresh(self, job: Job, sink: Sink) -> Outcome:
        """Run in a worker started for this job alone, and retire it afterwards."""
        try:
            worker = self._spawn(fresh=True)
        except OSError as exc:
            return Outcome(
                FAILED, error_code=WORKER_CRASHED, error_message=f"cannot start a worker process: {exc}"
            )
        try:
            if not await worker.ready:
                message = describe_worker_exit(worker.pid, worker.exited.result()) + " before it was ready"
                return Outcome(FAILED, error_code=WORKER_CRASHED, error_message=message)
            return await self._run_on(worker, job, sink)
        finally:
            self._kill(worker)
            await self._reap(worker)

    def _fail_job(self, worker: _Worker, message: str) -> None:
        """The worker died: its running job failed with it, the ones queued behind it never started."""
        entries, worker.entries = worker.entries, deque()
        for index, (fut, _) in enumerate(entries):
            if not fut.done():
                outcome = (
                    Outcome(
                        FAILED,
                        error_code=WORKER_CRASHED,
                        error_message=message,
                        instance_id=worker.instance_id,
                    )
                    if index == 0
                    else Outcome(FAILED, error_code=NOT_STARTED, instance_id=worker.instance_id)
                )
                fut.set_result(outcome)

    def _died(self, worker: _Worker) -> str:
        exited = worker.exited
        status = describe_worker_exit(worker.pid, exited.result()) if exited.done() else "it exited"
        return f"the worker process died while running the function: {status}"

    def _has_ready(self) -> bool:
        return any(w.ready.done() and w.ready.result() for w in self._warm)

    def _unavailable(self) -> str:
        return f"no worker process could be started: {self._last_error or 'unknown reason'}"

    # -- the pool ------------------------------------------------------------------------------------------

    def _spawn(self, fresh: bool) -> _Worker:
        loop = self._loop
        assert loop is not None
        proc, ours = start_worker()
        # Small, and the socket buffer is empty: this does not wait for the worker.
        ours.sendall(_frame(pickle.dumps(init_message(), _PICKLE)))
        ours.setblocking(False)
        worker = _Worker(proc, ours, fresh, loop)
        self._workers.add(worker)
        if not fresh:
            self._warm.add(worker)
        loop.add_reader(ours.fileno(), self._on_readable, worker)
        try:
            worker.pidfd = os.pidfd_open(worker.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel, not Linux): poll instead
            loop.call_later(0.05, self._poll_exit, worker)
        else:
            loop.add_reader(worker.pidfd, self._on_exit, worker)
        return worker

    def _refill(self) -> None:
        """Bring the warm pool back to size, now or after a backoff when spawns keep failing."""
        if self._closed or self._refill_handle is not None or len(self._warm) >= self._size:
            return
        assert self._loop is not None
        if self._failures:
            delay = min(0.05 * 2 ** (self._failures - 1), _BACKOFF_MAX_S)
            self._refill_handle = self._loop.call_later(delay, self._refill_now)
        else:
            self._refill_now()

    def _refill_now(self) -> None:
        self._refill_handle = None
        while not self._closed and len(self._warm) < self._size:
            try:
                self._spawn(fresh=False)
            except OSError as exc:
                self._spawn_failed(f"cannot start a worker process: {exc}")
                self._refill()
                return

    def _spawn_failed(self, reason: str) -> None:
        self._failures += 1
        self._last_error = reason
        log.warning("%s", reason)
        if not self.healthy and not self._has_ready():
            while self._waiters:  # nothing will serve them soon: let them fail now
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
        if self._changed is not None:
            self._changed.set()

    def _release(self, worker: _Worker) -> None:
        """A warm worker is free: hand it to the first waiter, or park it."""
        if self._closed:
            self._kill(worker)
            return
        if worker.dead:  # its exit brings a replacement
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(worker)
                return
        self._idle.append(worker)

    def _kill(self, worker: _Worker) -> None:
        """SIGKILL the worker's process group (reaping happens in :meth:`_on_exit`)."""
        if not worker.mark_killed():
            return
        self._drop_socket(worker)
        self._kill_group(worker)

    def _kill_group(self, worker: _Worker) -> None:
        # Only before the reap: until then the group's id cannot be reused.
        if not worker.exited.done():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.pid, signal.SIGKILL)

    async def _reap(self, worker: _Worker) -> None:
        """Wait until the worker is reaped, even through further cancellations (the caller re-raises)."""
        assert self._loop is not None
        deadline = self._loop.time() + _REAP_TIMEOUT_S
        while not worker.exited.done():
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                log.warning("worker process %d did not exit %g s after SIGKILL", worker.pid, _REAP_TIMEOUT_S)
                return
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait((worker.exited,), timeout=remaining)

    def _drop_socket(self, worker: _Worker) -> None:
        worker.lost()
        sock = worker.sock
        if sock is not None:
            worker.sock = None
            assert self._loop is not None
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if worker in self._warm:
            with contextlib.suppress(ValueError):
                self._idle.remove(worker)

    # -- loop callbacks ------------------------------------------------------------------------------------

    def _on_readable(self, worker: _Worker) -> None:
        sock = worker.sock
        if sock is None:
            return
        buf = worker.buf
        size = _READ_SIZE
        if len(buf) >= 4:  # a big frame is arriving: read it in larger pieces
            size = max(size, min(int.from_bytes(buf[:4], "big", signed=True) + 12 - len(buf), _BIG_READ_MAX))
        try:
            data = sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._on_eof(worker)
            return
        self._feed(worker, data)

    def _feed(self, worker: _Worker, data: bytes) -> None:
        buf = worker.buf
        if buf:
            buf += data
            source: bytes | bytearray = buf
        else:
            source = data
        view = memoryview(source)
        end = len(source)
        pos = 0
        messages = []
        while end - pos >= 4:
            size = int.from_bytes(view[pos : pos + 4], "big", signed=True)
            start = pos + 4
            if size < 0:
                if end - pos < 12:
                    break
                size = int.from_bytes(view[start : start + 8], "big")
                start += 8
            stop = start + size
            if stop > end:
                break
            messages.append(pickle.loads(view[start:stop]))
            pos = stop
        view.release()
        if source is buf:
            del buf[:pos]
        elif pos < end:
            worker.buf = bytearray(data[pos:])
        for message in messages:
            self._dispatch(worker, message)

    def _dispatch(self, worker: _Worker, message: WorkerMessage) -> None:
        if worker.killed:
            return
        kind = message[0]
        if kind == RESULT:
            if not worker.entries:
                return
            fut, _ = worker.entries.popleft()
            outcome = outcome_of(cast(ResultMessage, message), worker.instance_id)
            if not worker.entries and not worker.fresh:
                self._release(worker)
            if not fut.done():
                fut.set_result(outcome)
        elif kind == READY:
            self._failures = 0
            worker.became_ready()
            if not worker.fresh:
                self._release(worker)
            if self._changed is not None:
                self._changed.set()
        elif worker.entries:
            sink = worker.entries[0][1]
            try:
                if kind == LOG:
                    sink.log(cast(LogMessage, message)[1])
                elif kind == CHUNK:
                    if not sink.chunk(cast(ChunkMessage, message)[1]):
                        self._pause(worker, sink)
                elif kind == STARTED:
                    sink.started(worker.instance_id)
            except Exception:  # the engine's bug must not take the pool's reader down
                log.exception("the sink of a job in %s failed", worker.instance_id)

    def _pause(self, worker: _Worker, sink: Sink) -> None:
        """Stop reading the worker until ``sink`` is writable (messages already read still go through)."""
        sock = worker.sock
        if sock is None or worker.paused:
            return
        assert self._loop is not None
        worker.paused = True
        self._loop.remove_reader(sock.fileno())
        resumer = self._loop.create_task(self._resume_when_writable(worker, sink, sock))
        self._resumers.add(resumer)
        resumer.add_done_callback(self._resumers.discard)

    async def _resume_when_writable(self, worker: _Worker, sink: Sink, sock: socket.socket) -> None:
        await sink.writable()
        worker.paused = False
        if worker.sock is sock:  # not killed or gone meanwhile
            assert self._loop is not None
            self._loop.add_reader(sock.fileno(), self._on_readable, worker)

    def _on_eof(self, worker: _Worker) -> None:
        """The worker's socket closed: it is dying (or broke it); make sure, and let its exit finish up."""
        self._drop_socket(worker)
        self._kill_group(worker)

    def _on_exit(self, worker: _Worker) -> None:
        assert self._loop is not None
        if worker.pidfd is not None:
            self._loop.remove_reader(worker.pidfd)
            os.close(worker.pidfd)
            worker.pidfd = None
        self._finish_exit(worker)

    def _poll_exit(self, worker: _Worker) -> None:
        if _has_exited(worker.pid, worker.proc):
            self._finish_exit(worker)
        else:
            assert self._loop is not None
            self._loop.call_later(0.05, self._poll_exit, worker)

    def _finish_exit(self, worker: _Worker) -> None:
        # A result written just before the exit still counts: read what is left first (but never park
        # this worker again).
        worker.lost()
        sock = worker.sock
        while sock is not None and worker.sock is sock:
            try:
                data = sock.recv(_READ_SIZE)
            except OSError:
                break
            if not data:
                break
            self._feed(worker, data)
        self._drop_socket(worker)
        self._kill_group(worker)  # the rest of its group (processes the function started)
        returncode = worker.proc.wait()  # reaps; immediate, the process has exited
        worker.exited.set_result(returncode)
        self._workers.discard(worker)
        was_ready = worker.ready.done()
        if not was_ready:
            worker.ready.set_result(False)
        message = describe_worker_exit(worker.pid, returncode)
        self._fail_job(worker, self._died(worker))
        if worker.fresh or worker not in self._warm:
            return
        self._warm.discard(worker)
        if self._closed:
            return
        if not was_ready:
            self._spawn_failed(f"{message} while starting (see the server's stderr)")
        elif not worker.killed:
            log.warning("%s; replacing it", message)
        self._refill()
