"""Hypothesis strategies for the request of every RPC, built from the message descriptors.

Every field gets random values plus the edges a server trips on: empty, huge and negative numbers, enum
values no enum has, strings and bytes over the size limits, ``Any`` values of the wrong type or with bytes
that do not parse. A few fields are steered so that what the fuzzer registers and runs stays harmless: an
artifact is one of the test workloads, a module that does not exist, or an executable that does not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import cloudpickle
import workloads
from google.protobuf import any_pb2, message_factory, struct_pb2, wrappers_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from spear_sdk.wire import codec

Strategy = st.SearchStrategy[Any]

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
#: Just over the limits the server checks: names and ids (256 characters), object keys (4096). (Messages
#: over the transport's limit cost gRPC a round of flow control each: a test of their own sends those.)
OVERSIZED = ("n" * 257, "k" * 4097)
EDGE_STRINGS = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "../../etc/passwd",
    "object://",
    "é" * 300,
    "\U0010ffff",
    *OVERSIZED,
)
#: Functions of ``workloads`` that are quick and bounded for any argument.
SAFE_FUNCTIONS = ("square", "identity", "echo", "add", "double", "fail", "shout")


def strings() -> Strategy:
    return st.one_of(st.text(max_size=24), st.sampled_from(EDGE_STRINGS))


def integers(bounds: tuple[int, int]) -> Strategy:
    low, high = bounds
    return st.one_of(st.integers(low, high), st.sampled_from((0, -1, 1, 100, 1000, 1001, low, high)))


def enums(field: FieldDescriptor) -> Strategy:
    valid = [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(valid), st.integers(-3, 12), st.sampled_from(INT32))


def json_values() -> Strategy:
    leaves = st.none() | st.booleans() | st.floats() | st.integers(-(10**6), 10**6) | st.text(max_size=12)
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
        max_leaves=8,
    )


def _packed(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def any_values() -> Strategy:
    """Well-formed values, pickles good and bad, wrappers, and type URLs nobody knows."""
    safe_pickles = st.sampled_from(
        (cloudpickle.dumps((1, "a")), cloudpickle.dumps({1, 2}), cloudpickle.dumps(b"x")[:-3])
    )
    # 0xff is no pickle opcode: a corrupt pickle fails at its first byte, whatever follows.
    bad_pickles = st.binary(max_size=32).map(lambda data: b"\xff" + data)
    return st.one_of(
        json_values().map(lambda v: codec.encode(v, exact=False)),
        st.builds(any_pb2.Any, type_url=st.just(codec.PICKLE_TYPE_URL), value=safe_pickles | bad_pickles),
        st.builds(wrappers_pb2.Int64Value, value=integers(INT64)).map(_packed),
        st.builds(wrappers_pb2.StringValue, value=strings()).map(_packed),
        st.builds(any_pb2.Any, type_url=strings(), value=st.binary(max_size=32)),
        st.builds(
            any_pb2.Any,
            type_url=st.sampled_from(
                (
                    "type.googleapis.com/google.protobuf.Value",
                    "type.googleapis.com/google.protobuf.Struct",
                    "type.googleapis.com/spearlet.TaskInfo",
                )
            ),
            value=st.binary(max_size=32),
        ),
        st.just(_packed(struct_pb2.Value())),  # a Value with no kind set
    )


def runnable_artifacts() -> Strategy:
    """A test workload, with a memory limit or some metadata at times."""
    from spear_sdk.wire import function_pb2 as fpb

    metadata = st.sampled_from(
        ({}, {"owner": "fuzz"}, {"memory_limit_mb": "64"}, {"memory_limit_mb": "4096"})
    )
    return st.builds(
        fpb.ArtifactSpec,
        artifact_type=st.just("python"),
        location=st.sampled_from(SAFE_FUNCTIONS).map(lambda f: f"workloads:{f}"),
        metadata=metadata,
    )


def artifact_specs() -> Strategy:
    """A runnable workload, an artifact that cannot load, or one the server must refuse."""
    from spear_sdk.wire import function_pb2 as fpb

    metadata = st.dictionaries(
        st.sampled_from(("args", "memory_limit_mb", "owner")) | st.text(max_size=8), strings(), max_size=3
    )
    unloadable = st.builds(
        fpb.ArtifactSpec,
        artifact_type=st.just("python"),
        location=st.sampled_from(
            ("no_such_module_xyz:f", "workloads:no_such_attr", "workloads:not_callable", "nocolon")
        ),
        metadata=metadata,
    )
    elsewhere = st.builds(
        fpb.ArtifactSpec,
        artifact_type=st.sampled_from(("pickle", "process", "", "PYTHON", "shell")) | st.text(max_size=8),
        # Nothing the fuzzer stores under this prefix, and no executable of this name.
        location=st.text(max_size=12).map(lambda s: f"object://fuzz-nothing/{s}")
        | st.text(max_size=12).map(lambda s: f"/nonexistent/{s}"),
        checksum=st.sampled_from(("", "sha256:" + "0" * 64, "md5:abc")) | st.text(max_size=8),
        metadata=metadata,
    )
    return runnable_artifacts() | unloadable | elsewhere


def function_names() -> Strategy:
    """``function_name`` picks the attribute of a python artifact: a safe one, or one that does not exist."""
    unknown = st.text(max_size=12).filter(lambda name: not hasattr(workloads, name))
    return st.sampled_from(("", *SAFE_FUNCTIONS)) | unknown


#: Fields whose values are steered, by (message, field) full names.
STEERED: dict[tuple[str, str], Callable[[], Strategy]] = {
    ("spearlet.InvokeFunctionRequest", "function_name"): function_names,
    # A fresh worker costs a process start: keep them rare.
    ("spearlet.InvokeFunctionRequest", "force_new_instance"): lambda: st.sampled_from(
        (False,) * 19 + (True,)
    ),
}
#: Messages whose values are steered, by full name.
STEERED_MESSAGES: dict[str, Callable[[], Strategy]] = {
    "spearlet.ArtifactSpec": artifact_specs,
    "google.protobuf.Any": any_values,
}


def plausible_invocations() -> Strategy:
    """Invocations that get past validation often, so that the engine really runs (and fails) calls."""
    from spear_sdk.wire import function_pb2 as fpb

    context = st.builds(
        fpb.ExecutionContext,
        timeout_ms=st.integers(0, 3000),
        max_retries=st.integers(0, 2),
        environment=st.dictionaries(st.sampled_from(("A", "B")), st.text(max_size=4), max_size=2),
        headers=st.dictionaries(
            st.just("accept"), st.sampled_from(("application/x-python-pickle", "")), max_size=1
        ),
        session_id=st.text(max_size=4),
    )
    parameter = st.builds(fpb.FunctionParameter, name=st.sampled_from(("", "", "b", "x")), value=any_values())
    return st.builds(
        fpb.InvokeFunctionRequest,
        invocation_type=st.sampled_from((0, 1)),
        task_name=_names_of_artifacts(),
        artifact_spec=runnable_artifacts() | artifact_specs(),
        function_name=function_names(),
        parameters=st.lists(parameter, max_size=3),
        execution_mode=st.sampled_from((0, 1, 2)),
        context=st.none() | context,
        wait=st.booleans(),
    ).map(_named_after_artifact)


def plausible_registrations() -> Strategy:
    from spear_sdk.wire import function_pb2 as fpb

    return st.builds(
        fpb.RegisterTaskRequest,
        task_name=_names_of_artifacts(),
        artifact_spec=runnable_artifacts() | artifact_specs(),
        metadata=st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2),
    ).map(_named_after_artifact)


def _names_of_artifacts() -> Strategy:
    """Mostly empty (the request is then named after its artifact), at times a name that clashes."""
    return st.sampled_from(("",) * 9 + ("fuzz-clash",))


def _named_after_artifact(request: Any) -> Any:
    """One name per artifact, so that a plausible request reuses its task instead of clashing."""
    if not request.task_name:
        digest = hashlib.sha256(request.artifact_spec.SerializeToString(deterministic=True)).hexdigest()
        request.task_name = f"fuzz-{digest[:12]}"
    return request


#: Requests that also come in a plausible form, by message full name.
PLAUSIBLE: dict[str, Callable[[], Strategy]] = {
    "spearlet.InvokeFunctionRequest": plausible_invocations,
    "spearlet.RegisterTaskRequest": plausible_registrations,
}


def requests(descriptor: Descriptor) -> Strategy:
    """Requests of one RPC: any message at all, or (where defined) a plausible one."""
    plausible = PLAUSIBLE.get(descriptor.full_name)
    return messages(descriptor) | plausible() if plausible else messages(descriptor)


def messages(descriptor: Descriptor, depth: int = 0) -> Strategy:
    """Instances of ``descriptor``'s message with each field left unset or set at random."""
    if descriptor.full_name in STEERED_MESSAGES:
        return STEERED_MESSAGES[descriptor.full_name]()
    cls = message_factory.GetMessageClass(descriptor)
    fields = {}
    for field in descriptor.fields:
        if depth > 3 and field.type == FieldDescriptor.TYPE_MESSAGE:
            continue
        fields[field.name] = st.none() | _field_values(descriptor, field, depth)

    def build(values: dict[str, Any]) -> Message:
        return cls(**{name: v for name, v in values.items() if v is not None})

    return st.fixed_dictionaries(fields).map(build)


