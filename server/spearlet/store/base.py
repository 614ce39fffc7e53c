"""The one storage interface every backend implements (docs/design.md, "Stores").

Keys are strings ordered by code point; values are bytes. Backends are chosen by URL with
:func:`spearlet.store.open_store`. A backend may do its work synchronously inside the coroutine when that
is cheaper than a thread hop (SQLite commits take tens of microseconds), so callers must not assume a
call yields to the loop.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping

from spear_sdk.wire.errors import StoreInUse


class StoreError(Exception):
    """The store failed to answer (I/O error, closed store, corrupt file)."""


class StoreLocked(StoreError, StoreInUse):
    """Another server (process ``pid``) holds the store: one server per SQLite file."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        StoreError.__init__(self, message)
        StoreInUse.__init__(self, message, path=path, pid=pid)


class KvStore(abc.ABC):
    """An ordered key-value store with atomic batches."""

    #: The URL the store was opened with (shown in health details).
    url: str

    #: Other processes write it too (``postgresql://``): see :class:`.shared.SharedKvStore`.
    shared = False

    async def open(self) -> None:  # noqa: B027 (optional: only a backend with a connection needs it)
        """Connect (a backend that needs a connection does it here); called once, before any other call."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value of ``key``, or ``None`` when absent."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes) -> None:
        """Create or replace ``key``."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; whether it existed."""

    @abc.abstractmethod
    async def scan(
        self,
        prefix: str,
        *,
        start_after: str = "",
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, bytes]]:
        """Entries whose key starts with ``prefix``, in key order.

        ``start_after`` excludes every key up to and including it (with ``reverse``, every key from it
        upward, so a descending scan pages downward the same way). ``limit`` caps the count (``None``:
        no cap).
        """

    @abc.abstractmethod
    async def batch(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        """Apply every put and delete atomically: all of them or none."""

    #: Whether :meth:`batch_now` works: the backend's batch never waits for anything but its own I/O.
    synchronous_batch = False

    def batch_now(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        """:meth:`batch` without a coroutine, for callers on the event loop that cannot await."""
        raise NotImplementedError(f"{type(self).__name__} has no synchronous batch")

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release the store; later calls raise :class:`StoreError`."""
