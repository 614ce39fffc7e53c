"""Where large objects' bytes live: files in one directory beside the store.

An object put through the streaming or same-machine RPCs (and every value that travels by reference) is a
file named after its key, in ``objects/``; its header (size, references, metadata) is a record of the
store like any object's. Files, not database blobs: a reader maps a file into memory and its arrays point
into the page cache, with no copy and no limit but the disk; a multi-hundred-megabyte blob in SQLite is
written twice (WAL, then the database) and read back whole.

``free/`` holds the files of deleted objects, kept for reuse (``spear_sdk.wire.object_dir``): a writer
copies a new large value into pages already in memory instead of a new file's, whose pages must each be
found and zeroed first. The folder holds at most :func:`free_budget` bytes, and a file nobody reused
within :data:`FREE_IDLE_S` goes, so an idle server gives the memory back.

``incoming/`` holds files being written: by a streamed put, by a worker writing a result, or by a client
on this machine. A file becomes an object only when moved into ``objects/`` (an atomic rename), so a
half-written file is never an object. ``.spear-host`` holds a random token: a client that reads the token
the server announced there shares the server's file system (see ``ObjectStoreInfo``).

A ``memory://`` store gets a fresh directory, in ``/dev/shm`` where there is one (shared memory: files
there never touch a disk), removed when the server stops (or, should its process be killed first, by the
next server to start on the machine, which finds the owner gone); a ``sqlite:///path`` store keeps its
objects in ``path.objects/``, durable like the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from spear_sdk.wire import blob
from spear_sdk.wire.object_dir import FREE, INCOMING, OBJECTS

__all__ = ["FREE", "INCOMING", "OBJECTS", "ObjectFiles", "directory_for", "file_name"]

#: A free file unused for this long is deleted.
FREE_IDLE_S = 60.0
#: Files smaller than this are not worth keeping: their pages cost little to find again.
FREE_MIN_BYTES = 1 << 20
HOST_FILE = ".spear-host"
#: In a temporary object directory: who made it (see :func:`_remove_abandoned`).
OWNER_FILE = ".spear-owner"
TEMPORARY_PREFIX = "spearlet-objects-"
SHARED_PREFIX = "spearlet-shared-objects-"
_SHM = Path("/dev/shm")
_INCOMING_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def file_name(key: str) -> str:
    """The file of the object ``key`` (keys may hold any character; file names may not)."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def directory_for(store_url: str) -> tuple[Path, bool]:
    """The object directory for a store, and whether it is temporary (removed at stop)."""
    if store_url.startswith("sqlite:///"):
        path = store_url[len("sqlite:///") :]
        if path and path != ":memory:":
            return Path(path + ".objects").resolve(), False
    base = _memory_or_temporary()
    _remove_abandoned(base)
    root = Path(tempfile.mkdtemp(prefix=TEMPORARY_PREFIX, dir=base))
    (root / OWNER_FILE).write_text(_owner())
    return root, True


def shared_directory(store_url: str) -> Path:
    """The object directory every server of the shared store ``store_url`` uses on this machine (in
    shared memory where there is one), named after the store."""
    return _memory_or_temporary() / f"{SHARED_PREFIX}{hashlib.sha256(store_url.encode()).hexdigest()[:24]}"


def _memory_or_temporary() -> Path:
    """Where object directories that go with their server live: shared memory where there is one."""
    return _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else Path(tempfile.gettempdir())


def _host_token(path: Path, keep: bool) -> str:
    """The directory's host token: a new one, or (``keep``) the one another server wrote first."""
    token = secrets.token_hex(16)
    if not keep:
        path.write_text(token)
        return token
    draft = path.with_name(f"{path.name}.{token}")
    draft.write_text(token)
    try:
        os.link(draft, path)  # whole, and only if no server was first
    except FileExistsError:
        return path.read_text()
    finally:
        draft.unlink()
    return token


def missing_file(key: str, root: Path) -> str:
    """Why the object ``key`` has a record but no file here, and what to do."""
    return (
        f"object {key!r} has no file in this server's object directory ({root}): it was stored through a "
        "server on another machine, or its file was removed. Servers on one database share objects' "
        "bytes through one object directory: run them on one machine (they share it by default), or give "
        "each the same --object-dir on a file system they all reach"
    )


