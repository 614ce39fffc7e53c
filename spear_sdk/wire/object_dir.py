"""Writing objects into a server's object directory on this machine, reusing freed files' memory.

The directory's folders: ``objects/`` (one file per object), ``incoming/`` (files being written; a file
becomes an object when the server moves it into ``objects/``) and ``free/``, files of deleted objects the
server keeps for reuse. Those files' pages are already in memory: copying a value into one costs a memcpy,
where a new file's pages must each be found and zeroed first, several times slower for large values (a
100 MB result: ~20 ms instead of ~100 ms). This is what an object store's arena gives Ray.

A writer (a client putting a value, a worker writing a result) claims a free file by renaming it into
``incoming/``: the rename is atomic, so two writers never get one file. A file still mapped by someone
(a value that points into a deleted object's memory) must not be written over: a write lease, which the
kernel grants only while nobody else has the file open or mapped, tells. Where leases are not granted,
nothing is reused.

Copying into a file's pages through a mapping costs about half a ``pwrite`` (100 MB: ~11 ms against
~22 ms), but only once the mapping's page tables exist: setting them up costs as much as the copy. So a
writer keeps the files it reused open and mapped (:class:`KeptFiles`), and the next time it claims one of
them it copies straight in. Its own open descriptor is the only one a write lease taken on that same
descriptor tolerates, so the check that nobody else maps the file stays exact.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from .blob import Blob

INCOMING = "incoming"
OBJECTS = "objects"
FREE = "free"
#: A free file is used for an object no more than this many times its size (the rest is wasted until
#: the server trims the file).
FIT = 2


#: Bytes of reused files one process keeps mapped for its next writes.
KEPT_BYTES = 1 << 30
#: A kept file unused this long is let go: the server deletes free files unused for a minute, and a
#: mapping would keep a deleted file's memory.
KEPT_IDLE_S = 20.0


def write_object(root: str | os.PathLike[str], laid_out: Blob, name: str) -> None:
    """Write ``laid_out`` as ``incoming/{name}`` of the object directory ``root``: into a free file when
    one fits (the file may be longer than the object), else into a new one."""
    target = Path(root) / INCOMING / name
    if claim_free(Path(root), laid_out.size, target, KEPT.writable, prefer=KEPT.inodes()):
        try:
            KEPT.write_over(target, laid_out)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise
        return
    laid_out.write_new_file(target)


def claim_free(
    root: Path,
    size: int,
    target: Path,
    writable: Callable[[Path], bool],
    prefer: frozenset[int] = frozenset(),
) -> bool:
    """Move a free file of at least ``size`` bytes (and at most :data:`FIT` times that) that nobody
    else maps (``writable`` says, once it is moved) to ``target``, one whose inode is in ``prefer``
    first; False when there is none."""
    entries = []
    with contextlib.suppress(OSError):  # no free folder: an older server's directory
        for entry in os.scandir(root / FREE):
            with contextlib.suppress(OSError):  # taken meanwhile
                entries.append((entry.inode() not in prefer, entry.stat().st_size, entry.name))
    for _, length, name in sorted(entries):
        if length < size or length > FIT * size + 4096:
            continue
        try:
            os.rename(root / FREE / name, target)
        except OSError:
            continue  # another writer took it
        if writable(target):
            return True
        with contextlib.suppress(OSError):  # still mapped somewhere: back to the pool, untouched
            os.rename(target, root / FREE / secrets.token_hex(16))
    return False


def unused(path: Path) -> bool:
    """Whether no process has ``path`` open or mapped (so its bytes may be written over); False where
    the kernel grants no leases."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return _alone(fd)
    finally:
        os.close(fd)


