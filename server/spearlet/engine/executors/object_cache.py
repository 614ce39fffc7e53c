"""A worker's view of the object directory: arguments by reference in, large results out.

Arguments: a reference becomes the object's value by mapping its file read-only into memory; the value's
arrays point into that mapping (the page cache, or shared memory for a lab), so nothing is copied, and
they are read-only, as in Ray: copy one before changing it. Mappings are kept by key (validated against the
file's identity on each use), so five calls with one reference open and map its file once.

Results: a value whose serialized size passes the job's inline limit is written as a file into the
incoming folder, and the worker reports a reference; the server makes the file an object
(``engine/by_reference.py``).

Both need the server's directory: a worker that does not see it (on another machine) fails such a call
saying so (:func:`unreachable`), rather than hand the function a reference or lose a result.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import secrets
import socket
import threading
from collections import OrderedDict
from contextlib import AbstractContextManager
from pathlib import Path

from spear_sdk.wire import blob, object_dir, refs
from spearlet.blobs import INCOMING, OBJECTS, file_name, missing_file

#: Mappings kept per worker; a mapping costs address space, not memory, until its pages are read.
CAPACITY = 32


class ObjectCache:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._maps: OrderedDict[str, tuple[tuple[int, int, int], mmap.mmap]] = OrderedDict()
        #: How many times a file was opened and mapped (the rest were served from the cache).
        self.opened = 0
        # The thread executor runs several jobs (and their decoding) at once in one process.
        self._lock = threading.Lock()

    def value(self, directory: str, key: str) -> object:
        path = os.path.join(directory, OBJECTS, file_name(key))
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            reason = unreachable(directory)
            if reason:
                raise LookupError(f"object {key!r} cannot be read: {reason}") from None
            raise LookupError(
                f"{missing_file(key, Path(directory))} (or it was deleted while the call waited)"
            ) from None
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._maps.get(key)
            if cached is not None and cached[0] == identity:
                self._maps.move_to_end(key)
                mapping = cached[1]
            else:
                with open(path, "rb") as f:
                    mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                self.opened += 1
                self._maps[key] = (identity, mapping)
                while len(self._maps) > self.capacity:
                    self._maps.popitem(last=False)  # closed once no value points into it
        return blob.loads(mapping)

    def prune(self, directory: str) -> None:
        """Forget the mappings of objects deleted or replaced since: a mapping keeps a deleted
        object's memory alive, and its file out of reuse (``free/``)."""
        with self._lock:
            for key, (identity, _) in list(self._maps.items()):
                try:
                    stat = os.stat(os.path.join(directory, OBJECTS, file_name(key)))
                except OSError:
                    del self._maps[key]
                    continue
                if (stat.st_ino, stat.st_mtime_ns, stat.st_size) != identity:
                    del self._maps[key]


CACHE = ObjectCache()


def unreachable(directory: str) -> str:
    """Why this process cannot read or write the objects of ``directory`` ('' if it can): a worker on
    another machine than the server's (a Dask worker, say) does not see the server's files."""
    if os.path.isdir(os.path.join(directory, OBJECTS)) and os.path.isdir(os.path.join(directory, INCOMING)):
        return ""
    return (
        f"the server's object directory {directory} is not on this machine ({socket.gethostname()}); "
        "values by reference need the worker on the server's machine, or that directory shared at the "
        "same path"
    )


def resolving(directory: str) -> AbstractContextManager[None]:
    """References decoded in this block become their objects' values (nothing changes without a
    directory: the references stay references)."""
    if not directory:
        return contextlib.nullcontext()
    CACHE.prune(directory)
    return refs.resolving(functools.partial(CACHE.value, directory))


def write_result(directory: str, execution_id: str, laid_out: blob.Blob) -> bytes:
    """Write a large value into the incoming folder; the serialized reference to report for it."""
    key = f"spear/results/{execution_id}/{secrets.token_hex(8)}"
    object_dir.write_object(directory, laid_out, file_name(key))
    return refs.ref_any(key).SerializeToString()
