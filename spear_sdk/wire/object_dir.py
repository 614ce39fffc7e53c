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
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .blob import Blob

INCOMING = "incoming"
OBJECTS = "objects"
FREE = "free"
#: A free file is used for an object no more than this many times its size (the rest is wasted until
#: the server trims the file).
FIT = 2


def write_object(root: str | os.PathLike[str], laid_out: Blob, name: str) -> None:
    """Write ``laid_out`` as ``incoming/{name}`` of the object directory ``root``: into a free file when
    one fits (the file may be longer than the object), else into a new one."""
    target = Path(root) / INCOMING / name
    if claim_free(Path(root), laid_out.size, target):
        try:
            laid_out.write_over(target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
            raise
        return
    laid_out.write_new_file(target)


def claim_free(root: Path, size: int, target: Path) -> bool:
    """Move a free file of at least ``size`` bytes (and at most :data:`FIT` times that) that nobody
    maps to ``target``; False when there is none."""
    entries = []
    with contextlib.suppress(OSError):  # no free folder: an older server's directory
        for entry in os.scandir(root / FREE):
            with contextlib.suppress(OSError):  # taken meanwhile
                entries.append((entry.stat().st_size, entry.name))
    for length, name in sorted(entries):
        if length < size or length > FIT * size + 4096:
            continue
        try:
            os.rename(root / FREE / name, target)
        except OSError:
            continue  # another writer took it
        if unused(target):
            return True
        with contextlib.suppress(OSError):  # still mapped somewhere: back to the pool, untouched
            os.rename(target, root / FREE / secrets.token_hex(16))
    return False


def unused(path: Path) -> bool:
    """Whether no process has ``path`` open or mapped (so its bytes may be written over); False where
    the kernel grants no leases."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return False
    set_lease = getattr(fcntl, "F_SETLEASE", None)  # Linux only
    if set_lease is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, set_lease, fcntl.F_WRLCK)
    except OSError:  # open or mapped elsewhere (EAGAIN), or leases refused
        return False
    else:
        fcntl.fcntl(fd, set_lease, fcntl.F_UNLCK)
        return True
    finally:
        os.close(fd)
