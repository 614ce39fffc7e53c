"""The Dask side of the executor: the task every spearlet call runs as, inside a Dask worker.

A Dask worker thread cannot be stopped, cannot cap a call's memory and captures no output, so the call does
not run in it: the thread hands its jobs to a child process, the same worker the process pool spawns
(:mod:`..worker`, speaking :mod:`..messages`), and relays what the child says. Each thread keeps one warm
child for the calls it runs one after another; a job with ``fresh_instance`` gets a child of its own.
A task of ``process`` jobs gets a :class:`.process_jobs.ProcessJobs` instead, which runs each program
and answers on a connection just as a child does.

What travels back to the spearlet:

* while the jobs run, the child's "started", log and chunk messages, and each job's result, as events on
  the spearlet's topic (``Worker.log_event``: worker → scheduler → the subscribed client, in order), each
  ``[key, [[job index, kind, payload], ...]]`` with what the child said since the last one. A result thus
  reaches the spearlet as soon as the task's end does, without a second round trip to fetch it;
* the task's result, :data:`TaskResult`: the instance id, the result messages too large for an event, why
  the child died if it did, and how many events were sent (the client waits for that many before it
  trusts the result).

Cancelling the Dask future does not stop a running thread: :class:`.plugin.SpearletPlugin` sees the task
leave ``executing`` and calls :func:`kill`, which kills the child's process group. The thread then reads
EOF and ends the task with :class:`Stopped`. A child dies with the worker that started it
(``PR_SET_PDEATHSIG``), so a killed Dask worker leaves no call running.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from spearlet.engine.executors.base import Job
from spearlet.engine.executors.dask.flow import Window
from spearlet.engine.executors.dask.process_jobs import ProcessJobs
from spearlet.engine.executors.messages import CHUNK, LOG, READY, RESULT, STARTED, ResultMessage, job_message
from spearlet.engine.executors.worker_process import describe_exit, init_message, start_worker

#: Every task the executor submits has a key with this prefix: ``spear-{execution id}-a{attempt}-...``.
KEY_PREFIX = "spear-"
#: Event kinds: a job started, printed, yielded a value, or ended; the task was stopped and its process is
#: gone.
EVENT_STARTED, EVENT_LOG, EVENT_CHUNK, EVENT_RESULT, EVENT_STOPPED = "s", "l", "c", "r", "x"
#: The scheduler keeps a topic's last events (``distributed.admin.low-level-log-length``, 1000): larger
#: results travel as the task's result instead.
RESULT_EVENT_LIMIT = 64 << 10
_READY_TIMEOUT_S = 60.0
#: How long what the child said may wait for company before it goes out as an event. An event sent just
#: before the task's end would hold the end back a batching interval at the worker and at the scheduler.
COALESCE_S = 0.005
#: The worker stops a job this long after its deadline, if the spearlet has not stopped it by then.
DEADLINE_SLACK_S = 1.0
#: How long the end of a task waits for its sender thread (done by then, unless the child died).
_SENDER_JOIN_S = 1.0

#: ``(instance_id, {job index: its result message, for results not sent as events}, why the child died
#: ("" if it did not), events sent)``
TaskResult = tuple[str, dict[int, ResultMessage], str, int]


@dataclass(frozen=True)
class TaskSpec:
    """What one Dask task runs: jobs back to back on one child, each reporting on ``topic``."""

    topic: str
    #: Each job's result goes out as an event as soon as it is known (so that a pipeline's stop loses only
    #: the running job); results larger than :data:`RESULT_EVENT_LIMIT` wait for the task's end.
    jobs: Sequence[Job]


class Stopped(Exception):
    """The task was cancelled and its child killed; nobody waits for this task's result any more."""


@dataclass(eq=False)
class _Child:
    proc: subprocess.Popen[bytes]
    conn: Connection[bytes, bytes]
    killed: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        with self.lock:
            self.killed = True
            if self.proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self) -> int:
        """Make sure it is gone (its whole process group) and collect its exit status."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.conn.close()
        return self.proc.wait()


#: What runs a task's jobs: a call process, or for ``process`` artifacts the thread that runs the programs.
_Host = _Child | ProcessJobs

_local = threading.local()
_lock = threading.Lock()
#: The host running each task's jobs, by task key (what :func:`kill` looks up).
_running: dict[str, _Host] = {}
#: The chunks in flight of each task that streams, by task key (what :func:`grant` looks up).
_windows: dict[str, Window] = {}


def _spawn() -> _Child:
    proc, ours = start_worker()
    conn: Connection[bytes, bytes] = Connection(ours.detach())
    child = _Child(proc, conn)
    try:
        conn.send_bytes(pickle.dumps(init_message(), pickle.HIGHEST_PROTOCOL))
        if not conn.poll(_READY_TIMEOUT_S):
            raise RuntimeError(f"the worker process did not start within {_READY_TIMEOUT_S:g} s")
        message = pickle.loads(conn.recv_bytes())
        if message[0] != READY:
            raise RuntimeError(f"the worker process said {message[0]!r} instead of ready")
    except BaseException as exc:
        code = child.reap()
        if isinstance(exc, (EOFError, OSError)):
            raise RuntimeError(f"the worker process exited with code {code} while starting") from None
        raise
    return child


def _take_child(fresh: bool) -> _Child:
    """This thread's warm child (started if there is none, or it died), or a new one for ``fresh``."""
    if fresh:
        return _spawn()
    child: _Child | None = getattr(_local, "child", None)
    if child is None or child.killed or child.proc.poll() is not None:
        if child is not None:
            child.reap()
        child = _local.child = _spawn()
    return child


