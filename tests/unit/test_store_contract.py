"""One contract suite for every KvStore backend (docs/design.md, "Stores"), plus what only SQLite promises:
WAL, durability."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from spearlet.store import KvStore, StoreError, open_store
from spearlet.store.memory import MemoryStore, prefix_upper_bound
from spearlet.store.sqlite import SqliteStore

BACKENDS = ["memory", "sqlite", "postgres"]


def _url(backend: str, tmp_path: Path) -> str:
    return "memory://" if backend == "memory" else f"sqlite:///{tmp_path}/data/store.db"


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KvStore]:
    # postgres: a fresh database on the session's real server (tests/pg.py)
    postgres = request.param == "postgres"
    url = request.getfixturevalue("pg_url") if postgres else _url(request.param, tmp_path)
    s = open_store(url)
    await s.open()
    yield s
    await s.close()


async def _fill(store: KvStore, keys: list[str]) -> None:
    for k in keys:
        await store.put(k, k.encode())


def _keys(rows: list[tuple[str, bytes]]) -> list[str]:
    return [k for k, _ in rows]


# --- single keys ------------------------------------------------------------------------------------------


async def test_put_get_overwrite_delete(store: KvStore) -> None:
    await store.put("task:1", b"one")
    assert await store.get("task:1") == b"one"
    await store.put("task:1", b"uno")
    assert await store.get("task:1") == b"uno"
    assert await store.delete("task:1") is True
    assert await store.get("task:1") is None
    assert await store.scan("") == []


async def test_missing_key_and_delete_reports_existence(store: KvStore) -> None:
    assert await store.get("nope") is None
    assert await store.delete("nope") is False
    await store.put("k", b"v")
    assert await store.delete("k") is True
    assert await store.delete("k") is False


@pytest.mark.parametrize(
    "value",
    [b"", b"\x00", bytes(range(256)), b"\x00" * 1000 + b"\xff", os.urandom(5 * 1024 * 1024)],
    ids=["empty", "nul", "all-bytes", "nul-run", "5MiB"],
)
async def test_binary_values_round_trip(store: KvStore, value: bytes) -> None:
    await store.put("blob", value)
    got = await store.get("blob")
    assert type(got) is bytes
    assert got == value
    assert await store.scan("blob") == [("blob", value)]


async def test_bytearray_is_copied_not_aliased(store: KvStore) -> None:
    buf = bytearray(b"abc")
    await store.put("k", buf)  # type: ignore[arg-type]  # accepted at runtime, like memoryview
    await store.batch({"m": memoryview(b"xyz")})  # type: ignore[dict-item]
    buf[0] = ord("z")
    assert await store.get("k") == b"abc"
    assert await store.get("m") == b"xyz"


UNICODE_KEYS = [
    "a\x00b",
    "a",
    "ab",
    "é",
    "ÿ",
    "Ā",
    "日本",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "😀",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
]


async def test_unicode_keys_order_by_code_point(store: KvStore) -> None:
    await _fill(store, list(reversed(UNICODE_KEYS)))
    for k in UNICODE_KEYS:
        assert await store.get(k) == k.encode()
    assert _keys(await store.scan("")) == sorted(UNICODE_KEYS)
    assert _keys(await store.scan("", reverse=True)) == sorted(UNICODE_KEYS, reverse=True)
    assert _keys(await store.scan("日")) == ["日本"]


@pytest.mark.parametrize("key", ["", "\ud800", "a\udfffb"])
async def test_invalid_keys_rejected(store: KvStore, key: str) -> None:
    with pytest.raises(ValueError):
        await store.put(key, b"v")
    with pytest.raises(ValueError):
        await store.get(key)
    with pytest.raises(ValueError):
        await store.delete(key)
    assert await store.scan("") == []


async def test_wrong_types_rejected(store: KvStore) -> None:
    with pytest.raises(TypeError):
        await store.put("k", "text")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.put(b"k", b"v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await store.put("k", None)  # type: ignore[arg-type]
    assert await store.get("k") is None


# --- scan -------------------------------------------------------------------------------------------------

PREFIX_KEYS = ["a", "a:1", "a:2", "a:10", "a;", "ab:1", "ab:2", "b:1", "a:"]


async def test_scan_prefix_isolation_and_order(store: KvStore) -> None:
    await _fill(store, PREFIX_KEYS)
    assert _keys(await store.scan("a:")) == ["a:", "a:1", "a:10", "a:2"]
    assert _keys(await store.scan("ab:")) == ["ab:1", "ab:2"]
    assert _keys(await store.scan("a")) == ["a", "a:", "a:1", "a:10", "a:2", "a;", "ab:1", "ab:2"]
    assert _keys(await store.scan("")) == sorted(PREFIX_KEYS)
    assert await store.scan("c") == []
    assert await store.scan("a:1") == [("a:1", b"a:1"), ("a:10", b"a:10")]


async def test_scan_start_after_and_limit(store: KvStore) -> None:
    await _fill(store, PREFIX_KEYS)
    assert _keys(await store.scan("a:", start_after="a:1")) == ["a:10", "a:2"]
    assert _keys(await store.scan("a:", start_after="a:0")) == ["a:1", "a:10", "a:2"]  # not itself a key
    assert _keys(await store.scan("a:", start_after="a:2")) == []
    assert _keys(await store.scan("a:", limit=2)) == ["a:", "a:1"]
    assert _keys(await store.scan("a:", start_after="a:", limit=1)) == ["a:1"]
    assert _keys(await store.scan("a:", limit=100)) == ["a:", "a:1", "a:10", "a:2"]
    assert await store.scan("a:", limit=0) == []
    # start_after below the prefix excludes nothing of it; above the prefix, everything.
    assert _keys(await store.scan("ab:", start_after="a")) == ["ab:1", "ab:2"]
    assert _keys(await store.scan("a:", start_after="b")) == []


async def test_scan_reverse(store: KvStore) -> None:
    await _fill(store, PREFIX_KEYS)
    assert _keys(await store.scan("a:", reverse=True)) == ["a:2", "a:10", "a:1", "a:"]
    assert _keys(await store.scan("a:", reverse=True, limit=2)) == ["a:2", "a:10"]
    assert _keys(await store.scan("ab:", reverse=True)) == ["ab:2", "ab:1"]
    assert _keys(await store.scan("", reverse=True)) == sorted(PREFIX_KEYS, reverse=True)
    # With reverse, start_after excludes itself and everything above it.
    assert _keys(await store.scan("a:", reverse=True, start_after="a:2")) == ["a:10", "a:1", "a:"]
    assert _keys(await store.scan("a:", reverse=True, start_after="a:10", limit=1)) == ["a:1"]
    assert _keys(await store.scan("a:", reverse=True, start_after="a:")) == []
    assert _keys(await store.scan("ab:", reverse=True, start_after="b")) == ["ab:2", "ab:1"]
    assert _keys(await store.scan("ab:", reverse=True, start_after="a")) == []


async def test_scan_prefix_bounds_at_code_point_edges(store: KvStore) -> None:
    keys = ["a\U0010ffff", "a\U0010ffffz", "b", "\ud7ffx", "\ue000", "\U0010ffff", "\U0010ffffz"]
    await _fill(store, keys)
    assert _keys(await store.scan("a\U0010ffff")) == ["a\U0010ffff", "a\U0010ffffz"]
    assert _keys(await store.scan("a\U0010ffff", reverse=True)) == ["a\U0010ffffz", "a\U0010ffff"]
    assert _keys(await store.scan("\ud7ff")) == ["\ud7ffx"]
    assert _keys(await store.scan("\U0010ffff")) == ["\U0010ffff", "\U0010ffffz"]
    assert _keys(await store.scan("\U0010ffff", reverse=True, limit=1)) == ["\U0010ffffz"]


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound("") is None
    assert prefix_upper_bound("a:") == "a;"
    assert prefix_upper_bound("a\U0010ffff") == "b"
    assert prefix_upper_bound("\U0010ffff\U0010ffff") is None
    assert prefix_upper_bound("x\ud7ff") == "x\ue000"  # skips the surrogates so it stays encodable


@pytest.mark.parametrize("reverse", [False, True])
async def test_paging_visits_each_key_once_in_order(store: KvStore, reverse: bool) -> None:
    keys = [f"task-exec:t1:{i:04d}" for i in range(250)]
    await _fill(store, keys)
    await _fill(store, ["task-exec:t0:x", "task-exec:t2:x", "task-exec:t1"])  # neighbours that must not leak
    seen: list[str] = []
    pages: list[int] = []
    cursor = ""
    for _ in range(10):  # bounded: a backend that fails to advance must fail, not hang
        page = await store.scan("task-exec:t1:", start_after=cursor, limit=100, reverse=reverse)
        if not page:
            break
        pages.append(len(page))
        seen += _keys(page)
        cursor = page[-1][0]
    assert pages == [100, 100, 50]
    assert seen == sorted(keys, reverse=reverse)


async def test_scan_rejects_bad_arguments(store: KvStore) -> None:
    with pytest.raises(ValueError):
        await store.scan("", limit=-1)
    with pytest.raises(ValueError):
        await store.scan("\ud800")
    with pytest.raises(ValueError):
        await store.scan("", start_after="\ud800")


# --- batch ------------------------------------------------------------------------------------------------


async def test_batch_applies_puts_and_deletes(store: KvStore) -> None:
    await _fill(store, ["old:1", "old:2", "keep"])
    await store.batch(
        puts={"new:1": b"1", "new:2": b"2", "keep": b"changed"}, deletes=["old:1", "old:2", "gone"]
    )
    assert await store.scan("") == [("keep", b"changed"), ("new:1", b"1"), ("new:2", b"2")]
    await store.batch(deletes=(k for k in ["new:1", "new:2"]))  # any iterable, a generator included
    await store.batch(puts={"only": b"put"})
    await store.batch()
    await store.batch(puts={}, deletes=[])
    assert await store.scan("") == [("keep", b"changed"), ("only", b"put")]


@pytest.mark.parametrize(
    ("puts", "deletes", "error"),
    [
        ({"n:1": b"1", "n:2": "not bytes", "n:3": b"3"}, ["o:1"], TypeError),
        ({"n:1": b"1", "n:2": None}, ["o:1"], TypeError),
        ({"n:1": b"1", "n:2": b"2"}, ["o:1", "\udc00"], ValueError),
        ({"n:1": b"1", "": b"2"}, ["o:1"], ValueError),
        ({"n:1": b"1", "o:2": b"2"}, ["o:1", "o:2"], ValueError),  # put and delete of one key: ambiguous
    ],
    ids=["str-value", "none-value", "bad-delete-key", "empty-key", "put-and-delete"],
)
async def test_bad_batch_applies_nothing(
    store: KvStore, puts: dict[str, bytes], deletes: list[str], error: type[Exception]
) -> None:
    await _fill(store, ["o:1", "o:2"])
    with pytest.raises(error):
        await store.batch(puts=puts, deletes=deletes)
    assert await store.scan("") == [("o:1", b"o:1"), ("o:2", b"o:2")]
    await store.batch(puts={"n:1": b"1"}, deletes=["o:1"])  # the store is still usable
    assert _keys(await store.scan("")) == ["n:1", "o:2"]


async def test_concurrent_writers_all_land(store: KvStore) -> None:
    keys = [f"object:{i:03d}" for i in range(500)]
    await asyncio.gather(*(store.put(k, k.encode()) for k in keys))
    assert _keys(await store.scan("object:")) == keys
    results = await asyncio.gather(
        *(store.batch(puts={f"b:{i}:x": b"x", f"b:{i}:y": b"y"}, deletes=[keys[i]]) for i in range(100)),
        *(store.get(k) for k in keys[100:]),
    )
    assert results[100:] == [k.encode() for k in keys[100:]]
    assert _keys(await store.scan("object:")) == keys[100:]
    assert len(await store.scan("b:")) == 200


# --- lifecycle --------------------------------------------------------------------------------------------


async def test_closed_store_raises_store_error(store: KvStore) -> None:
    await store.put("k", b"v")
    await store.ping()
    await store.close()
    with pytest.raises(StoreError):
        await store.get("k")
    with pytest.raises(StoreError):
        await store.put("k", b"v")
    with pytest.raises(StoreError):
        await store.delete("k")
    with pytest.raises(StoreError):
        await store.scan("")
    with pytest.raises(StoreError):
        await store.batch(puts={"a": b"1"})
    with pytest.raises(StoreError):
        await store.ping()
    await store.close()  # idempotent, so shutdown paths need not track state


async def test_url_is_kept(store: KvStore, tmp_path: Path) -> None:
    assert store.url in (_url("memory", tmp_path), _url("sqlite", tmp_path)) or store.url.startswith(
        "postgresql://postgres@127.0.0.1:"
    )


# --- open_store -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memory",
        "memory:",
        "memory://name",
        "://x",
        "mysql://localhost/db",
        "redis://localhost:6379/0",
        "sqlite://",
        "sqlite:///",
        "sqlite://host/x.db",
        "sqlite:///dir/",
        "sqlite:///x.db?mode=ro",
    ],
)
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError) as info:
        open_store(url)
    message = str(info.value)
    assert "memory://" in message
    assert "sqlite:///" in message
    assert "postgresql://" in message
    assert "redis://" in message  # listed as planned


def test_open_store_picks_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert isinstance(open_store("MEMORY://"), MemoryStore)
    assert isinstance(open_store(f"sqlite:///{tmp_path}/x.db"), SqliteStore)
    assert isinstance(open_store("sqlite://:memory:"), SqliteStore)
    postgres = pytest.importorskip("spearlet.store.postgres", reason="pip install 'spear-lab[postgres]'")
    for url in ("postgresql://u@127.0.0.1:5432/db", "postgres://u@127.0.0.1:5432/db"):
        assert isinstance(open_store(url), postgres.PostgresStore)  # it connects in open()


# --- SQLite only ------------------------------------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "dir" / "spearlet.db"


@pytest.fixture
async def sqlite_store(db_path: Path) -> AsyncIterator[SqliteStore]:
    s = open_store(f"sqlite:///{db_path}")
    assert isinstance(s, SqliteStore)
    yield s
    await s.close()


def _wal_size(db: Path) -> int:
    """Size of the database's WAL file; -1 when there is none."""
    wal = Path(f"{db}-wal")
    return wal.stat().st_size if wal.exists() else -1