def _owner() -> str:
    """This process, as its temporary directory's owner file names it: the pid and the pid namespace
    (a pid means nothing in another one)."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{os.getpid()} {namespace}"


def _remove_abandoned(base: Path) -> None:
    """Remove the temporary object directories of servers that ended without removing theirs (a
    killed notebook kernel): those whose owner, in this pid namespace, is no longer running."""
    mine = _owner().split(" ", 1)[1]
    for root in base.glob(TEMPORARY_PREFIX + "*"):
        try:
            pid_text, namespace = (root / OWNER_FILE).read_text().split(" ", 1)
            pid = int(pid_text)
        except (OSError, ValueError):
            continue  # no owner named: not ours to judge
        if namespace != mine or not mine or _running(pid):
            continue
        shutil.rmtree(root, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def free_budget(root: Path) -> int:
    """Bytes ``free/`` may hold: an eighth of the file system (of the memory, for ``/dev/shm``), at
    most 2 GiB."""
    try:
        stat = os.statvfs(root)
    except OSError:
        return 0
    return min(2 << 30, stat.f_blocks * stat.f_frsize // 8)


class ObjectFiles:
    """The object directory: paths, the host token, and moving finished files into place."""

    def __init__(self, root: Path, temporary: bool, shared: bool = False) -> None:
        self.root = root
        self.temporary = temporary
        #: Other servers (on one database) use the directory at the same time.
        self.shared = shared
        self.incoming = root / INCOMING
        self.objects = root / OBJECTS
        self.free = root / FREE
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for folder in (self.incoming, self.objects, self.free):
            folder.mkdir(parents=True, exist_ok=True)
        if not shared:  # else the files may be another server's, being written
            # Files left half-written by a previous process are never objects; free files are only memory.
            for stale in [*self.incoming.iterdir(), *self.free.iterdir()]:
                with contextlib.suppress(OSError):
                    stale.unlink()
        self.free_budget = free_budget(root)
        self.host_token = _host_token(root / HOST_FILE, keep=shared)

    @classmethod
    def for_store(cls, store_url: str, directory: str = "", shared: bool = False) -> ObjectFiles:
        """The object directory of a store: ``directory`` when given, else one derived from the store
        (``shared``: other servers use the store, and on this machine they share the directory)."""
        if directory:
            return cls(Path(directory).resolve(), False, shared)
        if shared:
            return cls(shared_directory(store_url), False, True)
        root, temporary = directory_for(store_url)
        return cls(root, temporary)

    def path(self, key: str) -> Path:
        return self.objects / file_name(key)

    def new_incoming(self) -> Path:
        """A fresh name in ``incoming/`` for a file about to be written."""
        return self.incoming / secrets.token_hex(16)

    def incoming_file(self, name: str) -> Path:
        """A file a client or worker wrote into ``incoming/``, by its bare name."""
        if not _INCOMING_NAME.fullmatch(name):
            raise ValueError(
                f"{name[:80]!r} is not a file name in the incoming folder (1 to 64 letters, digits, - or _)"
            )
        return self.incoming / name

    def settle(self, source: Path, key: str) -> Path:
        """Move a finished file into place as the object ``key`` (replacing any earlier file)."""
        target = self.path(key)
        os.replace(source, target)
        return target

    def remove(self, key: str) -> None:
        """Delete the file of the object ``key``: into ``free/`` when the budget has room for it."""
        path = self.path(key)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        if FREE_MIN_BYTES <= size <= self.free_budget:
            self.trim_free(room_for=size)
            with contextlib.suppress(OSError):
                os.utime(path)  # when it was freed: trimmed after FREE_IDLE_S unused
                os.replace(path, self.free / secrets.token_hex(16))
                return
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def trim_free(self, room_for: int = 0, idle_s: float = FREE_IDLE_S) -> int:
        """Delete free files unused for ``idle_s``, and the oldest others until ``room_for`` more bytes
        fit the budget; the bytes left in ``free/``."""
        entries = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.free):
                with contextlib.suppress(OSError):
                    stat = entry.stat()
                    entries.append((stat.st_mtime, stat.st_size, entry.path))
        entries.sort()
        held = sum(size for _, size, _ in entries)
        cutoff = time.time() - idle_s
        for mtime, size, path in entries:
            if mtime >= cutoff and held + room_for <= self.free_budget:
                break
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            held -= size
        return held

    def stored_size(self, path: Path) -> int:
        """The size of the object in the file ``path``: its layout's own size when it has one (a reused
        free file may be longer than the object), else the file's."""
        size = path.stat().st_size
        declared = blob.file_stored_size(path)
        return declared if declared is not None and declared <= size else size

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)
        else:  # the objects stay, with the store; memory kept for reuse goes
            self.trim_free(idle_s=0)
