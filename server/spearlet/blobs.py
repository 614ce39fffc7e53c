"""Where large objects' bytes live: files in one directory beside the store.

An object put through the streaming or same-machine RPCs (and every value that travels by reference) is a
file named after its key, in ``objects/``; its header (size, references, metadata) is a record of the
store like any object's. Files, not database blobs: a reader maps a file into memory and its arrays point
into the page cache, with no copy and no limit but the disk; a multi-hundred-megabyte blob in SQLite is
written twice (WAL, then the database) and read back whole.

``incoming/`` holds files being written: by a streamed put, by a worker writing a result, or by a client
on this machine. A file becomes an object only when moved into ``objects/`` (an atomic rename), so a
half-written file is never an object. ``.spear-host`` holds a random token: a client that reads the token
the server announced there shares the server's file system (see ``ObjectStoreInfo``).

A ``memory://`` store gets a fresh directory, in ``/dev/shm`` where there is one (shared memory: files
there never touch a disk), removed when the server stops; a ``sqlite:///path`` store keeps its objects in
``path.objects/``, durable like the database.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

INCOMING = "incoming"
OBJECTS = "objects"
HOST_FILE = ".spear-host"
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
    base = _SHM if _SHM.is_dir() and os.access(_SHM, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="spearlet-objects-", dir=base)), True


class ObjectFiles:
    """The object directory: paths, the host token, and moving finished files into place."""

    def __init__(self, root: Path, temporary: bool) -> None:
        self.root = root
        self.temporary = temporary
        self.incoming = root / INCOMING
        self.objects = root / OBJECTS
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.objects.mkdir(parents=True, exist_ok=True)
        # Files left half-written by a previous process are never objects.
        for stale in self.incoming.iterdir():
            with contextlib.suppress(OSError):
                stale.unlink()
        self.host_token = secrets.token_hex(16)
        (root / HOST_FILE).write_text(self.host_token)

    @classmethod
    def for_store(cls, store_url: str, directory: str = "") -> ObjectFiles:
        if directory:
            return cls(Path(directory).resolve(), False)
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
        with contextlib.suppress(FileNotFoundError):
            self.path(key).unlink()

    def close(self) -> None:
        if self.temporary:
            shutil.rmtree(self.root, ignore_errors=True)
