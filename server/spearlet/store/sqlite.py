"""The SQLite store behind ``sqlite:///path`` (the ``spearlet serve`` default).

One connection, WAL journal, ``synchronous=NORMAL``: a commit is written to the WAL before it returns, so it
survives a killed process (not a power cut: the WAL is only fsynced at checkpoints). The sqlite3 calls run
synchronously inside the coroutines: a WAL commit costs ~40 µs, less than a hop to a thread would. The price
is that a lock held by another process can stall the event loop for up to ``busy_timeout_ms``.

A write that fails (a full disk: "database or disk is full") makes the store *unwritable* until a write
succeeds again: ``ping`` then reports the failure (so health turns unhealthy) and tries a one-row write of
its own, which brings the store back as soon as space returns, whether or not calls come in meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from .base import KvStore, StoreError
from .file_lock import StoreLock
from .memory import check_batch, check_bound, check_key, check_value, scan_bounds

_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
_GET = "SELECT value FROM kv WHERE key = ?"
_PUT = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_DELETE = "DELETE FROM kv WHERE key = ?"
# A table of one row that ``ping`` rewrites to find out whether the store can write again.
_PROBE_SCHEMA = "CREATE TABLE IF NOT EXISTS write_probe (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER)"
_PROBE = "INSERT INTO write_probe (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1"
_MEMORY = ":memory:"
_DEFAULT_BUSY_TIMEOUT_MS = 5000
# Caps the WAL file left behind after a big write burst; the WAL is reused, not shrunk, otherwise.
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024

log = logging.getLogger(__name__)


def path_from_url(url: str) -> str:
    """The database path in a ``sqlite://`` URL (``sqlite:///rel.db``, ``sqlite:////abs.db``, ``sqlite://:memory:``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite":
        raise ValueError(f"not a sqlite:// URL: {url!r}")
    if rest in (_MEMORY, "/" + _MEMORY):
        return _MEMORY
    if not rest.startswith("/"):
        raise ValueError(
            f"malformed sqlite URL {url!r}: expected sqlite:///relative/path.db, "
            "sqlite:////absolute/path.db or sqlite://:memory: (no host part)"
        )
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ValueError(f"malformed sqlite URL {url!r}: no database file name")
    if "?" in path or "#" in path:
        raise ValueError(f"malformed sqlite URL {url!r}: query strings and fragments are not supported")
    return os.path.expanduser(path)


def _url_for(path: str) -> str:
    return "sqlite://" + _MEMORY if path == _MEMORY else "sqlite:///" + path


