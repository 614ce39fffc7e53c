"""Python values <-> ``google.protobuf.Any``: how every argument and result travels on the wire.

JSON-like values travel as ``google.protobuf.Value`` so that a client in any language can read them;
integers at the top level travel as ``Int64Value`` so that ``9`` comes back as ``9``, not ``9.0``. Other
Python objects travel as pickle bytes under :data:`PICKLE_TYPE_URL`.

A ``Value`` number is a double, whoever sent it. Decoded, it becomes what ``json.loads`` makes of the same
JSON: an integral number (within a double's exact range, 2**53) is an ``int``, any other a ``float``. So a
client in any language that sends the JSON number ``3`` calls a Python function with ``3``.

Two encodings serve two readers:

* ``exact=True`` (what Python callers ask for): a value goes out as ``Value`` only if it comes back
  unchanged; a container holding integers, tuples or integral floats (``1.0``) is pickled instead, so
  ``[1, 2]`` stays ``[1, 2]`` and ``{"a": 1.0}`` stays ``{"a": 1.0}``. A float at the top level travels as
  ``DoubleValue``, so ``2.0`` stays a float.
* ``exact=False`` (what any other client gets): JSON semantics win; integers inside containers become
  numbers and tuples become lists. Only values JSON cannot hold at all are pickled.

``allow_pickle=False`` refuses pickle in either direction with :class:`PickleNotAllowed`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2
from google.protobuf.message import DecodeError, Message

from . import refs

PICKLE_TYPE_URL = "type.spear.dev/python.pickle"
_GOOGLE = "type.googleapis.com/google.protobuf."
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# Integers beyond 2**53 lose digits as doubles, so they never travel inside a JSON Value.
_EXACT_DOUBLE_INT = 2**53


class CodecError(ValueError):
    """A value that cannot be encoded, or an ``Any`` that cannot be decoded."""


class PickleNotAllowed(CodecError):
    """Pickle was needed (or received) where pickled values are refused."""


def encode(value: object, *, exact: bool = True, allow_pickle: bool = True) -> any_pb2.Any:
    """Encode one Python value as an ``Any``."""
    out = any_pb2.Any()
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64_MIN <= value <= _INT64_MAX:
            out.Pack(wrappers_pb2.Int64Value(value=value))
            return out
    elif isinstance(value, (bytes, bytearray)):
        out.Pack(wrappers_pb2.BytesValue(value=bytes(value)))
        return out
    elif exact and isinstance(value, float):
        out.Pack(wrappers_pb2.DoubleValue(value=value))
        return out
    elif _is_json(value, exact):
        out.Pack(to_value(value))
        return out
    if not allow_pickle:
        raise PickleNotAllowed(f"a value of type {type(value).__name__} needs pickle, which is refused here")
    try:
        payload = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # cloudpickle raises many types for unpicklable objects
        raise CodecError(f"cannot serialize a value of type {type(value).__name__}: {exc}") from exc
    out.type_url = PICKLE_TYPE_URL
    out.value = payload
    return out


def decode(message: any_pb2.Any, *, allow_pickle: bool = True) -> object:
    """Decode one ``Any`` into a Python value; an empty ``Any`` is ``None``."""
    url = message.type_url
    if not url:
        return None
    if url == PICKLE_TYPE_URL:
        if not allow_pickle:
            raise PickleNotAllowed("pickled values are refused by this server")
        try:
            return pickle.loads(message.value)
        except Exception as exc:  # unpickling raises anything the pickled objects raise
            raise CodecError(f"cannot unpickle value: {type(exc).__name__}: {exc}") from exc
    if url == refs.REF_TYPE_URL:  # an object by reference: its value is pickled too
        if not allow_pickle:
            raise PickleNotAllowed("values by reference are pickled, which this server refuses")
        return refs.resolve(message.value.decode())
    reader = _READERS.get(url)
    if reader is None:
        raise CodecError(f"unsupported value type {url!r}")
    try:
        return reader(message.value)
    except DecodeError as exc:
        raise CodecError(f"malformed {url.rsplit('.', 1)[-1]} value: {exc}") from exc


def check_type_url(url: str, *, allow_pickle: bool) -> None:
    """Raise unless ``url`` names a value type this codec decodes (without decoding it)."""
    if not url or url in _READERS:
        return
    if url in (PICKLE_TYPE_URL, refs.REF_TYPE_URL):
        if not allow_pickle:
            raise PickleNotAllowed("pickled values are refused by this server")
        return
    raise CodecError(f"unsupported value type {url!r}")


def encode_bytes(value: object, *, exact: bool = True, allow_pickle: bool = True) -> bytes:
    """:func:`encode`, serialized: the form values take between the server and its workers."""
    return encode(value, exact=exact, allow_pickle=allow_pickle).SerializeToString()


def decode_bytes(data: bytes, *, allow_pickle: bool = True) -> object:
    """:func:`decode` of a serialized ``Any``."""
    message = any_pb2.Any()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise CodecError(f"malformed Any: {exc}") from exc
    return decode(message, allow_pickle=allow_pickle)


def to_value(value: object) -> struct_pb2.Value:
    """A JSON-like Python value as a ``google.protobuf.Value``."""
    out = struct_pb2.Value()
    _fill(out, value)
    return out


def from_value(value: struct_pb2.Value) -> object:
    """A ``google.protobuf.Value`` as a plain Python value, as ``json.loads`` gives it: integral numbers
    are ints, other numbers floats."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if _reads_as_int(number) else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return {k: from_value(v) for k, v in value.struct_value.fields.items()}
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    return None


