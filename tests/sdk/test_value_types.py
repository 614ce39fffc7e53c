"""The SDK keeps Python types exact both ways: floats stay floats and ints stay ints, nested too."""

from __future__ import annotations

import math

import spear_sdk


def _typed(value: object) -> object:
    """``value`` with the type of every number spelt out, so that 1 and 1.0 compare different."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_typed(item) for item in value)
    return (type(value).__name__, value)


VALUES = [2.0, -0.0, 1e300, [1.0, 2.5, 3], {"a": 1.0}, {"a": [1, 1.0, {"b": 0.0}]}, (1.0, 2)]


def test_floats_and_ints_travel_with_their_types(client: spear_sdk.Client) -> None:
    same = client.function(lambda value: value, name="same-typed")
    seen = client.function(lambda value: repr(value), name="repr-typed")
    for value in VALUES:
        assert _typed(same(value)) == _typed(value)
        assert seen(value) == repr(value)  # what the function got, as it got it
    assert [_typed(r) for r in same.map(VALUES)] == [_typed(v) for v in VALUES]
    assert math.copysign(1.0, same(-0.0)) == -1.0
