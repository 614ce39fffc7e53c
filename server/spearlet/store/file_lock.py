"""One server per SQLite store: an exclusive ``flock`` on a lock file beside the database.

Two servers writing one database each keep their own counters and live executions, so their figures
disagree with what is stored. The lock file holds the pid of the server that has it, for the error
message of the next one. The operating system drops the lock when that process ends, however it ends.
``flock`` locks belong to an open file, so a second store on the same file in the same process is refused
too. Where ``fcntl`` is missing (Windows) there is no lock.
"""

from __future__ import annotations

import contextlib
import os

from .base import StoreLocked

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".lock"


def lock_path(database: str) -> str:
    return database + LOCK_SUFFIX


class StoreLock:
    """Held from construction until :meth:`release`; raises :class:`StoreLocked` when another holds it."""

    def __init__(self, database: str, url: str) -> None:
        self.path = lock_path(database)
        self._fd: int | None = None
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"process {pid}" if pid is not None else "another process"
            raise StoreLocked(
                f"store {url} is in use by {holder} (lock file {self.path}): one server per SQLite "
                "store; stop that server, or give this one another store",
                path=database,
                pid=pid,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the file drops the lock


def holder(database: str) -> int | None:
    """The pid holding the lock of ``database`` (``None``: free, or unknown); for checks before opening."""
    if fcntl is None or not os.path.exists(lock_path(database)):
        return None
    fd = os.open(lock_path(database), os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None
