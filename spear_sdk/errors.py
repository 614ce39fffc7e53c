"""Every error the SDK raises: catch ``SpearError`` for all of them.

``SpearError`` subclasses name what the server refused (a gRPC status); ``ExecutionError`` subclasses
name how an execution that did run ended (``RemoteFunctionError`` carries the remote traceback).
"""

from __future__ import annotations

from .wire.errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    ExecutionCancelled,
    ExecutionError,
    ExecutionTimeout,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RemoteFunctionError,
    RemoteTraceback,
    ResourceExhausted,
    SpearError,
    StoreInUse,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    WorkerCrashed,
)

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "DeadlineExceeded",
    "ExecutionCancelled",
    "ExecutionError",
    "ExecutionTimeout",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RemoteFunctionError",
    "RemoteTraceback",
    "ResourceExhausted",
    "SpearError",
    "StoreInUse",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WorkerCrashed",
]
