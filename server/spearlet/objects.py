"""The object store of ``ObjectService`` (keys ``object:{key}``), with reference counts and pinning."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from spear_sdk.wire.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

from .store import KvStore
from .store.records import OBJECT, StoredObject, object_key

#: ``ref_count`` is an int32 on the wire.
MAX_REF_COUNT = 2**31 - 1


#: Longest object key accepted.
MAX_KEY = 4096


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
    def __init__(self, store: KvStore, max_object_bytes: int) -> None:
        self._store = store
        self.max_object_bytes = max_object_bytes
        # Reference counts are read-modify-write; one mutation at a time keeps them exact.
        self._lock = asyncio.Lock()
        self.count = 0
        self.total_size = 0

    async def load_totals(self) -> None:
        """Count the stored objects once at start; mutations keep the totals current after that."""
        rows = await self._store.scan(OBJECT)
        self.count = len(rows)
        self.total_size = sum(StoredObject.decode(data).size for _, data in rows)

    async def get(self, key: str) -> StoredObject | None:
        _require_key(key)
        data = await self._store.get(object_key(key))
        return StoredObject.decode(data) if data is not None else None

    async def put(self, key: str, value: bytes, metadata: dict[str, str], overwrite: bool) -> StoredObject:
        _require_key(key)
        if len(value) > self.max_object_bytes:
            raise ResourceExhausted(
                f"object {key!r} is {len(value)} bytes, over the limit of {self.max_object_bytes} bytes"
            )
        async with self._lock:
            existing = await self.get(key)
            now = time.time()
            if existing is not None and not overwrite:
                raise AlreadyExists(f"object {key!r} already exists; set overwrite to replace it")
            if existing is None:
                obj = StoredObject(key=key, value=value, created_at=now, updated_at=now, metadata=metadata)
            else:  # an overwrite keeps the object's identity: creation time, references, pin
                obj = replace(existing, value=value, updated_at=now, metadata=metadata)
            await self._store.put(object_key(key), obj.encode())
            self._account(existing, obj)
            return obj

    async def list(self, prefix: str, start_after: str, limit: int) -> list[StoredObject]:
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
                await self._store.delete(object_key(key))
                self._account(obj, None)
                return 0, True
            await self._store.put(object_key(key), obj.encode())
            return obj.ref_count, False

    async def set_pinned(self, key: str, pinned: bool) -> bool:
        """Pin or unpin; unpinning an object nothing references any more deletes it. Returns deleted."""
        async with self._lock:
            obj = await self._require(key)
            if not pinned and obj.ref_count == 0:
                await self._store.delete(object_key(key))
                self._account(obj, None)
                return True
            obj.pinned = pinned
            await self._store.put(object_key(key), obj.encode())
            return False

    async def delete(self, key: str, force: bool) -> None:
        async with self._lock:
            obj = await self._require(key)
            if obj.pinned and not force:
                raise FailedPrecondition(f"object {key!r} is pinned; unpin it or delete with force")
            await self._store.delete(object_key(key))
            self._account(obj, None)

    async def _require(self, key: str) -> StoredObject:
        obj = await self.get(key)
        if obj is None:
            raise NotFound(f"object {key!r} not found")
        return obj

    def _account(self, old: StoredObject | None, new: StoredObject | None) -> None:
        self.count += (new is not None) - (old is not None)
        self.total_size += (new.size if new else 0) - (old.size if old else 0)