def kill(key: str) -> bool:
    """Kill the child running the task ``key`` (its thread then ends the task); False if none is."""
    with _lock:
        child = _running.get(key)
        window = _windows.get(key)
    if child is None:
        return False
    child.kill()
    if window is not None:
        window.wake()
    return True


def grant(key: str, taken: int) -> None:
    """The spearlet's reader took the first ``taken`` chunks of the task ``key`` (see :mod:`.flow`); run
    on the worker by ``Client.run``."""
    with _lock:
        window = _windows.get(key)
    if window is not None:
        window.grant(taken)


def kill_all() -> None:
    with _lock:
        children = list(_running.values())
    for child in children:
        child.kill()


def run_task(spec_bytes: bytes) -> TaskResult:
    """The Dask task: run the spec's jobs on a child process of this worker, relaying as they go."""
    from distributed import get_worker

    spec: TaskSpec = pickle.loads(spec_bytes)
    worker = get_worker()
    key = str(worker.get_current_task())
    instance_id = f"dask-{worker.name}"
    # A task's jobs share an artifact: a batch calls one function.
    programs = spec.jobs[0].artifact.type == "process"
    child: _Host = ProcessJobs() if programs else _take_child(spec.jobs[0].fresh_instance)
    window = Window() if any(job.stream for job in spec.jobs) else None
    with _lock:
        _running[key] = child
        if window is not None:
            _windows[key] = window
    try:
        # A cancel that came before the child was registered found nothing to kill: look again.
        task = worker.state.tasks.get(key)
        if task is None or task.state not in ("executing", "long-running"):
            child.kill()
        return _relay(worker, key, spec, child, instance_id, window)
    finally:
        with _lock:
            _running.pop(key, None)
            _windows.pop(key, None)
        if programs or spec.jobs[0].fresh_instance or child.killed:
            child.reap()


def _relay(
    worker: Any, key: str, spec: TaskSpec, child: _Host, instance_id: str, window: Window | None
) -> TaskResult:
    jobs = spec.jobs
    results: dict[int, ResultMessage] = {}
    index = 0  # the job running now
    pending: list[list[object]] = []  # events not yet sent
    sent = 0

    def flush() -> None:
        # One event for whatever the child said since the last one: a quick pipeline's starts and
        # results cost the scheduler one message, not one each.
        nonlocal sent
        worker.log_event(spec.topic, [key, pending.copy()])
        pending.clear()
        sent += 1

    def overdue() -> Stopped:
        # The spearlet did not stop it in time (it may not reach us): stop it here.
        child.kill()
        child.reap()
        limit = jobs[index].timeout_ms
        return Stopped(f"the Dask worker stopped the call {DEADLINE_SLACK_S:g} s past its {limit} ms limit")

    sender = _send_jobs(child, jobs)
    # The worker's address tells the spearlet where to acknowledge chunks (:mod:`.flow`).
    started = [instance_id, str(worker.address)]
    if not jobs[0].announce_start:  # it starts on arrival, and the child will not say so
        pending.append([0, EVENT_STARTED, started])
    died = ""
    deadline = _deadline(jobs[0])
    while index < len(jobs):
        try:
            if pending and not child.conn.poll(COALESCE_S):
                flush()
            if window is not None and window.full():
                # Read nothing more until the spearlet's reader catches up: the call blocks on its pipe.
                if pending:
                    flush()
                if not window.wait(deadline):
                    raise overdue()
            if deadline is not None and not _wait_readable(child, deadline):
                raise overdue()
            message = pickle.loads(child.conn.recv_bytes())
        except (EOFError, OSError):
            code = child.reap()
            if child.killed:
                pending.append([index, EVENT_STOPPED, instance_id])
                flush()
                raise Stopped(f"task {key} was stopped") from None
            died = f"the worker process died while running the function: it {describe_exit(code)}"
            break
        kind = message[0]
        if kind == RESULT:
            if _small(message):
                pending.append([index, EVENT_RESULT, list(message)])
            else:
                results[index] = message
            index += 1
            if index < len(jobs):
                deadline = _deadline(jobs[index])
        elif kind == LOG:
            pending.append([index, EVENT_LOG, message[1]])
        elif kind == CHUNK:
            pending.append([index, EVENT_CHUNK, message[1]])
            if window is not None:
                window.sent(len(message[1]))
        elif kind == STARTED:
            deadline = _deadline(jobs[index])
            pending.append([index, EVENT_STARTED, started])
    if sender is not None:
        sender.join(_SENDER_JOIN_S)
    if pending:
        flush()
    return instance_id, results, died, sent


def _send_jobs(child: _Host, jobs: Sequence[Job]) -> threading.Thread | None:
    """Send the jobs to the child, which runs them in order. A pipeline's are written by a thread of
    their own: the child answers each job before it reads the next, and while this thread waited on a
    full pipe the child would wait on its answers, which nobody reads."""

    def send(batch: Sequence[Job]) -> None:
        try:
            for job in batch:
                child.conn.send_bytes(pickle.dumps(job_message(job), pickle.HIGHEST_PROTOCOL))
        except OSError:
            pass  # dead already: the reader says how

    send(jobs[:1])
    if len(jobs) == 1:
        return None
    thread = threading.Thread(target=send, args=(jobs[1:],), name="spearlet-dask-send", daemon=True)
    thread.start()
    return thread


def _deadline(job: Job) -> float | None:
    if job.timeout_ms <= 0:
        return None
    return time.monotonic() + job.timeout_ms / 1000 + DEADLINE_SLACK_S


def _small(message: ResultMessage) -> bool:
    result = message[2]
    return result is None or len(result) <= RESULT_EVENT_LIMIT


def _wait_readable(child: _Host, deadline: float) -> bool:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return False
    readable, _, _ = select.select([child.conn.fileno()], [], [], remaining)
    return bool(readable)
