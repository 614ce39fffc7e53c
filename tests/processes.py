"""Process accounting for tests: is a pid gone, which children are left, are any of them zombies."""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time

import psutil


def pid_gone(pid: int) -> bool:
    """Gone for good: no process, and not even a zombie (our children must be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def pid_dead(pid: int) -> bool:
    """Dead, possibly a zombie of someone else's (a grandchild reparented to init)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def children(pid: int | None = None) -> dict[int, str]:
    """Every descendant of ``pid`` (default: this process) that is still there, with its status."""
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    found = {}
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            found[proc.pid] = proc.status()
    return found


def zombies(pid: int | None = None) -> list[int]:
    return [child for child, status in children(pid).items() if status == psutil.STATUS_ZOMBIE]


def tree_rss(pid: int) -> int:
    """Resident memory of a process and its descendants, in bytes."""
    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def worker_pid(instance_id: str) -> int:
    """The pid in the ``instance_id`` of a worker (``worker-<pid>``) or a process (``process-<pid>``)."""
    kind, _, pid = instance_id.partition("-")
    assert kind in ("worker", "process"), instance_id
    return int(pid)


class ExitClock:
    """When watched processes end (``time.time()``), noted by a thread per process.

    A pidfd turns readable the moment its process exits, before anyone reaps it; waiting on it in a thread
    of its own keeps a busy event loop out of the measurement.
    """

    def __init__(self) -> None:
        self._ended: dict[int, float] = {}
        self._threads: list[threading.Thread] = []

    def watch(self, pid: int) -> None:
        """Start watching ``pid``, which must not have been reaped yet."""
        fd = os.pidfd_open(pid)
        thread = threading.Thread(target=self._wait, args=(pid, fd), name=f"exit-clock-{pid}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def ended_at(self, pid: int) -> float | None:
        return self._ended.get(pid)

    def join(self, timeout: float = 10) -> None:
        """Wait for the threads: every watched process must have ended."""
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), f"{thread.name}: the process did not end"
        self._threads.clear()

    def _wait(self, pid: int, fd: int) -> None:
        try:
            select.select([fd], [], [])
            self._ended[pid] = time.time()
        finally:
            os.close(fd)
