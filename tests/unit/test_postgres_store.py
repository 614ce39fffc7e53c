"""What the PostgreSQL store adds to the KvStore contract: the schema's version, compare-and-set, notices
between stores, figures and orphans by SQL, and dropped connections. Against a real server (tests/pg.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from spear_sdk.wire import function_pb2 as fpb

postgres = pytest.importorskip("spearlet.store.postgres", reason="pip install 'spear-lab[postgres]'")
psycopg = pytest.importorskip("psycopg")

from spearlet.store import StoreError, open_store  # noqa: E402
from spearlet.store.notices import ENDED, RESYNC, TASK, Notice  # noqa: E402
from spearlet.store.records import (  # noqa: E402
    StoredExecution,
    execution_key,
    log_key,
    task_execution_key,
)

Opener = Callable[[], "asyncio.Future[postgres.PostgresStore]"]


@pytest.fixture
async def stores(pg_url: str) -> AsyncIterator[Callable[[], object]]:
    opened: list[postgres.PostgresStore] = []

    async def open_one() -> postgres.PostgresStore:
        store = open_store(pg_url)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


def _record(execution_id: str, status: int, task_id: str = "t1", time_ms: int = 0) -> StoredExecution:
    return StoredExecution(
        execution_id=execution_id,
        task_id=task_id,
        task_name="task",
        function_name="",
        mode=fpb.EXECUTION_MODE_SYNC,
        status=status,
        created_at=time.time(),
        execution_time_ms=time_ms,
    )


async def _until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_newer_schema_is_refused(stores: Callable[[], object], pg_url: str) -> None:
    await stores()  # creates the schema at the current version
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        assert (await (await conn.execute("SELECT version FROM spearlet_schema")).fetchall()) == [
            (postgres.SCHEMA_VERSION,)
        ]
        await conn.execute("UPDATE spearlet_schema SET version = 99")
    store = open_store(pg_url)
    with pytest.raises(StoreError, match="version 99, newer than this spearlet's"):
        await store.open()


async def test_compare_and_set_lets_one_writer_win(stores: Callable[[], object]) -> None:
    a, b = await stores(), await stores()
    key = execution_key("e1")
    await a.put(key, _record("e1", fpb.EXECUTION_STATUS_RUNNING).encode())
    (orphan,) = [o for o in await b.orphans(10) if o.key == key]  # no lease: an orphan, at its version
    ended = _record("e1", fpb.EXECUTION_STATUS_FAILED).encode()
    results = await asyncio.gather(
        a.put_if_version(key, ended, orphan.version), b.put_if_version(key, ended, orphan.version)
    )
    assert sorted(results) == [False, True]
    assert await a.get(key) == ended
    assert not await a.put_if_version(key, ended, orphan.version)  # the version moved on


async def test_a_late_write_of_an_execution_taken_over_is_refused(stores: Callable[[], object]) -> None:
    """Once another store's compare-and-set has made a row its own, the first owner's writes of it are
    refused, in a batch whose other rows are written; the first owner hears which ones."""
    a, b = await stores(), await stores()
    key, other = execution_key("late"), execution_key("kept")
    await a.batch({key: _record("late", fpb.EXECUTION_STATUS_RUNNING).encode()})
    (orphan,) = [o for o in await b.orphans(10) if o.key == key]
    interrupted = _record("late", fpb.EXECUTION_STATUS_FAILED).encode()
    assert await b.put_if_version(key, interrupted, orphan.version)
    heard: list[Notice] = []
    a.notices.subscribe(heard.append)
    await b.put(log_key("late"), b"the retry's output\n")
    for rows in (2, postgres._FEW_ROWS + 1):  # the few-rows statement, and the one of arrays
        late = {
            key: _record("late", fpb.EXECUTION_STATUS_COMPLETED).encode(),
            log_key("late"): b"the late run's output\n",
        }
        late.update(
            {
                f"{other}-{rows}-{n}": _record("kept", fpb.EXECUTION_STATUS_COMPLETED).encode()
                for n in range(rows - 1)
            }
        )
        await a.batch(late)
        assert await a.get(key) == interrupted
        assert await a.get(log_key("late")) == b"the retry's output\n"
        assert [k for k, v in late.items() if "late" not in k and await a.get(k) != v] == []
    taken = [notice for notice in heard if notice.kind == postgres.TAKEN_OVER]  # (B's ENDED may come too)
    assert taken == [Notice(postgres.TAKEN_OVER, "late")] * 2
    assert await b.put_if_version(key, interrupted, orphan.version + 1)  # still B's, at B's version


async def test_orphans_are_the_unfinished_executions_without_a_live_lease(
    stores: Callable[[], object],
) -> None:
    alive, dead = await stores(), await stores()
    await alive.renew_lease(30)
    await dead.renew_lease(0.05)
    await alive.put(execution_key("mine"), _record("mine", fpb.EXECUTION_STATUS_RUNNING).encode())
    await dead.batch(
        {
            execution_key("lost"): _record("lost", fpb.EXECUTION_STATUS_PENDING).encode(),
            execution_key("done"): _record("done", fpb.EXECUTION_STATUS_COMPLETED).encode(),
        }
    )
    await asyncio.sleep(0.1)  # the dead one's lease expires (the database's clock)
    assert [o.key for o in await alive.orphans(10)] == [execution_key("lost")]


async def test_terminal_writes_and_task_changes_reach_the_other_store(
    stores: Callable[[], object],
) -> None:
    a, b = await stores(), await stores()
    heard_a: list[Notice] = []
    heard_b: list[Notice] = []
    a.notices.subscribe(heard_a.append)
    b.notices.subscribe(heard_b.append)
    await a.batch(
        {
            execution_key("run"): _record("run", fpb.EXECUTION_STATUS_RUNNING).encode(),
            execution_key("x1"): _record("x1", fpb.EXECUTION_STATUS_COMPLETED).encode(),
            execution_key("x2"): _record("x2", fpb.EXECUTION_STATUS_CANCELLED).encode(),
            execution_key('odd, "id"'): _record('odd, "id"', fpb.EXECUTION_STATUS_TIMEOUT).encode(),
            "task:t9": b"{}",
        }
    )
    await a.delete("task:t8")
    expected = [
        Notice(ENDED, "x1"),
        Notice(ENDED, "x2"),
        Notice(ENDED, 'odd, "id"'),
        Notice(TASK, "t9"),
        Notice(TASK, "t8"),
    ]
    await _until(lambda: len(heard_b) >= 5, "b to hear a's notices")
    assert sorted(heard_b, key=repr) == sorted(expected, key=repr)  # not RUNNING: only ends
    await b.put(execution_key("x3"), _record("x3", fpb.EXECUTION_STATUS_FAILED).encode())
    await _until(lambda: Notice(ENDED, "x3") in heard_a, "a to hear b's end")
    assert Notice(ENDED, "x3") not in heard_b  # a store's own writes are not echoed back


async def test_a_dropped_listener_reconnects_and_announces_a_resync(
    stores: Callable[[], object], pg_url: str
) -> None:
    a, b = await stores(), await stores()
    heard: list[Notice] = []
    b.notices.subscribe(heard.append)
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
        )
    await _until(lambda: Notice(RESYNC) in heard, "the listener's resync")
    await a.put(execution_key("after"), _record("after", fpb.EXECUTION_STATUS_COMPLETED).encode())
    await _until(lambda: Notice(ENDED, "after") in heard, "a notice after the reconnect")
    await b.ping()


async def test_dropped_connections_fail_a_call_clearly_then_work_again(
    stores: Callable[[], object], pg_url: str
) -> None:
    store = await stores()
    await store.put("k", b"v")
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    outcomes: list[object] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            outcomes.append(await store.get("k"))
        except StoreError as exc:  # a broken pooled connection: the call fails, saying why
            assert "postgres store" in str(exc)
            outcomes.append(exc)
            continue
        if outcomes[-1] == b"v":
            break
    assert outcomes[-1] == b"v"


async def test_figures_and_newest_executions_by_sql(stores: Callable[[], object]) -> None:
    store = await stores()
    records = [
        _record("e1", fpb.EXECUTION_STATUS_COMPLETED, "t1", 10),
        _record("e2", fpb.EXECUTION_STATUS_COMPLETED, "t1", 30),
        _record("e3", fpb.EXECUTION_STATUS_RUNNING, "t1"),
        _record("e4", fpb.EXECUTION_STATUS_FAILED, "t2", 5),
    ]
    puts = {execution_key(r.execution_id): r.encode() for r in records}
    puts.update({task_execution_key(r.task_id, r.execution_id): b"" for r in records})
    await store.batch(puts)
    counts = {(c.task_id, c.status): (c.count, c.time_ms) for c in await store.execution_counts()}
    assert counts == {
        ("t1", fpb.EXECUTION_STATUS_COMPLETED): (2, 40),
        ("t1", fpb.EXECUTION_STATUS_RUNNING): (1, 0),
        ("t2", fpb.EXECUTION_STATUS_FAILED): (1, 5),
    }
    assert [c.count for c in await store.execution_counts(since_id="e3")] == [1]
    assert await store.newest_executions(["t1", "t2", "none"]) == {
        "t1": ("e3", fpb.EXECUTION_STATUS_RUNNING),
        "t2": ("e4", fpb.EXECUTION_STATUS_FAILED),
    }


async def test_the_url_shown_has_no_password(pg_url: str) -> None:
    with_password = pg_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    store = open_store(with_password)
    await store.open()
    try:
        assert "s3cret" not in store.url and store.url == pg_url
        await store.put("k", b"v")
    finally:
        await store.close()
