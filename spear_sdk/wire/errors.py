"""One exception hierarchy for both sides of the wire.

The server raises these to answer an RPC with a status; the SDK raises them for a status it received.
Each class carries the ``grpc.StatusCode`` it stands for, so the mapping lives here and nowhere else.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class SpearError(Exception):
    """Base of every error Spear Lab raises for a failed call."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(SpearError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SpearError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SpearError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SpearError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SpearError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unauthenticated(SpearError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SpearError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unavailable(SpearError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SpearError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(SpearError):
    code = grpc.StatusCode.CANCELLED


class Internal(SpearError):
    code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[SpearError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unauthenticated,
        PermissionDenied,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Internal,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> SpearError:
    """The exception that stands for a gRPC status received from a server."""
    return _BY_CODE.get(code, SpearError)(message)
