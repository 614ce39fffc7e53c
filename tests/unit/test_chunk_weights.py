"""A streamed value by reference weighs a quarter of the chunk buffer's byte bound: at most four wait."""

from __future__ import annotations

import asyncio

from spearlet.engine.chunks import ChunkBuffer

from spear_sdk.wire import refs


def test_values_by_reference_fill_the_buffer_after_four() -> None:
    async def main() -> None:
        buffer = ChunkBuffer()
        ref = refs.ref_any("spear/results/x/1").SerializeToString()
        assert [buffer.put(ref) for _ in range(4)] == [True, True, True, False]
        await buffer.get()
        await buffer.get()
        await asyncio.wait_for(buffer.room(), 1)  # half the bound free again
        assert buffer.size_bytes == buffer.max_bytes // 2

    asyncio.run(main())


def test_inline_chunks_weigh_their_bytes() -> None:
    buffer = ChunkBuffer()
    assert all(buffer.put(b"x" * 1000) for _ in range(100))
    assert buffer.size_bytes == 100_000
