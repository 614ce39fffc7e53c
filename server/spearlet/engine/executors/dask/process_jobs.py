"""``process`` artifacts on a Dask worker: the programs run there, as Python calls do.

:class:`ProcessJobs` stands where a call's worker process stands for a Python call (:mod:`.runner` relays
both alike): it reads jobs from a connection and answers with the worker's messages (:mod:`..messages`),
but runs each job with the same :class:`..subprocess_runner.SubprocessRunner` the server uses locally, on
an event loop in a thread of its own. The program's output is thus capped, its stdout lines parsed and
its exit status mapped exactly as on the server; :meth:`ProcessJobs.kill` cancels the run, which kills
the program's process group and reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import threading
from multiprocessing.connection import Connection

from spearlet.engine.executors.base import FAILED, WORKER_CRASHED, Job, Outcome
from spearlet.engine.executors.messages import CHUNK, LOG, STARTED, WorkerMessage, job_of, result_message
from spearlet.engine.executors.subprocess_runner import SubprocessRunner

#: How long :meth:`ProcessJobs.reap` waits for the thread (the run it cancelled kills and reaps first).
_JOIN_S = 10.0


class _Send:
    def __init__(self, conn: Connection[bytes, bytes]) -> None:
        self._conn = conn

    def __call__(self, message: WorkerMessage) -> None:
        with contextlib.suppress(OSError):  # the reader went away (the task was stopped): nobody listens
            self._conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


class _Relay:
    """The SubprocessRunner's sink: everything it is told goes to the connection as a message."""

    def __init__(self, send: _Send, job: Job) -> None:
        self._send = send
        self._announce = job.announce_start

    def started(self, instance_id: str) -> None:
        if self._announce:  # it waited behind others: the spearlet learns when it starts
            self._send((STARTED,))

    def chunk(self, data: bytes) -> bool:
        # A blocking write: while the reader holds back, the program's stdout is not read either.
        self._send((CHUNK, data))
        return True

    async def writable(self) -> None:
        return None

    def log(self, text: str) -> None:
        self._send((LOG, text))


class ProcessJobs:
    """Runs ``process`` jobs, one after another, for the connection :attr:`conn` (which the task reads
    like a call process's). Started at once; :meth:`reap` ends it."""

    def __init__(self) -> None:
        self.conn, theirs = multiprocessing.Pipe()
        self.killed = False
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: asyncio.Task[Outcome] | None = None
        self._thread = threading.Thread(
            target=self._serve, args=(theirs,), name="spearlet-dask-process", daemon=True
        )
        self._thread.start()

    def kill(self) -> None:
        """Stop: the running program's process group is killed and reaped, and no other job starts."""
        with self._lock:
            self.killed = True
            if self._loop is not None and self._running is not None:
                self._loop.call_soon_threadsafe(self._running.cancel)

    def reap(self) -> int:
        """Close the connection and wait for the thread (0: it ended; 1: it did not in time)."""
        with contextlib.suppress(OSError):
            self.conn.close()
        self._thread.join(_JOIN_S)
        return 1 if self._thread.is_alive() else 0

    def _serve(self, conn: Connection[bytes, bytes]) -> None:
        send = _Send(conn)
        try:
            while not self.killed:
                try:
                    job = job_of(pickle.loads(conn.recv_bytes()))  # as a call's worker reads it
                except (EOFError, OSError):
                    return
                outcome = asyncio.run(self._run(job, _Relay(send, job)))
                if outcome is None:  # killed: the connection's end tells the task
                    return
                send(result_message(outcome))
        finally:
            conn.close()

    async def _run(self, job: Job, sink: _Relay) -> Outcome | None:
        runner = SubprocessRunner(log_limit_bytes=job.log_limit_bytes)
        running = asyncio.ensure_future(runner.run(job, sink))
        with self._lock:
            if self.killed:
                running.cancel()
            self._loop, self._running = asyncio.get_running_loop(), running
        try:
            return await running
        except asyncio.CancelledError:
            return None
        except Exception as exc:  # a fault of ours: the job fails, saying so, and the next may run
            return Outcome(FAILED, error_code=WORKER_CRASHED, error_message=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._loop = self._running = None