def _is_file(path: Path) -> bool:
    return path.is_file()


def _pragma(path: Path, name: str) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute(f"PRAGMA {name}").fetchone()[0])
    finally:
        conn.close()


async def test_sqlite_reopen_keeps_everything(sqlite_store: SqliteStore, db_path: Path) -> None:
    big = os.urandom(1024 * 1024)
    await _fill(sqlite_store, UNICODE_KEYS)
    await sqlite_store.batch(puts={"big": big, "empty": b""}, deletes=["a"])
    expected = await sqlite_store.scan("")
    assert sqlite_store.integrity_check() == "ok"
    await sqlite_store.close()
    assert _wal_size(db_path) <= 0  # checkpointed into the main file on close

    reopened = SqliteStore(db_path)
    try:
        assert reopened.url == f"sqlite:///{db_path}"
        assert await reopened.scan("") == expected
        assert await reopened.get("big") == big
        assert await reopened.get("empty") == b""
        assert await reopened.get("a") is None
        assert reopened.integrity_check() == "ok"
    finally:
        await reopened.close()


async def test_sqlite_file_is_wal_with_expected_schema(sqlite_store: SqliteStore, db_path: Path) -> None:
    await sqlite_store.put("k", b"v")
    assert _is_file(db_path)  # parent directories were created
    assert _pragma(db_path, "journal_mode") == "wal"  # persistent in the file, seen by any connection
    conn = sqlite3.connect(db_path)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'kv'").fetchone()
    finally:
        conn.close()
    assert "WITHOUT ROWID" in sql
    assert sqlite_store.integrity_check() == "ok"


