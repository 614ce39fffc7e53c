"""The in-process store behind ``memory://`` (the lab default; nothing survives the process).

This module also holds the key rules every backend shares (:func:`check_key`, :func:`check_value`,
:func:`prefix_upper_bound`) so that all backends accept, reject and order exactly the same keys.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

from .base import KvStore, StoreError

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES_START, _SURROGATES_END = 0xD800, 0xDFFF


def check_key(key: str, what: str = "key") -> None:
    """Reject keys that some backend could not store or order the same way.

    Keys must be non-empty and encodable as UTF-8 (no lone surrogates): UTF-8 byte order equals code point
    order, which is what lets SQLite's BINARY collation and Python's ``str`` comparison agree.
    """
    if type(key) is not str:
        raise TypeError(f"{what} must be str, not {type(key).__name__}")
    if not key:
        raise ValueError(f"{what} must not be empty")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{what} {key!r} is not valid Unicode (lone surrogate)") from None


def check_bound(value: str, what: str) -> None:
    """Like :func:`check_key` for a scan prefix or ``start_after``, where ``""`` means "no bound"."""
    if value == "":
        return
    check_key(value, what)


def check_value(key: str, value: bytes) -> bytes:
    """``value`` as ``bytes``; a ``bytearray``/``memoryview`` is copied so later mutation can't leak in."""
    if type(value) is bytes:
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value of {key!r} must be bytes, not {type(value).__name__}")


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix``; ``None`` if there is none.

    Drops trailing U+10FFFF characters and increments the last remaining one, skipping the surrogate block
    so the bound itself stays encodable (SQLite binds it as UTF-8 text).
    """
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if _SURROGATES_START <= nxt <= _SURROGATES_END:
        nxt = _SURROGATES_END + 1
    return stripped[:-1] + chr(nxt)


def scan_bounds(prefix: str, start_after: str, reverse: bool) -> tuple[str, str, str | None]:
    """A scan's range on ``key`` as one lower bound (operator ``>=`` or ``>``, value) and one upper bound
    (``key < upper``; ``None``: none), ``start_after`` folded in.

    Folding matters to SQL backends: with two lower bounds a planner may seek on the weaker one and
    filter the rest, making every page of a long listing cost O(n)."""
    lower_op, lower = ">=", prefix
    upper = prefix_upper_bound(prefix)
    if start_after:
        if not reverse and start_after >= prefix:
            lower_op, lower = ">", start_after
        elif reverse and (upper is None or start_after < upper):
            upper = start_after
    return lower_op, lower, upper


def check_batch(
    puts: Mapping[str, bytes] | None, deletes: Iterable[str]
) -> tuple[list[tuple[str, bytes]], list[str]]:
    """Validate a whole batch before any of it is applied; a key both put and deleted is ambiguous."""
    put_items: list[tuple[str, bytes]] = []
    for key, value in () if puts is None else puts.items():
        check_key(key)
        put_items.append((key, check_value(key, value)))
    delete_keys = list(deletes)
    for key in delete_keys:
        check_key(key)
    if put_items and delete_keys:
        both = {k for k, _ in put_items}.intersection(delete_keys)
        if both:
            raise ValueError(f"batch both puts and deletes {sorted(both)!r}")
    return put_items, delete_keys


class MemoryStore(KvStore):
    """A dict for lookups plus a sorted key list for ``scan`` in O(log n + k).

    Every method runs to completion without awaiting, so each call (a batch included) is atomic with
    respect to other coroutines on the loop. It is not meant to be shared between threads.
    """

    def __init__(self, url: str = "memory://") -> None:
        self.url = url
        self._data: dict[str, bytes] = {}
        self._keys: list[str] = []  # sorted; the same set as self._data
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self.url} is closed")

    def _put(self, key: str, value: bytes) -> None:
        if key not in self._data:
            bisect.insort(self._keys, key)
        self._data[key] = value

    def _delete(self, key: str) -> bool:
        if self._data.pop(key, None) is None:
            return False
        del self._keys[bisect.bisect_left(self._keys, key)]
        return True

    async def get(self, key: str) -> bytes | None:
        self._check_open()
        check_key(key)
        return self._data.get(key)

    async def put(self, key: str, value: bytes) -> None:
        self._check_open()
        check_key(key)
        self._put(key, check_value(key, value))

    async def delete(self, key: str) -> bool:
        self._check_open()
        check_key(key)
        return self._delete(key)

    async def scan(
        self,
        prefix: str,
        *,
        start_after: str = "",
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, bytes]]:
        self._check_open()
        check_bound(prefix, "prefix")
        check_bound(start_after, "start_after")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, not {limit}")
        if limit == 0:
            return []
        keys = self._keys
        upper = prefix_upper_bound(prefix)
        if not reverse:
            if start_after and start_after >= prefix:
                lo = bisect.bisect_right(keys, start_after)
            else:
                lo = bisect.bisect_left(keys, prefix)
            hi = len(keys) if upper is None else bisect.bisect_left(keys, upper, lo)
            if limit is not None:
                hi = min(hi, lo + limit)
            selected = keys[lo:hi]
        else:
            if start_after and (upper is None or start_after < upper):
                upper = start_after
            lo = bisect.bisect_left(keys, prefix)
            hi = len(keys) if upper is None else bisect.bisect_left(keys, upper, lo)
            if limit is not None:
                lo = max(lo, hi - limit)
            selected = keys[lo:hi][::-1]
        data = self._data
        return [(k, data[k]) for k in selected]

    synchronous_batch = True

    async def batch(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        self.batch_now(puts, deletes)

    def batch_now(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        self._check_open()
        put_items, delete_keys = check_batch(puts, deletes)
        # Validation above raised before any change; nothing below can fail, so the batch is all-or-nothing.
        for key in delete_keys:
            self._delete(key)
        for key, value in put_items:
            self._put(key, value)

    async def ping(self) -> None:
        self._check_open()

    async def close(self) -> None:
        """Drop the data; a second ``close`` is a no-op so shutdown paths need not track state."""
        self._closed = True
        self._data = {}
        self._keys = []
