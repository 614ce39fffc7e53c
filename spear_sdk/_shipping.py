"""How a notebook function becomes bytes: cloudpickle, with a code identity that survives a kernel restart
and a refusal that names the global it could not serialize."""

from __future__ import annotations

import io
import pickle
import re
import types
from collections.abc import Callable
from typing import Any

import cloudpickle
from cloudpickle import cloudpickle as _cloudpickle_impl

#: The file name shipped for code defined in a notebook cell. ipykernel compiles a cell under
#: ``<tmp>/ipykernel_<pid>/<hash of the cell>.py``: the pid changes with every kernel, and the code's file
#: name is part of the pickle, so the same cell would be new code after each restart. The SDK puts the
#: real file back when it shows a remote traceback (``_core._localize``).
SHIPPED_CELL_FILE = "<dynamic-code>"
_KERNEL_CELL = re.compile(r"[/\\]ipykernel_\d+[/\\][^/\\]+\.py$|^<ipython-input-\d+-[0-9a-f]+>$")


class ShippingError(Exception):
    """What could not be serialized, in words for the user."""


def is_kernel_cell(filename: str) -> bool:
    return bool(_KERNEL_CELL.search(filename))


def _stable_code(code: types.CodeType) -> types.CodeType:
    consts = tuple(_stable_code(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    filename = SHIPPED_CELL_FILE if is_kernel_cell(code.co_filename) else code.co_filename
    if filename == code.co_filename and consts == code.co_consts:
        return code
    return code.replace(co_filename=filename, co_consts=consts)


def _reduce_code(code: types.CodeType) -> Any:
    return _cloudpickle_impl._code_reduce(_stable_code(code))


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = cloudpickle.Pickler.dispatch_table.new_child({types.CodeType: _reduce_code})


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
