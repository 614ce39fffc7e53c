"""P8 (docs/performance.md): what one execution state change costs in the server's store, against raw
``sqlite3``.

Both sides write the same keys and values: per execution, the engine's three writes (the PENDING record
with its task index entry in one batch, then RUNNING, then COMPLETED, each a put of the record).

* ours opens the server's store by URL (``spearlet.store.open_store("sqlite:///...")``) and writes the
  way the engine does: through the store package's group commit (``spearlet.store.group_commit``,
  ``GroupCommit(store).put(items)``, awaiting each write's future) where it exists, else through the
  ``KvStore`` methods ``batch`` and ``put``. ``inflight`` executions are in progress at once, each
  yielding to the loop between its writes as the engine does while it waits for a slot and a worker, so
  that writes made in the same turn can share a commit;
* the baseline is a bare ``sqlite3`` connection in WAL mode with ``synchronous=NORMAL`` committing one
  row per statement (autocommit), one after another.

The figure is microseconds per state change: elapsed time / (3 * executions).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from google.protobuf import timestamp_pb2

from spear_sdk.wire import function_pb2 as fpb

from . import raw_sqlite

CHANGES_PER_EXECUTION = 3


def _record(execution_id: str, status: int) -> bytes:
    """Bytes shaped like a stored execution record: an ExecutionInfo plus a little JSON."""
    now = timestamp_pb2.Timestamp()
    now.GetCurrentTime()
    info = fpb.ExecutionInfo(
        execution_id=execution_id,
        task_id="0190f0c2a9b37c4e8d1f2a3b4c5d6e7f",
        function_name="",
        execution_mode=fpb.EXECUTION_MODE_SYNC,
        status=status,  # type: ignore[arg-type]
        started_at=now,
        completed_at=now if status == fpb.EXECUTION_STATUS_COMPLETED else None,
        execution_time_ms=1,
        metadata={"header.accept": "application/x-python-pickle"},
    )
    extra = {"cpu_time_ms": 0.1, "queue_time_ms": 0.2, "result": "CAMSEgQIAxAB"}
    return info.SerializeToString() + json.dumps(extra).encode()


class _Ids:
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._next = 0

    def take(self) -> str:
        self._next += 1
        return f"{self._prefix}{time.time_ns():020d}{self._next:08d}"


class RawSqlite:
    """The baseline: one sqlite3 connection, WAL, synchronous=NORMAL, one row per commit."""

    def __init__(self, path: Path) -> None:
        self._conn = raw_sqlite.connect(path)
        self._ids = _Ids("raw-")

    def commit_us(self, executions: int) -> float:
        writes = []
        for _ in range(executions):
            execution_id = self._ids.take()
            key = "execution:" + execution_id
            writes += [
                (key, _record(execution_id, fpb.EXECUTION_STATUS_PENDING)),
                (key, _record(execution_id, fpb.EXECUTION_STATUS_RUNNING)),
                (key, _record(execution_id, fpb.EXECUTION_STATUS_COMPLETED)),
            ]
        conn = self._conn
        start = time.perf_counter()
        for row in writes:
            conn.execute(raw_sqlite.UPSERT, row)
        return (time.perf_counter() - start) * 1e6 / len(writes)

    def close(self) -> None:
        self._conn.close()


class StoreLayer:
    """Ours: the server's SQLite store, opened by URL, written as the engine writes execution records."""

    def __init__(self, path: Path) -> None:
        from spearlet.store import open_store

        self.store = open_store(f"sqlite:///{path}")
        self._ids = _Ids("store-")
        self.write, self.path_name = _writer(self.store)

    async def change_us(self, executions: int, inflight: int) -> float:
        records = []
        for _ in range(executions):
            execution_id = self._ids.take()
            records.append(
                (
                    execution_id,
                    _record(execution_id, fpb.EXECUTION_STATUS_PENDING),
                    _record(execution_id, fpb.EXECUTION_STATUS_RUNNING),
                    _record(execution_id, fpb.EXECUTION_STATUS_COMPLETED),
                )
            )
        todo = iter(records)
        write = self.write

        async def lane() -> None:
            for execution_id, pending, running, completed in todo:
                key = "execution:" + execution_id
                await write({key: pending, f"task-exec:bench:{execution_id}": b""})
                await asyncio.sleep(0)
                await write({key: running})
                await asyncio.sleep(0)
                await write({key: completed})

        start = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(inflight)))
        return (time.perf_counter() - start) * 1e6 / (CHANGES_PER_EXECUTION * executions)

    async def close(self) -> None:
        await self.store.close()


Write = Callable[[dict[str, bytes]], Awaitable[None]]


def _writer(store: Any) -> tuple[Write, str]:
    """How the engine writes a record: through the group commit when the store package has one."""
    try:
        from spearlet.store.group_commit import GroupCommit
    except ImportError:

        async def direct(items: dict[str, bytes]) -> None:
            if len(items) == 1:
                ((key, value),) = items.items()
                await store.put(key, value)
            else:
                await store.batch(items)

        return direct, "KvStore.batch/put"
    group = GroupCommit(store)

    async def grouped(items: dict[str, bytes]) -> None:
        await group.put(items)

    return grouped, "GroupCommit.put"
