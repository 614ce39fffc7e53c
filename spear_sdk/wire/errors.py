"""One exception hierarchy for both sides of the wire.

The server raises these to answer an RPC with a status; the SDK raises them for a status it received.
Each class carries the ``grpc.StatusCode`` it stands for, so the mapping lives here and nowhere else.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc

from . import function_pb2

#: Trailing metadata of a RESOURCE_EXHAUSTED answer to a full queue: milliseconds to wait before retrying.
RETRY_AFTER_MS = "retry-after-ms"


class SpearError(Exception):
    """Base of every error Spear Lab raises for a failed call."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    #: In ``map``: the position of the call that failed (``None`` elsewhere).
    index: int | None = None

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


class StoreInUse(FailedPrecondition):
    """A server's store is held by another server (process ``pid``): one server per SQLite file."""

    def __init__(self, message: str = "", *, path: str = "", pid: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


class ResourceExhausted(SpearError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    #: Seconds the server suggests waiting before a retry, when it gave a hint.
    retry_after: float | None = None


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


class Unimplemented(SpearError):
    """The server does not offer this call (an older or another implementation of the protocol)."""

    code = grpc.StatusCode.UNIMPLEMENTED


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
        Unimplemented,
    )
}


def error_for_status(code: grpc.StatusCode, message: str) -> SpearError:
    """The exception that stands for a gRPC status received from a server."""
    return _BY_CODE.get(code, SpearError)(message)


class ExecutionError(SpearError):
    """The server ran (or tried to run) the call, and the execution did not complete.

    ``status`` is the terminal status (``failed``, ``timeout``, ``cancelled``), ``error_code`` the
    server's reason (``EXCEPTION``, ``WORKER_CRASHED``, ...), ``logs`` what the function printed.
    """

    def __init__(
        self,
        message: str,
        *,
        execution_id: str = "",
        status: str = "failed",
        error_code: str = "",
        logs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.status = status
        self.error_code = error_code
        self.logs = logs


class RemoteTraceback(Exception):
    """The traceback of the remote frames; chained as the ``__cause__`` of a :class:`RemoteFunctionError`
    so that a notebook shows it above the local frames, as ``concurrent.futures`` does."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RemoteFunctionError(ExecutionError):
    """The function raised: ``remote_type`` is the name of its exception, ``remote_traceback`` its frames."""

    def __init__(
        self,
        message: str,
        *,
        remote_type: str = "",
        remote_message: str = "",
        remote_traceback: str = "",
        **details: Any,
    ) -> None:
        super().__init__(message, **details)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        if remote_traceback:
            self.__cause__ = RemoteTraceback(remote_traceback)


class ExecutionTimeout(ExecutionError):
    """The execution ran past its server-side time limit and was stopped."""


class ExecutionCancelled(ExecutionError):
    """The execution was cancelled before it completed."""


class WorkerCrashed(ExecutionError):
    """The worker process running the execution died (a crash, ``os._exit``, a signal)."""


def error_for_execution(
    *,
    execution_id: str,
    status: str,
    error_code: str,
    error_message: str,
    remote_error: function_pb2.RemoteError | None = None,
    logs: tuple[str, ...] = (),
) -> ExecutionError:
    """The exception for an execution that ended ``status`` (lowercase) with the server's error fields.

    ``remote_error`` is what the function raised, as the server sent it (the ``remote_error`` extension
    field); a server without that field gives only ``error_message``, ``"Type: message"``, and no traceback.
    """
    details: dict[str, Any] = {
        "execution_id": execution_id,
        "status": status,
        "error_code": error_code,
        "logs": logs,
    }
    message = error_message or f"the execution ended {status}"
    if status == "timeout":
        return ExecutionTimeout(message, **details)
    if status == "cancelled":
        return ExecutionCancelled(message, **details)
    if error_code == "WORKER_CRASHED":
        return WorkerCrashed(message, **details)
    if error_code == "EXCEPTION":
        if remote_error is not None and remote_error.type:
            remote = (remote_error.type, remote_error.message, remote_error.traceback)
        else:
            remote_type, _, remote_message = error_message.partition(": ")
            remote = (remote_type, remote_message, "")
        return RemoteFunctionError(
            message,
            remote_type=remote[0],
            remote_message=remote[1],
            remote_traceback=remote[2],
            **details,
        )
    return ExecutionError(f"{error_code}: {message}" if error_code else message, **details)
