"""Group commit's two tiers on real stores (in memory and SQLite): due writes go out this turn, held ones
wait for their time (not for other writes), a held unit falls due whole, and a record is encoded once per
batch it is written in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from spearlet.store import KvStore, open_store
from spearlet.store.group_commit import GroupCommit

DEADLINE_S = 10.0


class Record:
    """A record that encodes its current state when its batch is written, and counts how often."""

    def __init__(self, state: str) -> None:
        self.state = state
        self.encoded = 0

    def encode(self) -> bytes:
        self.encoded += 1
        if self.state == "unencodable":
            raise ValueError("cannot encode this record")
        return self.state.encode()


@pytest_asyncio.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KvStore]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'commit.db'}"
    opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()


async def stored(future: asyncio.Future[None]) -> None:
    await asyncio.wait_for(asyncio.shield(future), DEADLINE_S)


async def test_an_urgent_write_is_stored_in_this_turns_batch(store: KvStore) -> None:
    writes = GroupCommit(store)
    first = writes.put({"a": b"1"})
    second = writes.put({"b": Record("2")})
    assert first is second, "writes of one turn share a batch"
    await stored(first)
    assert await store.get("a") == b"1" and await store.get("b") == b"2"


async def test_held_writes_wait_for_their_time_not_for_other_writes(store: KvStore) -> None:
    writes = GroupCommit(store)
    record = Record("pending")
    held = writes.put({"held": record}, urgent=False)
    await stored(writes.put({"other": b"x"}))
    assert await store.get("other") == b"x"
    assert await store.get("held") is None and record.encoded == 0, "a held write went out with another"
    record.state = "running"
    assert writes.put({"held": record}, urgent=False) is held
    await stored(held)
    assert await store.get("held") == b"running" and record.encoded == 1


async def test_a_held_unit_falls_due_whole(store: KvStore) -> None:
    writes = GroupCommit(store)
    record = Record("pending")
    created = writes.put({"execution:1": record, "task-exec:t:1": b""}, urgent=False)
    record.state = "completed"
    await stored(writes.put({"execution:1": record, "log:1": b"output"}))
    assert await store.get("execution:1") == b"completed"
    assert await store.get("task-exec:t:1") == b"", "the record went without its index entry"
    assert await store.get("log:1") == b"output"
    await stored(created)
    assert record.encoded == 1


async def test_a_held_write_to_a_key_already_due_goes_with_it(store: KvStore) -> None:
    writes = GroupCommit(store)
    record = Record("completed")
    due = writes.put({"execution:2": record})
    record.state = "completed, with logs"
    assert writes.put({"execution:2": record, "extra": b"e"}, urgent=False) is due
    await stored(due)
    assert await store.get("execution:2") == b"completed, with logs" and await store.get("extra") == b"e"
    assert record.encoded == 1


async def test_hurry_and_flush_send_held_writes_at_once(store: KvStore) -> None:
    writes = GroupCommit(store)
    held = writes.put({"a": b"1"}, urgent=False)
    writes.hurry()
    await asyncio.sleep(0)  # one turn: the batch goes out without waiting for the held writes' time
    await asyncio.sleep(0)
    assert held.done() and await store.get("a") == b"1"
    writes.put({"b": b"2"}, urgent=False)
    writes.put({"c": b"3"})
    await asyncio.wait_for(writes.flush(), DEADLINE_S)
    assert await store.get("b") == b"2" and await store.get("c") == b"3"


async def test_a_batch_that_cannot_be_encoded_fails_its_futures_and_the_next_one_goes(store: KvStore) -> None:
    writes = GroupCommit(store)
    held = writes.put({"bad-held": b"h"}, urgent=False)
    writes.hurry()
    failed = writes.put({"bad": Record("unencodable")})
    with pytest.raises(ValueError, match="cannot encode"):
        await stored(failed)
    with pytest.raises(ValueError, match="cannot encode"):
        await stored(held)
    assert await store.get("bad-held") is None, "part of a failed batch was stored"
    await stored(writes.put({"good": b"g"}))
    assert await store.get("good") == b"g"


async def test_a_put_that_spans_two_held_units_makes_them_one(store: KvStore) -> None:
    writes = GroupCommit(store)
    writes.put({"x": b"x1"}, urgent=False)
    writes.put({"y": b"y1"}, urgent=False)
    writes.put({"x": b"x2", "y": b"y2"}, urgent=False)
    await stored(writes.put({"x": b"x3"}))
    assert await store.get("x") == b"x3"
    assert await store.get("y") == b"y2", "a unit made of two did not fall due whole"


async def test_a_held_write_taken_over_by_a_stored_one_resolves_without_a_batch_of_its_own(
    store: KvStore,
) -> None:
    writes = GroupCommit(store)
    held = writes.put({"run": Record("pending")}, urgent=False)
    await stored(writes.put({"run": Record("completed")}))
    writes.hurry()  # (unless a stalled loop let its 10 ms run out meanwhile, it is still held until now)
    # Its write went with the urgent one, which is stored: nothing is left to write, so no turn is needed.
    assert held.done() and held.exception() is None
    assert await store.get("run") == b"completed"


async def test_a_held_write_taken_over_by_an_unwritten_one_resolves_once_that_is_stored(
    store: KvStore,
) -> None:
    writes = GroupCommit(store)
    held = writes.put({"run": Record("pending")}, urgent=False)
    urgent = writes.put({"run": Record("completed")})
    writes.hurry()
    assert not held.done(), "resolved before the batch that carries its key was written"
    await stored(held)
    assert urgent.done() and await store.get("run") == b"completed"
