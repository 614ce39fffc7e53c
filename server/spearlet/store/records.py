"""What the server keeps in the store, and how each record is laid out as bytes (docs/design.md, "Stores").

Tasks are JSON (small, readable with any SQLite browser); object values stay raw bytes after a
length-prefixed JSON header so a 64 MiB object is never base64-inflated. An execution record starts with
the ``ExecutionInfo`` that the listing RPCs send, so that a page of them is sliced out of the stored
bytes, never rebuilt, followed by JSON of what only the server needs. Times are Unix seconds as floats.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from spear_sdk.wire import function_pb2

TASK = "task:"
TASK_NAME = "task-name:"
EXECUTION = "execution:"
TASK_EXECUTION = "task-exec:"
LOG = "log:"
OBJECT = "object:"


def task_key(task_id: str) -> str:
    return TASK + task_id


def task_name_key(name: str) -> str:
    return TASK_NAME + name


def execution_key(execution_id: str) -> str:
    return EXECUTION + execution_id


def task_execution_prefix(task_id: str) -> str:
    return f"{TASK_EXECUTION}{task_id}:"


def task_execution_key(task_id: str, execution_id: str) -> str:
    return task_execution_prefix(task_id) + execution_id


def log_key(execution_id: str) -> str:
    return LOG + execution_id


def object_key(key: str) -> str:
    return OBJECT + key


@dataclass
class StoredArtifact:
    artifact_type: str
    location: str
    artifact_id: str = ""
    version: str = ""
    checksum: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class StoredTask:
    task_id: str
    name: str
    artifact: StoredArtifact
    created_at: float
    updated_at: float
    description: str = ""
    version: int = 1
    metadata: dict[str, str] = field(default_factory=dict)
    #: Earlier artifacts, oldest first, each with the version it was and when it was replaced.
    history: list[dict[str, Any]] = field(default_factory=list)

    def encode(self) -> bytes:
        return compact_json(asdict(self))

    @classmethod
    def decode(cls, data: bytes) -> StoredTask:
        raw = json.loads(data)
        raw["artifact"] = StoredArtifact(**raw["artifact"])
        return cls(**raw)


@dataclass
class StoredExecution:
    execution_id: str
    task_id: str
    task_name: str
    function_name: str
    mode: int
    status: int
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    execution_time_ms: int = 0
    memory_used_bytes: int = 0
    cpu_time_ms: float = 0.0
    queue_time_ms: float = 0.0
    error_code: str = ""
    error_message: str = ""
    attempt: int = 0
    instance_id: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    #: Serialized ``google.protobuf.Any`` of the result (None: no value).
    result: bytes | None = None
    #: What the function raised (``ExecutionInfo.remote_error``): class name, ``str()``, traceback.
    remote_type: str = ""
    remote_message: str = ""
    remote_traceback: str = ""

    def remote_error(self) -> function_pb2.RemoteError | None:
        if not self.remote_type:
            return None
        return function_pb2.RemoteError(
            type=self.remote_type, message=self.remote_message, traceback=self.remote_traceback
        )

    def info(self) -> function_pb2.ExecutionInfo:
        info = function_pb2.ExecutionInfo(
            execution_id=self.execution_id,
            task_id=self.task_id,
            function_name=self.function_name,
            execution_mode=self.mode,  # type: ignore[arg-type]
            status=self.status,  # type: ignore[arg-type]
            execution_time_ms=self.execution_time_ms,
            memory_used_bytes=self.memory_used_bytes,
            error_message=self.error_message,
            metadata=self.metadata,
            attempt=self.attempt,
            error_code=self.error_code,
            task_name=self.task_name,
            instance_id=self.instance_id,
        )
        # Set in place: a Timestamp made apart and handed to the constructor is made, then copied.
        stamp(info.created_at, self.created_at)
        self.fill_times_and_error(info)
        return info

    def fill_times_and_error(
        self, message: function_pb2.ExecutionInfo | function_pb2.ExecutionResult
    ) -> None:
        """Set the start and end times and the remote error, which ``ExecutionInfo`` and
        ``ExecutionResult`` both carry, in place in ``message``."""
        if self.started_at is not None:
            stamp(message.started_at, self.started_at)
        if self.completed_at is not None:
            stamp(message.completed_at, self.completed_at)
        if self.remote_type:
            error = message.remote_error
            error.type, error.message, error.traceback = (
                self.remote_type,
                self.remote_message,
                self.remote_traceback,
            )

    def encode(self) -> bytes:
        info = self.info().SerializeToString()
        extra = _extra_json(self.cpu_time_ms, self.queue_time_ms, self.result)
        return _EXECUTION_FORMAT + _HEADER.pack(len(info)) + info + extra

    @classmethod
    def decode(cls, data: bytes) -> StoredExecution:
        if not data.startswith(_EXECUTION_FORMAT):
            return cls._decode_json(data)
        info, rest = _split_execution(data)
        extra = json.loads(rest)
        return cls(
            execution_id=info.execution_id,
            task_id=info.task_id,
            task_name=info.task_name,
            function_name=info.function_name,
            mode=info.execution_mode,
            status=info.status,
            created_at=seconds(info.created_at) or 0.0,
            started_at=seconds(info.started_at),
            completed_at=seconds(info.completed_at),
            execution_time_ms=info.execution_time_ms,
            memory_used_bytes=info.memory_used_bytes,
            cpu_time_ms=extra["cpu_time_ms"],
            queue_time_ms=extra["queue_time_ms"],
            error_code=info.error_code,
            error_message=info.error_message,
            attempt=info.attempt,
            instance_id=info.instance_id,
            metadata={key: info.metadata[key] for key in info.metadata},
            result=None if extra["result"] is None else base64.b64decode(extra["result"]),
            remote_type=info.remote_error.type,
            remote_message=info.remote_error.message,
            remote_traceback=info.remote_error.traceback,
        )

    @classmethod
    def _decode_json(cls, data: bytes) -> StoredExecution:
        """A record written by 0.1.0 before the ExecutionInfo layout: plain JSON."""
        raw = json.loads(data)
        if raw.get("result") is not None:
            raw["result"] = base64.b64decode(raw["result"])
        return cls(**raw)


def execution_info_bytes(data: bytes) -> bytes:
    """The serialized ``ExecutionInfo`` of a stored execution record, without decoding anything."""
    if not data.startswith(_EXECUTION_FORMAT):
        return StoredExecution.decode(data).info().SerializeToString()
    start = len(_EXECUTION_FORMAT) + _HEADER.size
    (size,) = _HEADER.unpack_from(data, len(_EXECUTION_FORMAT))
    return data[start : start + size]


def _split_execution(data: bytes) -> tuple[function_pb2.ExecutionInfo, bytes]:
    info = execution_info_bytes(data)
    return function_pb2.ExecutionInfo.FromString(info), data[
        len(_EXECUTION_FORMAT) + _HEADER.size + len(info) :
    ]


def timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    stamp(ts, seconds)
    return ts


def stamp(ts: timestamp_pb2.Timestamp, seconds: float) -> None:
    """Set ``ts`` (a message's field, in place) to the Unix time ``seconds``; it is set even at 0."""
    whole = math.floor(seconds)
    nanos = round((seconds - whole) * 1e9)  # the fraction alone keeps every digit the float has
    if nanos == 1_000_000_000:
        whole, nanos = whole + 1, 0
    if whole or nanos:
        ts.seconds, ts.nanos = whole, nanos
    else:
        ts.SetInParent()


def seconds(ts: timestamp_pb2.Timestamp) -> float | None:
    """Unix seconds of a ``Timestamp`` (the float :func:`timestamp` was given); ``None`` when unset."""
    return ts.seconds + ts.nanos / 1e9 if ts.seconds or ts.nanos else None


_HEADER = struct.Struct("<I")
#: ``json.dumps`` with separators of its own builds an encoder on every call; records are encoded on
#: every state change.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def compact_json(value: object) -> bytes:
    """``value`` as JSON without spaces."""
    return _COMPACT.encode(value).encode()


def _extra_json(cpu_time_ms: float, queue_time_ms: float, result: bytes | None) -> bytes:
    """What an execution record keeps beside its ``ExecutionInfo``, as :func:`compact_json` writes it,
    formatted directly: a record is encoded on every state change, and this costs a third of the encoder.
    (A finite number's ``repr`` is how JSON writes it; the encoder writes the others.)"""
    if not (math.isfinite(cpu_time_ms) and math.isfinite(queue_time_ms)):
        value = None if result is None else base64.b64encode(result).decode()
        return compact_json({"cpu_time_ms": cpu_time_ms, "queue_time_ms": queue_time_ms, "result": value})
    value_json = b"null" if result is None else b'"' + base64.b64encode(result) + b'"'
    return b'{"cpu_time_ms":%r,"queue_time_ms":%r,"result":%s}' % (cpu_time_ms, queue_time_ms, value_json)


# JSON records start with "{"; this byte marks the ExecutionInfo layout (and its version).
_EXECUTION_FORMAT = b"\x01"


@dataclass
class StoredObject:
    key: str
    value: bytes
    created_at: float
    updated_at: float
    ref_count: int = 1
    pinned: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    #: The value lives in a file of the object directory (``value`` is empty), of ``file_size`` bytes.
    in_file: bool = False
    file_size: int = 0

    @property
    def size(self) -> int:
        return self.file_size if self.in_file else len(self.value)

    def encode(self) -> bytes:
        header = {
            "key": self.key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "ref_count": self.ref_count,
            "pinned": self.pinned,
            "metadata": self.metadata,
        }
        if self.in_file:
            header["in_file"] = True
            header["file_size"] = self.file_size
        head = compact_json(header)
        return _HEADER.pack(len(head)) + head + self.value

    @classmethod
    def decode(cls, data: bytes) -> StoredObject:
        (length,) = _HEADER.unpack_from(data)
        header = json.loads(data[_HEADER.size : _HEADER.size + length])
        return cls(value=bytes(data[_HEADER.size + length :]), **header)
