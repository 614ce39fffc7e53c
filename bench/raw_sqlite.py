"""The bare ``sqlite3`` the baselines write to: one ``kv`` table, WAL, ``synchronous=NORMAL``, autocommit,
the table and statement shapes of spearlet's SQLite store. Used by P8's raw commits (:mod:`bench.storage`)
and by the echo server's durable relay (:mod:`bench.echo_server`)."""

from __future__ import annotations

import os
import sqlite3

UPSERT = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_SCHEMA = "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to ``path`` with the ``kv`` table in place (made if missing)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(_SCHEMA)
    return conn
