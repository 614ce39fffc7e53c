"""How numbers decode: a JSON number (a double in ``google.protobuf.Value``) as ``json.loads`` reads it,
and what the SDK sends (``exact=True``) back with its Python type."""

from __future__ import annotations

import json

import pytest
from google.protobuf import any_pb2, struct_pb2, wrappers_pb2

from spear_sdk.wire import codec


def _from_json(text: str) -> object:
    """What a JSON client's text becomes on the wire (every number a double), decoded."""
    packed = any_pb2.Any()
    packed.Pack(codec.to_value(json.loads(text)))
    return codec.decode(packed)


@pytest.mark.parametrize(
    "text", ["3", "-7", "0", "2.5", "[1, 2.5, 3]", '{"a": 1, "b": [2, 0.5]}', "9007199254740992", "1e-3"]
)
def test_value_numbers_decode_as_json_loads_reads_them(text: str) -> None:
    decoded = _from_json(text)
    assert decoded == json.loads(text)
    # 3 stays 3, not 3.0
    assert json.dumps(decoded, sort_keys=True) == json.dumps(json.loads(text), sort_keys=True)


def test_integral_doubles_beyond_the_exact_range_stay_floats() -> None:
    packed = any_pb2.Any()
    packed.Pack(struct_pb2.Value(number_value=2.0**60))
    assert type(codec.decode(packed)) is float


@pytest.mark.parametrize("value", [2.0, -0.0, [1.0, 2.5, 3], {"a": 1.0}, [{"a": [0.0]}], float("inf")])
def test_exact_encoding_keeps_float_types(value: object) -> None:
    decoded = codec.decode(codec.encode(value, exact=True))
    assert repr(decoded) == repr(value)


def test_a_top_level_float_travels_as_a_double() -> None:
    packed = codec.encode(2.0, exact=True)
    assert packed.Is(wrappers_pb2.DoubleValue.DESCRIPTOR)
    assert codec.encode(2.5, exact=False).Is(struct_pb2.Value.DESCRIPTOR)  # what any client reads


def test_floats_that_do_not_look_like_ints_stay_json() -> None:
    assert codec.encode([2.5, 0.1], exact=True).Is(struct_pb2.Value.DESCRIPTOR)
    assert codec.encode({"a": 1.0}, exact=True).type_url == codec.PICKLE_TYPE_URL
    assert codec.encode({"a": 1.0}, exact=False).Is(struct_pb2.Value.DESCRIPTOR)
