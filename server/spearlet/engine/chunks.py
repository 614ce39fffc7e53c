"""Streamed chunks on their way from a worker to the client, bounded with backpressure.

A function can yield faster than a client reads. :meth:`ChunkBuffer.put` reports when the buffer has
reached its bound, and the executor then stops taking chunks from the worker until :meth:`ChunkBuffer.room`
returns (half the bound is free again, or the stream ended): the worker blocks on its full socket or pipe,
and with it the generator. The bound can be passed by what one read from a worker already held, never by
more.

A value that travels by reference is a few bytes here but an object file of any size: it counts as a
quarter of the byte bound, so that at most four wait, however large.
"""

from __future__ import annotations

import asyncio
from collections import deque

from spear_sdk.wire.refs import REF_PREFIX

#: Chunks, and bytes of chunks, waiting for the client before the worker is paused.
MAX_CHUNKS = 1024
MAX_BYTES = 16 << 20


class ChunkBuffer:
    def __init__(self, max_chunks: int = MAX_CHUNKS, max_bytes: int = MAX_BYTES) -> None:
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self._items: deque[bytes] = deque()
        self.size_bytes = 0
        self._closed = False
        self._ready = asyncio.Event()  # something to get, or closed
        self._room = asyncio.Event()  # below the low-water mark, or closed
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, data: bytes) -> bool:
        """Keep one chunk; False once the bound is reached (pause until :meth:`room`)."""
        self._items.append(data)
        self.size_bytes += self._weight(data)
        self._ready.set()
        if self._full():
            self._room.clear()
            return False
        return True

    def close(self) -> None:
        """No more chunks: readers get the rest, then ``None``; nobody waits for room any more."""
        self._closed = True
        self._ready.set()
        self._room.set()

    async def get(self) -> bytes | None:
        """The next chunk, or ``None`` once the buffer is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        data = self._items.popleft()
        self.size_bytes -= self._weight(data)
        if not self._room.is_set() and self._below_low_water():
            self._room.set()
        return data

    def _weight(self, data: bytes) -> int:
        return self.max_bytes // 4 if data.startswith(REF_PREFIX) else len(data)

    async def room(self) -> None:
        await self._room.wait()

    def _full(self) -> bool:
        return len(self._items) >= self.max_chunks or self.size_bytes >= self.max_bytes

    def _below_low_water(self) -> bool:
        return len(self._items) <= self.max_chunks // 2 and self.size_bytes <= self.max_bytes // 2
