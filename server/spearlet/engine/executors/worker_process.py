"""Starting the worker program (:mod:`.worker`) as a child process, for the process pool and for the Dask
runner alike: a new session of its own (so that a kill reaches what the call started), spawned rather than
forked (gRPC is not fork-safe), with one end of a socket pair to talk over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from spearlet.engine.executors.messages import INIT, InitMessage

WORKER_MODULE = "spearlet.engine.executors.worker"


def start_worker() -> tuple[subprocess.Popen[bytes], socket.socket]:
    """A new worker process and our end of its socket; it waits for :func:`init_message` first."""
    ours, theirs = socket.socketpair()
    try:
        fd = theirs.fileno()
        proc = subprocess.Popen(
            [sys.executable, "-m", WORKER_MODULE, str(fd)],
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, ours


def init_message() -> InitMessage:
    """What a worker is told first: the import path to use, and the parent to watch."""
    return (INIT, list(sys.path), os.getpid())


def describe_exit(returncode: int) -> str:
    """How a worker process ended, to follow its name in a message: ``was killed by signal SIGSEGV``,
    ``exited with code 3``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"was killed by signal {name}"
    return f"exited with code {returncode}"
