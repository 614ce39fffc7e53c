"""Execution records and their logs (keys ``execution:{id}``, ``task-exec:{task}:{id}``, ``log:{id}``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from spear_sdk.wire import function_pb2

from ..store import KvStore
from ..store.group_commit import GroupCommit
from ..store.records import (
    EXECUTION,
    StoredExecution,
    execution_info_bytes,
    execution_key,
    log_key,
    task_execution_key,
    task_execution_prefix,
)
from .handover import call_key

_SCAN_BATCH = 1000


class ExecutionStore:
    """The execution records in the store, written by group commit.

    Read after write: a read of many records (a listing, the newest of a task, an iteration) first waits
    until every write queued so far is stored, so that it never reports less than what the engine has
    already told a client. A single :meth:`get` does not: the engine asks it only for executions that
    have settled (whose last write is stored), and answers for the others from memory after
    :meth:`flush`."""

    def __init__(self, store: KvStore) -> None:
        self._store = store
        self._writes = GroupCommit(store)

    async def exists(self, execution_id: str) -> bool:
        return await self._store.get(execution_key(execution_id)) is not None

    async def get(self, execution_id: str) -> StoredExecution | None:
        data = await self._store.get(execution_key(execution_id))
        return StoredExecution.decode(data) if data is not None else None

    def create(self, record: StoredExecution) -> asyncio.Future[None]:
        """Queue the new record and its task index entry; the future resolves once they are stored.

        Nobody waits for a new record as such: it is held back a moment (``group_commit.LAZY_S``) in case
        the execution's next states can go in the same write."""
        return self._writes.put(
            {
                execution_key(record.execution_id): record,
                task_execution_key(record.task_id, record.execution_id): b"",
            },
            urgent=False,
        )

    def save(self, record: StoredExecution, logs: str | None = None, *, urgent: bool) -> asyncio.Future[None]:
        """Queue the record (and, at the end of a run, any captured output) to be stored in one atomic
        step; the future resolves once it is. ``urgent``: someone waits for it (see ``GroupCommit.put``)."""
        puts: dict[str, StoredExecution | bytes] = {execution_key(record.execution_id): record}
        if logs:
            puts[log_key(record.execution_id)] = logs.encode()
        return self._writes.put(puts, urgent=urgent)

    def save_call(self, execution_id: str, call: bytes) -> None:
        """Queue what another server needs to run the call again (see :mod:`.handover`), lazily."""
        self._writes.put({call_key(execution_id): call}, urgent=False)

    async def call(self, execution_id: str) -> bytes | None:
        return await self._store.get(call_key(execution_id))

    def hurry(self) -> None:
        """Write the queued records now rather than within ``group_commit.LAZY_S``."""
        self._writes.hurry()

    async def flush(self) -> None:
        """Return once every queued write is stored."""
        await self._writes.flush()

    async def save_many(self, records: list[StoredExecution]) -> None:
        await self._store.batch({execution_key(r.execution_id): r.encode() for r in records})

    async def logs(self, execution_id: str) -> str:
        data = await self._store.get(log_key(execution_id))
        return data.decode(errors="replace") if data is not None else ""

    async def page(self, *, task_id: str, status: int, start_after: str, count: int) -> list[StoredExecution]:
        """Up to ``count`` records in id order after ``start_after``, of one task and/or one status."""
        await self.flush()
        found: list[StoredExecution] = []
        async for record in self._iterate(task_id, start_after):
            if not status or record.status == status:
                found.append(record)
                if len(found) >= count:
                    break
        return found

    async def info_page(
        self, *, task_id: str, status: int, start_after: str, count: int, newest_first: bool = False
    ) -> list[tuple[str, bytes]]:
        """:meth:`page` as ``(execution_id, serialized ExecutionInfo)``, sliced from the stored records
        (parsed only to filter by status); ``newest_first`` reads in descending id order."""
        await self.flush()
        found: list[tuple[str, bytes]] = []
        # Without a status filter every row counts: read exactly one page.
        batch = _SCAN_BATCH if status else max(1, count)
        async for execution_id, data in self._iterate_raw(task_id, start_after, batch, newest_first):
            info = execution_info_bytes(data)
            if status and function_pb2.ExecutionInfo.FromString(info).status != status:
                continue
            found.append((execution_id, info))
            if len(found) >= count:
                break
        return found

    async def newest(self, task_id: str, count: int) -> list[StoredExecution]:
        await self.flush()
        prefix = task_execution_prefix(task_id)
        rows = await self._store.scan(prefix, limit=count, reverse=True)
        records = [await self.get(key[len(prefix) :]) for key, _ in rows]
        return [r for r in records if r is not None]

    async def iterate(self, start_after: str = "") -> AsyncIterator[StoredExecution]:
        """Every record in id order (creation order), read in batches."""
        await self.flush()
        async for record in self._iterate("", start_after):
            yield record

    async def delete_for_task(self, task_id: str) -> list[StoredExecution]:
        """Delete a task's records, index entries and logs; return the records deleted."""
        await self.flush()  # a queued write must not bring a deleted record back
        prefix = task_execution_prefix(task_id)
        index = await self._store.scan(prefix)
        records = [r for r in [await self.get(key[len(prefix) :]) for key, _ in index] if r is not None]
        deletes = [key for key, _ in index]
        for record in records:
            execution_id = record.execution_id
            deletes += [execution_key(execution_id), log_key(execution_id), call_key(execution_id)]
        await self._store.batch(deletes=deletes)
        return records

    async def _iterate(self, task_id: str, start_after: str) -> AsyncIterator[StoredExecution]:
        async for _, data in self._iterate_raw(task_id, start_after):
            yield StoredExecution.decode(data)

    async def _iterate_raw(
        self, task_id: str, start_after: str, batch: int = _SCAN_BATCH, reverse: bool = False
    ) -> AsyncIterator[tuple[str, bytes]]:
        """``(execution_id, stored record)`` in id order (descending with ``reverse``)."""
        if task_id:
            prefix = task_execution_prefix(task_id)
            after = prefix + start_after if start_after else ""
            while True:
                rows = await self._store.scan(prefix, start_after=after, limit=batch, reverse=reverse)
                for key, _ in rows:
                    execution_id = key[len(prefix) :]
                    data = await self._store.get(execution_key(execution_id))
                    if data is not None:
                        yield execution_id, data
                if len(rows) < batch:
                    return
                after = rows[-1][0]
        else:
            after = EXECUTION + start_after if start_after else ""
            while True:
                rows = await self._store.scan(EXECUTION, start_after=after, limit=batch, reverse=reverse)
                for key, data in rows:
                    yield key[len(EXECUTION) :], data
                if len(rows) < batch:
                    return
                after = rows[-1][0]