def _field_values(owner: Descriptor, field: FieldDescriptor, depth: int) -> Strategy:
    steer = STEERED.get((owner.full_name, field.name))
    if steer is not None:
        return steer()
    if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
        key, item = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        return st.dictionaries(_scalar(key, depth), _scalar(item, depth), max_size=3)
    one = _scalar(field, depth)
    return st.lists(one, max_size=3) if field.is_repeated else one


def _scalar(field: FieldDescriptor, depth: int) -> Strategy:
    kind = field.type
    if kind == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, depth + 1)
    if kind == FieldDescriptor.TYPE_STRING:
        return strings()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64) | st.sampled_from((b"", b"\x00" * (70 << 10)))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_ENUM:
        return enums(field)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return integers(INT64)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return integers((0, 2**32 - 1))
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return integers((0, 2**64 - 1))
    return integers(INT32)


def raw_requests() -> Strategy:
    """Request bytes: random, truncated, or with field tags and lengths that lie."""
    return st.one_of(
        st.binary(max_size=256),
        st.sampled_from(
            (
                b"\xff\xff\xff\xff",  # a tag that is no varint
                b"\x0a\xff",  # a length beyond the end
                b"\x12\x05ab",  # a string cut short
                b"\x0a\x02\xc3\x28",  # a string that is not UTF-8
                b"\x08" + b"\x80" * 11,  # a varint too long
                b"\x0f",  # a group end without a start
            )
        ),
    )
