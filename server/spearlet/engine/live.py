"""The in-memory side of an execution that has not ended: its waiters, stream, logs and cancel switch."""

from __future__ import annotations

import asyncio

from ..store.records import StoredExecution
from .chunks import ChunkBuffer
from .executors.call import LogLimiter


class LogBuffer:
    """Captured output of one execution (all attempts), bounded with a single truncation marker."""

    def __init__(self, limit_bytes: int) -> None:
        self._limiter = LogLimiter(limit_bytes)
        self._parts: list[str] = []

    def append(self, text: str) -> None:
        if kept := self._limiter.clip(text):
            self._parts.append(kept)

    def text(self) -> str:
        return "".join(self._parts)


def log_lines(text: str) -> list[str]:
    return text.splitlines()


class LiveExecution:
    """Owned by the engine from admission until the terminal record is stored."""

    def __init__(self, record: StoredExecution, *, stream: bool, log_limit_bytes: int) -> None:
        self.record = record
        self.done = asyncio.Event()
        self.chunks: ChunkBuffer | None = ChunkBuffer() if stream else None
        self.logs = LogBuffer(log_limit_bytes)
        self.task: asyncio.Task[None] | None = None
        self.cancel_reason: str | None = None
        #: Whether cancelling really stops the work (False: a thread that can only be abandoned).
        self.stops_work = True

    @property
    def execution_id(self) -> str:
        return self.record.execution_id

    def request_cancel(self, reason: str) -> None:
        """Stop the run (once); the engine records CANCELLED and then sets ``done``."""
        if self.cancel_reason is None and self.task is not None and not self.done.is_set():
            self.cancel_reason = reason or "cancelled"
            self.task.cancel()

    def finish(self) -> None:
        self.done.set()
        if self.chunks is not None:
            self.chunks.close()

    # Sink (executors.base.Sink): called on the loop while the run is in a worker.
    def started(self, instance_id: str) -> None:
        self.record.instance_id = instance_id

    def chunk(self, data: bytes) -> bool:
        return self.chunks.put(data) if self.chunks is not None else True

    async def writable(self) -> None:
        if self.chunks is not None:
            await self.chunks.room()

    def log(self, text: str) -> None:
        self.logs.append(text)
