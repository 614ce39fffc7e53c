"""References to objects inside values: how an ``ObjectRef`` travels and what it becomes where it lands.

A reference at the top level of an argument, result or streamed value is an ``Any`` of
:data:`REF_TYPE_URL` whose bytes are the object's key. A reference inside a container (a list, a dict, any
pickled object) pickles as a call of :func:`resolve` with its key. Where a resolver is installed (a worker
running a call) both become the object's value; elsewhere they become what the installed factory makes of
the key (the SDK's ``ObjectRef``), or a :class:`RefMarker`.

While :func:`collecting` is active, every reference that is pickled adds its key to the list it yields:
that is how a client names the objects a call needs, at any depth.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.protobuf import any_pb2

REF_TYPE_URL = "type.spear.dev/spear.ObjectRef"
#: The serialized ``Any`` of every reference starts with these bytes (field 1, the type URL).
REF_PREFIX = any_pb2.Any(type_url=REF_TYPE_URL).SerializeToString()


class RefMarker:
    """A reference read where nothing turns it into a value or an ``ObjectRef``."""

    def __init__(self, key: str) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f"RefMarker({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefMarker) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


class _PerThread(threading.local):
    """Jobs of the thread executor decode arguments in several threads at once."""

    resolver: Callable[[str], object] | None = None
    collected: list[str] | None = None


_state = _PerThread()
_factory: Callable[[str], object] = RefMarker


def ref_any(key: str) -> any_pb2.Any:
    return any_pb2.Any(type_url=REF_TYPE_URL, value=key.encode())


def ref_key(message: any_pb2.Any) -> str | None:
    """The key of a reference ``Any``; None for any other value."""
    return message.value.decode() if message.type_url == REF_TYPE_URL else None


def ref_key_of_bytes(data: bytes) -> str | None:
    """The key of a serialized reference ``Any``; None for any other value (checked without parsing)."""
    if not data.startswith(REF_PREFIX):
        return None
    return ref_key(any_pb2.Any.FromString(data))


def resolve(key: str) -> object:
    """What a reference becomes here: the value (with a resolver), else the factory's object."""
    resolver = _state.resolver
    if resolver is not None:
        return resolver(key)
    return _factory(key)


def reduce_ref(key: str) -> tuple[Callable[[str], object], tuple[str]]:
    """``__reduce__`` of a reference: noted while collecting, rebuilt by :func:`resolve`."""
    if _state.collected is not None:
        _state.collected.append(key)
    return resolve, (key,)


def set_factory(factory: Callable[[str], object]) -> None:
    global _factory
    _factory = factory


class resolving:
    """References decoded inside this block become values through ``resolver``.

    A class rather than ``contextlib.contextmanager``: it is entered for every call a worker runs, and
    a generator-based one costs several times as much."""

    __slots__ = ("_resolver", "_saved")

    def __init__(self, resolver: Callable[[str], object]) -> None:
        self._resolver = resolver
        self._saved: Callable[[str], object] | None = None

    def __enter__(self) -> None:
        self._saved, _state.resolver = _state.resolver, self._resolver

    def __exit__(self, *exc: object) -> None:
        _state.resolver = self._saved


class collecting:
    """The keys of the references pickled inside this block (in this thread); entered for every
    argument a client sends, hence a class (see :class:`resolving`)."""

    __slots__ = ("_saved",)

    def __init__(self) -> None:
        self._saved: list[str] | None = None

    def __enter__(self) -> list[str]:
        self._saved = _state.collected
        found: list[str] = []
        _state.collected = found
        return found

    def __exit__(self, *exc: object) -> None:
        _state.collected = self._saved
