"""Server-generated ids: time-ordered, so key order is creation order and paging
with ``start_after`` stays stable while new executions arrive."""

from __future__ import annotations

import os
import time

_SEQ_LIMIT = 0xFFFF
#: Random bytes read from the system at once: one ``getrandom`` call per id cost a system call each.
_RANDOM_BATCH = 4096


class _TimeOrderedIds:
    """24 hex digits: milliseconds (12), a sequence within the millisecond (4), randomness (8).

    Ids made by one process are strictly increasing even when the clock stalls or steps back.
    """

    def __init__(self) -> None:
        self._last_ms = 0
        self._seq = 0
        self._random = b""
        self._used = 0

    def __call__(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        if now_ms > self._last_ms:
            self._last_ms, self._seq = now_ms, 0
        else:
            self._seq += 1
            if self._seq > _SEQ_LIMIT:
                self._last_ms, self._seq = self._last_ms + 1, 0
        if self._used + 4 > len(self._random):
            self._random, self._used = os.urandom(_RANDOM_BATCH), 0
        tail = self._random[self._used : self._used + 4].hex()
        self._used += 4
        return f"{self._last_ms:012x}{self._seq:04x}{tail}"

    def forget_random(self) -> None:
        """Draw fresh random bytes for the next id (a forked child must not repeat its parent's)."""
        self._used = len(self._random)


new_id = _TimeOrderedIds()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=new_id.forget_random)


def id_floor(unix_seconds: float) -> str:
    """The smallest id made at or after ``unix_seconds``: a ``start_after`` bound for time windows."""
    return f"{max(0, int(unix_seconds * 1000)):012x}"
