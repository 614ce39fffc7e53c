"""What the server keeps in the store, and how each record is laid out as bytes (SPEC §4 keys).

Records are JSON (small, readable with any SQLite browser); object values stay raw bytes after a
length-prefixed JSON header so a 64 MiB object is never base64-inflated. Times are Unix seconds as floats.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
        return json.dumps(asdict(self), separators=(",", ":")).encode()

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

    def encode(self) -> bytes:
        raw = {f.name: getattr(self, f.name) for f in _EXECUTION_FIELDS}
        if self.result is not None:
            raw["result"] = base64.b64encode(self.result).decode()
        return json.dumps(raw, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> StoredExecution:
        raw = json.loads(data)
        if raw.get("result") is not None:
            raw["result"] = base64.b64decode(raw["result"])
        return cls(**raw)


_EXECUTION_FIELDS = fields(StoredExecution)
_HEADER = struct.Struct("<I")


@dataclass
class StoredObject:
    key: str
    value: bytes
    created_at: float
    updated_at: float
    ref_count: int = 1
    pinned: bool = False
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.value)

    def encode(self) -> bytes:
        header = {
            "key": self.key,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "ref_count": self.ref_count,
            "pinned": self.pinned,
            "metadata": self.metadata,
        }
        head = json.dumps(header, separators=(",", ":")).encode()
        return _HEADER.pack(len(head)) + head + self.value

    @classmethod
    def decode(cls, data: bytes) -> StoredObject:
        (length,) = _HEADER.unpack_from(data)
        header = json.loads(data[_HEADER.size : _HEADER.size + length])
        return cls(value=bytes(data[_HEADER.size + length :]), **header)
