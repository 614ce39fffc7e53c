"""The object values a server keeps for the calls of pickled functions (``value_and_digest``): served from
memory once read, forgotten as soon as the object changes through the server, and never kept on a store
that other servers share."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from spearlet.objects import KEPT_VALUE_BYTES, KEPT_VALUES, ObjectRepository
from spearlet.store import KvStore, open_store
from spearlet.store.records import object_key


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[KvStore]:
    """SQLite, the store of ``spearlet serve``: one no other server writes."""
    opened = open_store(f"sqlite:///{tmp_path / 'objects.db'}")
    await opened.open()
    yield opened
    await opened.close()


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def test_a_value_read_once_is_served_from_memory(store: KvStore) -> None:
    objects = ObjectRepository(store, max_object_bytes=1 << 30)
    await objects.put("fn/a", b"first", {}, overwrite=False)
    assert await objects.value_and_digest("fn/a") == (b"first", digest(b"first"))
    # Gone from beneath the repository, which alone writes objects on a store no other server shares:
    await store.delete(object_key("fn/a"))
    assert await objects.value_and_digest("fn/a") == (b"first", digest(b"first"))


async def test_a_put_or_delete_through_the_repository_is_seen_by_the_next_read(store: KvStore) -> None:
    objects = ObjectRepository(store, max_object_bytes=1 << 30)
    await objects.put("fn/b", b"first", {}, overwrite=False)
    assert await objects.value_and_digest("fn/b") == (b"first", digest(b"first"))
    await objects.put("fn/b", b"second", {}, overwrite=True)
    assert await objects.value_and_digest("fn/b") == (b"second", digest(b"second"))
    await objects.delete("fn/b", force=True)
    assert await objects.value_and_digest("fn/b") is None
    assert await objects.value_and_digest("fn/missing") is None


async def test_only_the_latest_small_values_are_kept(store: KvStore) -> None:
    objects = ObjectRepository(store, max_object_bytes=1 << 30)
    big = b"x" * (KEPT_VALUE_BYTES + 1)
    await objects.put("fn/big", big, {}, overwrite=False)
    assert await objects.value_and_digest("fn/big") == (big, digest(big))
    await store.delete(object_key("fn/big"))
    assert await objects.value_and_digest("fn/big") is None, "a value over the size kept was kept"
    for n in range(KEPT_VALUES + 1):
        await objects.put(f"fn/{n}", b"%d" % n, {}, overwrite=False)
        await objects.value_and_digest(f"fn/{n}")
    await store.delete(object_key("fn/0"))
    await store.delete(object_key(f"fn/{KEPT_VALUES}"))
    assert await objects.value_and_digest("fn/0") is None, "the oldest value was not let go"
    newest = b"%d" % KEPT_VALUES
    assert await objects.value_and_digest(f"fn/{KEPT_VALUES}") == (newest, digest(newest))


async def test_nothing_is_kept_on_a_store_other_servers_share(pg_url: str) -> None:
    shared = open_store(pg_url)
    await shared.open()
    try:
        objects = ObjectRepository(shared, max_object_bytes=1 << 30)
        await objects.put("fn/c", b"first", {}, overwrite=False)
        assert await objects.value_and_digest("fn/c") == (b"first", digest(b"first"))
        # As another server on the same database would change it:
        await shared.delete(object_key("fn/c"))
        assert await objects.value_and_digest("fn/c") is None
    finally:
        await shared.close()