def _alone(fd: int) -> bool:
    """Whether ``fd`` is the only open description of its file (mappings count as opens): a write lease
    on it is granted only then. False where the kernel grants no leases."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return False
    set_lease = getattr(fcntl, "F_SETLEASE", None)  # Linux only
    if set_lease is None:
        return False
    try:
        fcntl.fcntl(fd, set_lease, fcntl.F_WRLCK)
    except OSError:  # open or mapped elsewhere (EAGAIN), or leases refused
        return False
    fcntl.fcntl(fd, set_lease, fcntl.F_UNLCK)
    return True


class _Kept(NamedTuple):
    fd: int
    mapping: mmap.mmap
    length: int
    used_at: float


class KeptFiles:
    """The reused files this process wrote, held open (read-write) and mapped, by inode, for the next
    write into them; at most ``budget`` bytes, each let go after ``idle_s`` unused (a thread does it)."""

    def __init__(self, budget: int = KEPT_BYTES, idle_s: float = KEPT_IDLE_S) -> None:
        self.budget = budget
        self.idle_s = idle_s
        self._files: OrderedDict[tuple[int, int], _Kept] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()  # the thread executor writes results from several threads
        self._reaper: threading.Thread | None = None

    def inodes(self) -> frozenset[int]:
        with self._lock:
            return frozenset(ino for _, ino in self._files)

    def writable(self, path: Path) -> bool:
        """Whether nobody else has the claimed free file ``path`` open or mapped."""
        try:
            stat = os.stat(path)
        except OSError:
            return False
        with self._lock:
            kept = self._files.get((stat.st_dev, stat.st_ino))
        if kept is None:
            return unused(path)
        return _alone(kept.fd)

    def write_over(self, path: Path, laid_out: Blob) -> None:
        """Copy ``laid_out`` to the start of the claimed free file ``path``: through the kept mapping of
        it, or one made now and kept (a plain write where the budget is spent)."""
        stat = os.stat(path)
        identity = (stat.st_dev, stat.st_ino)
        with self._lock:
            kept = self._files.pop(identity, None)
            if kept is not None:
                self._held -= kept.length
        if kept is not None and kept.length != stat.st_size:  # not the file it was
            _close(kept)
            kept = None
        if kept is None:
            if stat.st_size > self.budget:
                laid_out.write_over(path)
                return
            kept = self._open(path)
        try:
            laid_out.copy_into(kept.mapping)
        except BaseException:
            _close(kept)
            raise
        self._keep(identity, kept._replace(used_at=time.monotonic()))

    def _open(self, path: Path) -> _Kept:
        fd = os.open(path, os.O_RDWR)
        try:
            length = os.fstat(fd).st_size
            if length < 1:
                raise OSError(f"{path} is empty")
            # Populated at once: filling the page tables in one call costs far less than a fault a page.
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapping = mmap.mmap(fd, length, flags=flags)
        except BaseException:
            os.close(fd)
            raise
        return _Kept(fd, mapping, length, time.monotonic())

    def _keep(self, identity: tuple[int, int], kept: _Kept) -> None:
        dropped = []
        with self._lock:
            self._files[identity] = kept
            self._held += kept.length
            while self._held > self.budget:
                _, oldest = self._files.popitem(last=False)
                self._held -= oldest.length
                dropped.append(oldest)
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="spear-kept-files", daemon=True)
                self._reaper.start()
        for old in dropped:
            _close(old)

    def _reap(self) -> None:
        while True:
            time.sleep(self.idle_s / 2)
            self.release(idle_for=self.idle_s)

    def release(self, idle_for: float = 0.0) -> None:
        """Let go of the files unused for ``idle_for`` seconds, or deleted since."""
        cutoff = time.monotonic() - idle_for
        dropped = []
        with self._lock:
            for identity, kept in list(self._files.items()):
                if kept.used_at <= cutoff or _deleted(kept.fd):
                    del self._files[identity]
                    self._held -= kept.length
                    dropped.append(kept)
        for kept in dropped:
            _close(kept)

    @property
    def held(self) -> int:
        """Bytes of the files kept now."""
        return self._held

    def _forget_in_child(self) -> None:
        """In a forked child: let go of the parent's files (their descriptors, open here too, would keep
        the parent from writing into them again) and of its reaper, which did not come along."""
        self._lock = threading.Lock()
        self._reaper = None
        files, self._files, self._held = self._files, OrderedDict(), 0
        for kept in files.values():
            _close(kept)


def _deleted(fd: int) -> bool:
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def _close(kept: _Kept) -> None:
    with contextlib.suppress(BufferError):  # a view into it is still alive: closed once it goes
        kept.mapping.close()
    os.close(kept.fd)


#: This process's kept files.
KEPT = KeptFiles()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=KEPT._forget_in_child)
