"""The object store of ``ObjectService`` (keys ``object:{key}``), with reference counts and pinning.

Small objects put with ``PutObject`` keep their bytes in the store record; large ones (and every value that
travels by reference) keep them in a file of the object directory (:mod:`.blobs`), the record holding only
the header. Objects made implicitly for one execution's result are reclaimed when the execution's records
are deleted, or a grace period after their value was first fetched.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from spear_sdk.wire.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

from .blobs import FREE_IDLE_S, ObjectFiles, missing_file
from .store import KvStore
from .store.records import OBJECT, StoredObject, object_key

#: ``ref_count`` is an int32 on the wire.
MAX_REF_COUNT = 2**31 - 1


#: Longest object key accepted.
MAX_KEY = 4096
#: Keys of the objects holding an execution's results by reference: ``spear/results/{execution_id}/...``.
RESULTS_PREFIX = "spear/results/"
#: Metadata naming why an object was made without being asked: "argument" or "result".
IMPLICIT = "spear.implicit"
#: Metadata naming the execution a result object belongs to.
EXECUTION = "spear.execution"
#: Largest value ``PutObject`` takes in its one message (kept in the store record); larger objects are
#: files, put with ``PutObjectStream`` (or ``AdoptObjectFile``).
MAX_UNARY_VALUE = 64 << 20
#: Pieces of a streamed object.
CHUNK_BYTES = 1 << 20
#: Values ``ObjectRepository.value_and_digest`` keeps in memory (the most recently read), and the
#: largest it keeps.
KEPT_VALUES = 64
KEPT_VALUE_BYTES = 256 << 10


def results_prefix(execution_id: str) -> str:
    return f"{RESULTS_PREFIX}{execution_id}/"


def over_limit(what: str, size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(
        f"{what} is {size} bytes, over the limit of {limit} bytes (--max-object-bytes, "
        "SPEARLET_MAX_OBJECT_BYTES, or start_lab(max_object_bytes=...))"
    )


def _require_key(key: str) -> None:
    if not key:
        raise InvalidArgument("key is required")
    if len(key) > MAX_KEY:
        raise InvalidArgument(f"key is longer than {MAX_KEY} characters")


def _ref_count_change(count: int) -> int:
    if count < 0:
        raise InvalidArgument("count must not be negative")
    return count or 1


class ObjectRepository:
    def __init__(
        self, store: KvStore, max_object_bytes: int, files: ObjectFiles | None = None, grace_s: float = 30.0
    ) -> None:
        self._store = store
        self.max_object_bytes = max_object_bytes
        self.files = files
        self.grace_s = grace_s
        self._expiring: dict[str, asyncio.TimerHandle] = {}
        self._expiries: set[asyncio.Future[object]] = set()
        self._trimming: asyncio.TimerHandle | None = None
        # Reference counts are read-modify-write; one mutation at a time keeps them exact.
        self._lock = asyncio.Lock()
        self.count = 0
        self.total_size = 0
        #: Values read by ``value_and_digest``, with their digests, by key (see there).
        self._kept: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        #: Counts the changes of objects' values, so that a read that raced one is not kept.
        self._changes = 0

    async def load_totals(self) -> None:
        """Count the stored objects once at start; mutations keep the totals current after that.

        Objects a client made for a call's arguments are needed only while the call runs, and no call
        outlives a restart: those a previous process left are deleted. Not on a store other servers share
        (``postgresql://``): their calls may be running with theirs."""
        rows = await self._store.scan(OBJECT)
        objects = [StoredObject.decode(data) for _, data in rows]
        self.count = len(objects)
        self.total_size = sum(obj.size for obj in objects)
        if self._store.shared:
            return
        for obj in objects:
            if obj.metadata.get(IMPLICIT) == "argument":
                await self._drop(obj)

    async def get(self, key: str) -> StoredObject | None:
        _require_key(key)
        data = await self._store.get(object_key(key))
        return StoredObject.decode(data) if data is not None else None

    async def value_and_digest(self, key: str) -> tuple[bytes, str] | None:
        """Object ``key``'s value as its record holds it, and that value's ``sha256:`` digest; None when
        there is no such object.

        Every call of a pickled function reads the function's object and checks its digest. On a store
        no other server writes, the values read last are kept (:data:`KEPT_VALUES`, each at most
        :data:`KEPT_VALUE_BYTES`), and a put, overwrite or delete of one drops it; on a shared store
        another server may change the object, so each read goes to the store."""
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        changes = self._changes
        obj = await self.get(key)
        if obj is None:
            return None
        kept = obj.value, "sha256:" + hashlib.sha256(obj.value).hexdigest()
        if (
            not self._store.shared
            and not obj.in_file
            and len(obj.value) <= KEPT_VALUE_BYTES
            and changes == self._changes  # (no object changed while it was read)
        ):
            self._kept[key] = kept
            if len(self._kept) > KEPT_VALUES:
                self._kept.popitem(last=False)
        return kept

    async def put(self, key: str, value: bytes, metadata: dict[str, str], overwrite: bool) -> StoredObject:
        _require_key(key)
        if len(value) > self.max_object_bytes:
            raise ResourceExhausted(
                f"object {key!r} is {len(value)} bytes, over the limit of {self.max_object_bytes} bytes"
            )
        if len(value) > MAX_UNARY_VALUE:
            raise ResourceExhausted(
                f"object {key!r} is {len(value)} bytes, over the limit of {MAX_UNARY_VALUE} bytes for a "
                "value put in one message; send it in pieces with PutObjectStream"
            )
        async with self._lock:
            existing = await self.get(key)
            now = time.time()
            if existing is not None and not overwrite:
                raise AlreadyExists(f"object {key!r} already exists; set overwrite to replace it")
            if existing is None:
                obj = StoredObject(key=key, value=value, created_at=now, updated_at=now, metadata=metadata)
            else:  # an overwrite keeps the object's identity: creation time, references, pin
                obj = replace(
                    existing, value=value, updated_at=now, metadata=metadata, in_file=False, file_size=0
                )
            await self._store.put(object_key(key), obj.encode())
            if existing is not None and existing.in_file:
                await asyncio.to_thread(self._files().remove, key)
            self._account(existing, obj)
            return obj

    async def adopt(
        self, key: str, source: Path, metadata: dict[str, str], overwrite: bool, ref_count: int = 1
    ) -> StoredObject:
        """Make the finished file ``source`` (in the incoming folder) the object ``key``."""
        files = self._files()
        try:
            _require_key(key)
            size = files.stored_size(source)
            if size > self.max_object_bytes:
                raise over_limit(f"object {key!r}", size, self.max_object_bytes)
            async with self._lock:
                existing = await self.get(key)
                if existing is not None and not overwrite:
                    raise AlreadyExists(f"object {key!r} already exists; set overwrite to replace it")
                now = time.time()
                if existing is None:
                    obj = StoredObject(
                        key=key,
                        value=b"",
                        created_at=now,
                        updated_at=now,
                        ref_count=ref_count,
                        metadata=metadata,
                        in_file=True,
                        file_size=size,
                    )
                else:
                    obj = replace(
                        existing, value=b"", updated_at=now, metadata=metadata, in_file=True, file_size=size
                    )
                target = files.settle(source, key)
                await self._store.put(object_key(key), obj.encode())
                self._account(existing, obj)
            stat = os.stat(target)
            if stat.st_size > size:  # a reused free file: give back its tail, after the reply
                self._in_background(asyncio.to_thread(_truncate, target, stat.st_ino, size))
            return obj
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(source)  # still there: it did not become the object

    def read_value(self, obj: StoredObject, limit: int) -> bytes:
        """The whole value of ``obj`` in memory (for the unary reads), refused past ``limit`` bytes."""
        if not obj.in_file:
            return obj.value
        if obj.size > limit:
            raise ResourceExhausted(
                f"object {obj.key!r} is {obj.size} bytes, more than one message carries ({limit}); "
                "read it with GetObjectStream"
            )
        with self._open(obj) as f:
            return f.read(obj.size)

    def chunks(self, obj: StoredObject) -> Iterator[bytes]:
        """The value of ``obj`` in pieces of at most :data:`CHUNK_BYTES`."""
        if not obj.in_file:
            for start in range(0, len(obj.value), CHUNK_BYTES):
                yield obj.value[start : start + CHUNK_BYTES]
            return
        left = obj.size
        with self._open(obj) as f:
            while left > 0 and (piece := f.read(min(CHUNK_BYTES, left))):
                left -= len(piece)
                yield piece

    def path(self, obj: StoredObject) -> str:
        if not obj.in_file:
            return ""
        files = self._files()
        path = files.path(obj.key)
        if not path.exists():
            raise FailedPrecondition(missing_file(obj.key, files.root))
        return str(path)

    def _open(self, obj: StoredObject) -> BinaryIO:
        files = self._files()
        try:
            return open(files.path(obj.key), "rb", buffering=0)
        except FileNotFoundError:
            raise FailedPrecondition(missing_file(obj.key, files.root)) from None

    # -- lifetimes of implicit objects -------------------------------------------------------------------

    def fetched(self, obj: StoredObject) -> None:
        """``obj``'s value was read: a result object made for an execution goes after the grace period."""
        if obj.metadata.get(IMPLICIT) != "result" or obj.key in self._expiring:
            return
        loop = asyncio.get_running_loop()
        self._expiring[obj.key] = loop.call_later(self.grace_s, self._expire, obj.key)

    def _expire(self, key: str) -> None:
        self._expiring.pop(key, None)
        self._in_background(self._delete_quietly(key))

    def _in_background(self, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    def _trim_free_later(self) -> None:
        """Free files nobody reuses go after their idle time: checked that long after one was added."""
        if self._trimming is None and self.files is not None:
            loop = asyncio.get_running_loop()
            self._trimming = loop.call_later(FREE_IDLE_S, self._trim_free)

    def _trim_free(self) -> None:
        self._trimming = None
        self._in_background(self._trim_free_now())

    async def _trim_free_now(self) -> None:
        files = self._files()
        if await asyncio.to_thread(files.trim_free):
            self._trim_free_later()

    async def _delete_quietly(self, key: str) -> None:
        with contextlib.suppress(NotFound):
            await self.delete(key, force=True)

    async def delete_results(self, execution_ids: Iterable[str]) -> int:
        """Delete the result objects of these executions (their records are being deleted)."""
        deleted = 0
        for execution_id in execution_ids:
            for obj in await self.list(results_prefix(execution_id), "", None):
                await self._delete_quietly(obj.key)
                deleted += 1
        return deleted

    async def hold(self, keys: Iterable[str]) -> list[str]:
        """Take a reference on each object an execution's arguments name; unknown keys are refused."""
        held: list[str] = []
        try:
            for key in dict.fromkeys(keys):
                try:
                    await self.add_ref(key, 1)
                except NotFound:
                    raise InvalidArgument(
                        f"an argument refers to object {key!r}, which does not exist (deleted?)"
                    ) from None
                held.append(key)
        except BaseException:
            await self.release(held)
            raise
        return held

    async def release(self, keys: Iterable[str]) -> None:
        """Drop the references :meth:`hold` took (an object nothing else holds goes)."""
        for key in keys:
            with contextlib.suppress(NotFound):
                await self.remove_ref(key, 1)

    async def close(self) -> None:
        if self._trimming is not None:
            self._trimming.cancel()
        for timer in self._expiring.values():
            timer.cancel()
        self._expiring.clear()
        for task in list(self._expiries):
            task.cancel()
        if self.files is not None:
            self.files.close()

    def _files(self) -> ObjectFiles:
        if self.files is None:
            raise FailedPrecondition("this server keeps no object files")
        return self.files

    async def list(self, prefix: str, start_after: str, limit: int | None) -> list[StoredObject]:
        after = object_key(start_after) if start_after else ""
        rows = await self._store.scan(object_key(prefix), start_after=after, limit=limit)
        return [StoredObject.decode(data) for _, data in rows]

    async def add_ref(self, key: str, count: int) -> int:
        change = _ref_count_change(count)
        async with self._lock:
            obj = await self._require(key)
            if obj.ref_count + change > MAX_REF_COUNT:
                raise InvalidArgument(
                    f"object {key!r} has {obj.ref_count} references; {change} more would pass {MAX_REF_COUNT}"
                )
            obj.ref_count += change
            await self._store.put(object_key(key), obj.encode())
            return obj.ref_count

    async def remove_ref(self, key: str, count: int) -> tuple[int, bool]:
        """Drop references; at zero the object goes unless pinned. Returns (new count, deleted)."""
        change = _ref_count_change(count)
        async with self._lock:
            obj = await self._require(key)
            obj.ref_count = max(0, obj.ref_count - change)
            if obj.ref_count == 0 and not obj.pinned:
                await self._drop(obj)
                return 0, True
            await self._store.put(object_key(key), obj.encode())
            return obj.ref_count, False

    async def set_pinned(self, key: str, pinned: bool) -> bool:
        """Pin or unpin; unpinning an object nothing references any more deletes it. Returns deleted."""
        async with self._lock:
            obj = await self._require(key)
            if not pinned and obj.ref_count == 0:
                await self._drop(obj)
                return True
            obj.pinned = pinned
            await self._store.put(object_key(key), obj.encode())
            return False

    async def delete(self, key: str, force: bool) -> None:
        async with self._lock:
            obj = await self._require(key)
            if obj.pinned and not force:
                raise FailedPrecondition(f"object {key!r} is pinned; unpin it or delete with force")
            await self._drop(obj)

    async def _require(self, key: str) -> StoredObject:
        obj = await self.get(key)
        if obj is None:
            raise NotFound(f"object {key!r} not found")
        return obj

    async def _drop(self, obj: StoredObject) -> None:
        await self._store.delete(object_key(obj.key))
        if obj.in_file and self.files is not None:
            # Freeing a large file's pages takes tens of milliseconds: not on the loop.
            await asyncio.to_thread(self.files.remove, obj.key)
            self._trim_free_later()
        timer = self._expiring.pop(obj.key, None)
        if timer is not None:
            timer.cancel()
        self._account(obj, None)

    def _account(self, old: StoredObject | None, new: StoredObject | None) -> None:
        """An object was made, its value replaced, or it was deleted: keep the totals, forget its value."""
        self.count += (new is not None) - (old is not None)
        self.total_size += (new.size if new else 0) - (old.size if old else 0)
        self._changes += 1
        changed = new if new is not None else old
        if changed is not None:
            self._kept.pop(changed.key, None)


def _truncate(path: Path, inode: int, size: int) -> None:
    """Cut the file ``path`` to ``size`` bytes unless another file took its place meanwhile."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        if os.fstat(fd).st_ino == inode:
            os.ftruncate(fd, size)
    finally:
        os.close(fd)
