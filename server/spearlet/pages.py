"""Responses built from bytes already at hand, without parsing and re-serializing messages.

``ListExecutions`` pages: each execution record starts with its serialized ``ExecutionInfo`` (see
``store.records``), and a repeated message field on the wire is just those bytes, each behind a tag and a
length, so a page of 1 000 rows costs a concatenation (P6, docs/performance.md). Stream chunks: a worker
sends each value as a serialized ``Any``, which goes into its ``StreamExecutionResult`` the same way (P5).
"""

from __future__ import annotations

from collections.abc import Sequence

from .rpc import Encoded

# Field tags of ListExecutionsResponse: (number << 3) | wire type (2 = length-delimited, 0 = varint).
_EXECUTIONS = b"\x0a"
_HAS_MORE = b"\x10"
_NEXT_START_AFTER = b"\x1a"
# StreamExecutionResult.chunk_data.
_CHUNK_DATA = b"\x1a"


def execution_page(infos: Sequence[bytes], has_more: bool, next_start_after: str) -> Encoded:
    parts: list[bytes] = []
    for info in infos:
        size = len(info)
        parts += (_EXECUTIONS, _SMALL[size] if size < len(_SMALL) else varint(size), info)
    if has_more:
        parts += (_HAS_MORE, b"\x01")
    if next_start_after:
        text = next_start_after.encode()
        parts += (_NEXT_START_AFTER, varint(len(text)), text)
    return Encoded(b"".join(parts))


def chunk_message(head: bytes, data: bytes) -> Encoded:
    """A StreamExecutionResult: ``head`` (its other fields, serialized once per stream) with ``data`` (a
    serialized Any) as ``chunk_data``."""
    size = len(data)
    return Encoded(b"".join((head, _CHUNK_DATA, _SMALL[size] if size < len(_SMALL) else varint(size), data)))


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# The lengths of most rows (a record is a few hundred bytes), encoded once.
_SMALL = [varint(size) for size in range(1 << 14)]