@pytest.mark.parametrize(
    ("prefix", "start_after", "reverse", "bounds"),
    [
        ("task:", "", False, "key>? AND key<?"),
        ("task:", "task:5", False, "key>? AND key<?"),
        ("task:", "", True, "key>? AND key<?"),
        ("task:", "task:5", True, "key>? AND key<?"),
        ("", "", False, "key>?"),
        ("", "m", False, "key>?"),
        ("", "m", True, "key>? AND key<?"),
    ],
)
async def test_sqlite_scan_seeks_primary_key_without_sorting(
    sqlite_store: SqliteStore, prefix: str, start_after: str, reverse: bool, bounds: str
) -> None:
    """Each page must seek the B-tree (O(log n + k)), never scan the table or sort."""
    sql, params = sqlite_store._scan_query(prefix, start_after, 100, reverse)
    conn = sqlite3.connect(sqlite_store.path)
    try:
        plan = " | ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()
    assert "TEMP B-TREE" not in plan
    assert f"SEARCH kv USING PRIMARY KEY ({bounds})" in plan


async def test_sqlite_batch_failing_midway_rolls_back(sqlite_store: SqliteStore, db_path: Path) -> None:
    """A failure inside SQLite after some statements ran (here a trigger) leaves nothing applied."""
    await _fill(sqlite_store, ["o:1", "o:2"])
    conn = sqlite3.connect(db_path)
    try:
        conn.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON kv WHEN NEW.key = 'n:boom' "
            "BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END"
        )
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StoreError, match="refused by test trigger"):
        await sqlite_store.batch(puts={"n:1": b"1", "n:boom": b"x", "n:3": b"3"}, deletes=["o:1"])
    assert await sqlite_store.scan("") == [("o:1", b"o:1"), ("o:2", b"o:2")]
    with pytest.raises(StoreError, match="refused by test trigger"):
        await sqlite_store.put("n:boom", b"x")
    # No transaction was left open: later writes and batches still work.
    await sqlite_store.batch(puts={"n:1": b"1"}, deletes=["o:1"])
    await sqlite_store.put("n:2", b"2")
    assert _keys(await sqlite_store.scan("")) == ["n:1", "n:2", "o:2"]
    assert sqlite_store.integrity_check() == "ok"


