"""A worker process: ``python -m spearlet.engine.executors.worker FD``.

It talks to the server over a :class:`multiprocessing.connection.Connection` on the inherited socket
``FD``; :mod:`.messages` defines what goes each way. Jobs may arrive while one is running (a batch sends a
pipeline of them in one write): they wait in the socket and run in order.

The worker exits on EOF (the server closed its end or went away); on Linux it is also killed with the
server's thread that spawned it (``PR_SET_PDEATHSIG``), so a busy worker does not outlive a killed server.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import threading
import time
from multiprocessing.connection import Connection

from spearlet.engine.executors import call
from spearlet.engine.executors.messages import (
    CHUNK,
    LOG,
    READY,
    STARTED,
    InitMessage,
    StartedMessage,
    WorkerMessage,
    job_of,
    result_message,
)


class PeakRss:
    """Peak resident memory of this process since :meth:`reset` (Linux ``VmHWM``; else the lifetime peak)."""

    def __init__(self) -> None:
        self._status = _open("/proc/self/status", os.O_RDONLY)
        self._clear_refs = _open("/proc/self/clear_refs", os.O_WRONLY)

    def reset(self) -> None:
        if self._clear_refs is not None:
            try:
                os.write(self._clear_refs, b"5")  # 5: reset the peak RSS to the current RSS
            except OSError:
                self._clear_refs = None

    def read(self) -> int:
        if self._status is not None:
            data = os.pread(self._status, 8192, 0)
            start = data.find(b"VmHWM:")
            if start >= 0:
                return int(data[start + 6 : data.index(b"kB", start)]) * 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _open(path: str, flags: int) -> int | None:
    try:
        return os.open(path, flags)
    except OSError:
        return None


def _die_with_parent(server_pid: int) -> None:
    if sys.platform == "linux":
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != server_pid:  # the server went away before the signal was armed
        os._exit(0)


def serve(conn: Connection[bytes, bytes]) -> None:
    """Answer jobs until EOF."""
    lock = threading.Lock()  # log and chunk messages may come from the capture's flusher thread

    def send(message: WorkerMessage) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        with lock:
            conn.send_bytes(data)

    def emit_log(text: str) -> None:
        send((LOG, text))

    def emit_chunk(data: bytes) -> None:
        send((CHUNK, data))

    try:
        init: InitMessage = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    _, sys_path, server_pid = init
    sys.path[:] = sys_path
    _die_with_parent(server_pid)
    call.install_stream_proxies()
    peak = PeakRss()
    peak.reset()
    pid = os.getpid()
    instance_id = f"worker-{pid}"
    send((READY, pid))
    started: StartedMessage = (STARTED,)
    while True:
        try:
            job = job_of(pickle.loads(conn.recv_bytes()))
        except (EOFError, OSError):
            return
        if job.announce_start:
            send(started)
        outcome = call.run_job(
            job,
            instance_id=instance_id,
            emit_log=emit_log,
            emit_chunk=emit_chunk,
            process_wide=True,
            clock=time.process_time,
            peak_memory=peak.read,
        )
        send(result_message(outcome))
        peak.reset()  # off the critical path: the server already has the result


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.exit("usage: python -m spearlet.engine.executors.worker FD")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the server went away mid-send
        serve(Connection(int(args[0])))
    # Skip interpreter teardown: threads the user's functions left behind must not keep us alive.
    os._exit(0)


if __name__ == "__main__":
    main()
