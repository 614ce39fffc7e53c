"""How a notebook function becomes bytes: cloudpickle, with bytes that depend only on the code (so that an
unchanged cell registers nothing new, in this kernel or the next one) and a refusal that names the global
it could not serialize.

cloudpickle already writes every code object's file name as ``<dynamic-code>``. Two things still differ
from one kernel to the next for the same code:

- a class defined in the notebook travels with a tracker id, a random ``uuid4`` per class object, which
  the unpickling side uses to recognise the class. Here a class gets a tracker id derived from its own
  pickled bytes instead: the same definition has the same id, in any kernel; a changed one a new id.
- a ``frozenset`` constant (``x in {"a", "b"}`` compiles to one) is written in hash order, and string
  hashes are salted per process. Here such constants are written sorted.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import threading
import types
from collections.abc import Callable
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _impl

#: Held by a class while its content id is computed (its own pickle refers to it).
_PENDING_ID = "0" * 32
_assigning = threading.RLock()


class ShippingError(Exception):
    """What could not be serialized, in words for the user."""


class _SortedFrozenset(frozenset):  # type: ignore[type-arg]
    """A frozenset constant, pickled with its elements in a stable order."""


def _order(value: object) -> tuple[str, str]:
    return type(value).__qualname__, repr(value)


def _reduce_sorted_frozenset(value: _SortedFrozenset) -> Any:
    return frozenset, (sorted(value, key=_order),)


def _stable_code(code: types.CodeType) -> types.CodeType:
    consts = tuple(
        _stable_code(c)
        if isinstance(c, types.CodeType)
        else _SortedFrozenset(c)
        if type(c) is frozenset and len(c) > 1
        else c
        for c in code.co_consts
    )
    if all(a is b for a, b in zip(consts, code.co_consts, strict=True)):
        return code
    return code.replace(co_consts=consts)


def _reduce_code(code: types.CodeType) -> Any:
    return _impl._code_reduce(_stable_code(code))


def _assign_content_id(cls: type) -> None:
    """Give a notebook class the tracker id its pickled bytes determine (before cloudpickle draws one)."""
    with _assigning:
        with _impl._DYNAMIC_CLASS_TRACKER_LOCK:
            if cls in _impl._DYNAMIC_CLASS_TRACKER_BY_CLASS:
                return
            _impl._DYNAMIC_CLASS_TRACKER_BY_CLASS[cls] = _PENDING_ID
        try:
            content = hashlib.sha256(dumps(cls)).hexdigest()[:32]
        except BaseException:
            with _impl._DYNAMIC_CLASS_TRACKER_LOCK:
                _impl._DYNAMIC_CLASS_TRACKER_BY_CLASS.pop(cls, None)
            raise
        with _impl._DYNAMIC_CLASS_TRACKER_LOCK:
            _impl._DYNAMIC_CLASS_TRACKER_BY_CLASS[cls] = content
            _impl._DYNAMIC_CLASS_TRACKER_BY_ID.setdefault(content, cls)


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = cloudpickle.Pickler.dispatch_table.new_child(
        {types.CodeType: _reduce_code, _SortedFrozenset: _reduce_sorted_frozenset}
    )

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, type) and not _impl._should_pickle_by_reference(obj):
            _assign_content_id(obj)
        return super().reducer_override(obj)


def dumps(obj: object) -> bytes:
    with io.BytesIO() as buffer:
        _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
        return buffer.getvalue()


def ship(fn: Callable[..., Any], label: str) -> bytes:
    """``fn`` serialized; :class:`ShippingError` names what is not serializable."""
    try:
        return dumps(fn)
    except Exception as exc:  # cloudpickle raises many types for what it cannot serialize
        culprit = _culprit(fn)
        where = f" (through {culprit})" if culprit else ""
        raise ShippingError(
            f"cannot ship {label} to the server{where}: {type(exc).__name__}: {exc}"
        ) from None


def _culprit(fn: Callable[..., Any]) -> str:
    """The global or closure variable of ``fn`` that does not serialize, as ``global 'name' (a type)``."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    names: list[tuple[str, str, object]] = []
    fn_globals = getattr(fn, "__globals__", {})
    for name in _global_names(code):
        if name in fn_globals:
            names.append(("global", name, fn_globals[name]))
    for name, cell in zip(code.co_freevars, getattr(fn, "__closure__", None) or (), strict=False):
        try:
            names.append(("variable", name, cell.cell_contents))
        except ValueError:  # an empty cell
            continue
    for kind, name, value in names:
        try:
            dumps(value)
        except Exception:
            return f"{kind} {name!r}, a {type(value).__module__}.{type(value).__qualname__}"
    return ""


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return list(dict.fromkeys(names))