class SqliteStore(KvStore):
    """An ordered KV store in one ``kv`` table keyed by the primary-key B-tree.

    ``url`` defaults to the ``sqlite://`` URL of ``path``. Opening creates missing parent directories and the
    table; a file that is not an SQLite database raises :class:`StoreError`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        url: str | None = None,
        busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        self.path = os.fspath(path)
        self.url = url if url is not None else _url_for(self.path)
        # Serializes use of the one connection if a store ever crosses threads; uncontended it costs ~0.1 µs.
        self._lock = threading.Lock()
        #: Why the last write failed, until a write succeeds again (None: the store writes).
        self._write_failure: str | None = None
        self._file_lock = StoreLock(self.path, self.url) if self._on_disk() else None
        try:
            self._conn: sqlite3.Connection | None = self._connect(busy_timeout_ms)
        except BaseException:
            self._release_file_lock()
            raise

    def _on_disk(self) -> bool:
        if self.path == _MEMORY:
            return False
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"sqlite store {self.url}: cannot create directory for {self.path!r}: {e}"
            ) from e
        return True

    def _release_file_lock(self) -> None:
        if self._file_lock is not None:
            self._file_lock.release()

    @classmethod
    def from_url(cls, url: str, *, busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS) -> SqliteStore:
        """Open the database a ``sqlite://`` URL names; a malformed URL raises :class:`ValueError`."""
        return cls(path_from_url(url), url=url, busy_timeout_ms=busy_timeout_ms)

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        if self.path != _MEMORY:
            parent = os.path.dirname(os.path.abspath(self.path))
            try:
                os.makedirs(parent, exist_ok=True)
            except OSError as e:
                raise StoreError(f"sqlite store {self.url}: cannot create directory {parent!r}: {e}") from e
        try:
            conn = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None, timeout=busy_timeout_ms / 1000
            )
        except sqlite3.Error as e:
            raise StoreError(f"sqlite store {self.url}: cannot open {self.path!r}: {e}") from e
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if self.path != _MEMORY and str(mode).lower() != "wal":
                raise StoreError(f"sqlite store {self.url}: cannot enable WAL (journal_mode is {mode!r})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            conn.execute(_SCHEMA)
            conn.execute(_PROBE_SCHEMA)
        except BaseException as e:
            conn.close()
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"sqlite store {self.url}: cannot open {self.path!r}: {e}") from e
            raise
        return conn

    def _open_conn(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreError(f"store {self.url} is closed")
        return conn

    def _error(self, op: str, e: sqlite3.Error) -> StoreError:
        if self._conn is None:
            return StoreError(f"store {self.url} is closed")
        return StoreError(f"sqlite store {self.url}: {op} failed: {type(e).__name__}: {e}")

    def _write_error(self, op: str, e: sqlite3.Error) -> StoreError:
        """The error of a failed write, remembered: until a write succeeds the store is unwritable."""
        if self._conn is not None:
            self._write_failure = f"{type(e).__name__}: {e}"
        return self._error(op, e)

    async def get(self, key: str) -> bytes | None:
        conn = self._open_conn()
        check_key(key)
        try:
            with self._lock:
                row = conn.execute(_GET, (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._error(f"get {key!r}", e) from e
        return None if row is None else row[0]

    async def put(self, key: str, value: bytes) -> None:
        conn = self._open_conn()
        check_key(key)
        value = check_value(key, value)
        try:
            with self._lock:
                conn.execute(_PUT, (key, value))
        except sqlite3.Error as e:
            raise self._write_error(f"put {key!r}", e) from e
        self._write_failure = None

    async def delete(self, key: str) -> bool:
        conn = self._open_conn()
        check_key(key)
        try:
            with self._lock:
                existed = conn.execute(_DELETE, (key,)).rowcount > 0
        except sqlite3.Error as e:
            raise self._write_error(f"delete {key!r}", e) from e
        self._write_failure = None
        return existed

    def _scan_query(
        self, prefix: str, start_after: str, limit: int | None, reverse: bool
    ) -> tuple[str, tuple[Any, ...]]:
        """The SQL and parameters of a scan: one lower and at most one upper bound on ``key``."""
        lower_op, lower, upper = scan_bounds(prefix, start_after, reverse)
        where = f"key {lower_op} ?"
        params: tuple[Any, ...] = (lower,)
        if upper is not None:
            where += " AND key < ?"
            params += (upper,)
        order = "DESC" if reverse else "ASC"
        # LIMIT -1 means no limit; one SQL text per shape keeps the statement cache small.
        sql = f"SELECT key, value FROM kv WHERE {where} ORDER BY key {order} LIMIT ?"
        return sql, (*params, -1 if limit is None else limit)

    async def scan(
        self,
        prefix: str,
        *,
        start_after: str = "",
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, bytes]]:
        conn = self._open_conn()
        check_bound(prefix, "prefix")
        check_bound(start_after, "start_after")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, not {limit}")
        if limit == 0:
            return []
        sql, params = self._scan_query(prefix, start_after, limit, reverse)
        try:
            with self._lock:
                rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise self._error(f"scan {prefix!r}", e) from e
        return rows

    synchronous_batch = True

    async def batch(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        self.batch_now(puts, deletes)

    def batch_now(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        conn = self._open_conn()
        put_items, delete_keys = check_batch(puts, deletes)
        if not put_items and not delete_keys:
            return
        try:
            with self._lock:
                # IMMEDIATE takes the write lock up front, so a busy database fails before any change.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if delete_keys:
                        conn.executemany(_DELETE, ((k,) for k in delete_keys))
                    if put_items:
                        conn.executemany(_PUT, put_items)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        # The original error is the one worth reporting.
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as e:
            raise self._write_error(
                f"batch of {len(put_items)} puts and {len(delete_keys)} deletes", e
            ) from e
        self._write_failure = None

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers and, after a failed write, writes again."""
        conn = self._open_conn()
        try:
            with self._lock:
                conn.execute("SELECT 1 FROM kv LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise self._error("ping", e) from e
        failure = self._write_failure
        if failure is None:
            return  # a store that writes is not written to by pings: an idle server stays idle
        try:
            with self._lock:
                conn.execute(_PROBE)  # autocommit: one small transaction
        except sqlite3.Error as e:
            self._write_failure = f"{type(e).__name__}: {e}"
            raise StoreError(f"sqlite store {self.url}: cannot write: {self._write_failure}") from e
        self._write_failure = None
        log.warning("sqlite store %s: writes again (the last failure was %s)", self.url, failure)

    async def close(self) -> None:
        """Checkpoint the WAL into the main file and close; a second ``close`` is a no-op.

        A checkpoint that fails (a full disk) loses nothing: every commit is in the WAL, which the next
        open replays. It is logged as one line, and the store closes all the same."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            try:
                if self.path != _MEMORY:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as e:
                log.warning(
                    "sqlite store %s: closed without a checkpoint (%s); every commit is kept in %s-wal "
                    "and is applied at the next open",
                    self.url,
                    e,
                    self.path,
                )
            finally:
                conn.close()
                self._release_file_lock()

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` for a sound database (for tests and diagnostics)."""
        conn = self._open_conn()
        try:
            with self._lock:
                rows = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.Error as e:
            raise self._error("integrity_check", e) from e
        return "\n".join(str(r[0]) for r in rows)
