"""``ObjectRef``: a value stored on the server, passed to functions by reference.

``client.put(value)`` stores a value once and returns a reference; passing the reference as an argument
(at the top level, or inside lists, tuples, dicts or any picklable object) hands the function the value,
without sending it again. The SDK also sends any argument larger than the inline limit this way on its own,
and reads results sent so (``_transfer``).
"""

from __future__ import annotations

from typing import Any

from ._runtime import Runtime
from ._transfer import ObjectTransfer, StoredRef
from .wire import refs


class ObjectRefBase:
    """What both surfaces' references share: the key, the size, the type, the repr, and pickling as a
    reference (so a reference inside any argument reaches the function as the value)."""

    __slots__ = ("_runtime", "_transfer", "key", "size_bytes", "type_name")

    def __init__(self, stored: StoredRef, transfer: ObjectTransfer, runtime: Runtime) -> None:
        #: The object's key on the server (``client.objects()`` lists it).
        self.key = stored.key
        #: The stored size of the value, in bytes.
        self.size_bytes = stored.size_bytes
        #: The type of the value that was put, as ``module.Class``.
        self.type_name = stored.type_name
        self._transfer = transfer
        self._runtime = runtime

    @property
    def _spear_object_key(self) -> str:
        return self.key

    def __reduce__(self) -> tuple[Any, ...]:
        return refs.reduce_ref(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRefBase) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key!r}: {self.type_name}, {_size(self.size_bytes)}>"


class ObjectRef(ObjectRefBase):
    """A value stored on the server (``Client.put``); ``.get()`` reads it back, ``.delete()`` frees it."""

    __slots__ = ()

    def get(self) -> Any:
        """The value (a same-machine client maps it from shared memory without copying)."""
        return self._runtime.run(self._transfer.get(self.key))

    def delete(self) -> None:
        """Delete the object now; calls already running keep their reference until they end."""
        self._runtime.run(self._transfer.delete(self.key))


class AsyncObjectRef(ObjectRefBase):
    """:class:`ObjectRef` for ``AsyncClient``: ``await ref.get()``, ``await ref.delete()``."""

    __slots__ = ()

    async def get(self) -> Any:
        return await self._runtime.hop(self._transfer.get(self.key))

    async def delete(self) -> None:
        await self._runtime.hop(self._transfer.delete(self.key))


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