def _fill(out: struct_pb2.Value, value: object) -> None:
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        out.number_value = float(value)
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, dict):
        fields = out.struct_value.fields
        out.struct_value.SetInParent()
        for key, item in value.items():
            _fill(fields[key], item)
    else:
        items = out.list_value.values
        out.list_value.SetInParent()
        for item in value:  # type: ignore[attr-defined]
            _fill(items.add(), item)


def _reads_as_int(number: float) -> bool:
    """Whether a ``Value`` number decodes as an ``int`` (an integral double that holds it exactly)."""
    return number.is_integer() and abs(number) <= _EXACT_DOUBLE_INT


def _is_json(value: object, exact: bool) -> bool:
    """Whether ``value`` fits a ``Value`` (and, if ``exact``, comes back from it unchanged)."""
    if value is None or isinstance(value, (bool, str)):
        return True
    if isinstance(value, float):
        return not exact or not _reads_as_int(value)
    if isinstance(value, int):
        return not exact and abs(value) <= _EXACT_DOUBLE_INT
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, exact) for k, v in value.items())
    if type(value) is list or (not exact and type(value) is tuple):
        return all(_is_json(v, exact) for v in value)
    return False


def _reader(cls: type[Message], unwrap: Callable[[Any], object]) -> Callable[[bytes], object]:
    def read(data: bytes) -> object:
        return unwrap(cls.FromString(data))

    return read


_READERS: dict[str, Callable[[bytes], object]] = {
    _GOOGLE + "Value": _reader(struct_pb2.Value, from_value),
    _GOOGLE + "Struct": _reader(struct_pb2.Struct, lambda m: {k: from_value(v) for k, v in m.fields.items()}),
    _GOOGLE + "ListValue": _reader(struct_pb2.ListValue, lambda m: [from_value(v) for v in m.values]),
    **{
        _GOOGLE + cls.DESCRIPTOR.name: _reader(cls, lambda m: m.value)
        for cls in (
            wrappers_pb2.StringValue,
            wrappers_pb2.Int64Value,
            wrappers_pb2.Int32Value,
            wrappers_pb2.UInt64Value,
            wrappers_pb2.UInt32Value,
            wrappers_pb2.DoubleValue,
            wrappers_pb2.FloatValue,
            wrappers_pb2.BoolValue,
            wrappers_pb2.BytesValue,
        )
    },
}