_CHILD = r"""
import asyncio, sys
from spearlet.store import open_store

async def main() -> None:
    store = open_store(sys.argv[1])
    n = int(sys.argv[2])
    for i in range(n):
        await store.put(f"k:{i:05d}", b"v%d" % i)
    await store.batch(puts={f"b:{i:05d}": bytes([i % 256]) * 100 for i in range(n)}, deletes=["k:00000"])
    await store.put("k:00001", b"overwritten")
    print("done", flush=True)
    sys.stdin.read()  # never returns on its own: the parent kills us mid-life, store still open

asyncio.run(main())
"""


async def test_sqlite_survives_sigkill_after_acknowledged_writes(tmp_path: Path) -> None:
    db = tmp_path / "killed" / "spearlet.db"
    url = f"sqlite:///{db}"
    n = 300
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _CHILD,
        url,
        str(n),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        if line != b"done\n":
            assert proc.stderr is not None
            err = await asyncio.wait_for(proc.stderr.read(), timeout=10)
            pytest.fail(f"child did not finish writing: {line!r}\n{err.decode(errors='replace')}")
        proc.send_signal(signal.SIGKILL)
        assert await asyncio.wait_for(proc.wait(), timeout=30) == -signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    assert _wal_size(db) > 0  # the writes were never checkpointed: recovery uses the WAL
    store = open_store(url)
    assert isinstance(store, SqliteStore)
    try:
        ks = await store.scan("k:")
        assert _keys(ks) == [f"k:{i:05d}" for i in range(1, n)]
        assert ks[0] == ("k:00001", b"overwritten")
        assert ks[-1] == (f"k:{n - 1:05d}", b"v%d" % (n - 1))
        bs = await store.scan("b:")
        assert bs == [(f"b:{i:05d}", bytes([i % 256]) * 100) for i in range(n)]
        assert store.integrity_check() == "ok"
    finally:
        await store.close()


@pytest.fixture
def in_tmp_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


async def test_sqlite_relative_url_is_relative_to_cwd(in_tmp_cwd: Path) -> None:
    store = open_store("sqlite:///.spear/sub/spearlet.db")
    try:
        await store.put("k", b"v")
    finally:
        await store.close()
    assert _is_file(in_tmp_cwd / ".spear" / "sub" / "spearlet.db")


async def test_sqlite_in_memory_url() -> None:
    store = open_store("sqlite://:memory:")
    try:
        await store.batch(puts={"a": b"1", "b": b"2"})
        assert await store.scan("", reverse=True) == [("b", b"2"), ("a", b"1")]
        await store.ping()
    finally:
        await store.close()


def test_sqlite_unopenable_paths_raise_store_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not an sqlite database, just some bytes" * 100)
    with pytest.raises(StoreError, match="not a database"):
        open_store(f"sqlite:///{garbage}")
    (tmp_path / "a-dir.db").mkdir()
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{tmp_path}/a-dir.db")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreError):
        open_store(f"sqlite:///{tmp_path}/a-file/sub/x.db")
