"""Every failure reaches the user as a typed spear_sdk.errors exception, never a raw grpc.RpcError."""

from __future__ import annotations

import traceback

import grpc
import pytest
from sdk_support import wait_until

import spear_sdk
from spear_sdk import errors
from spear_sdk._connection import Connection


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.ALREADY_EXISTS, errors.AlreadyExists),
        (grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted),
        (grpc.StatusCode.UNAUTHENTICATED, errors.Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, errors.PermissionDenied),
        (grpc.StatusCode.UNAVAILABLE, errors.Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.CANCELLED, errors.Cancelled),
        (grpc.StatusCode.INTERNAL, errors.Internal),
        (grpc.StatusCode.UNKNOWN, errors.SpearError),
        (grpc.StatusCode.DATA_LOSS, errors.SpearError),
    ],
)
def test_every_status_maps_to_a_typed_error(code: grpc.StatusCode, expected: type[errors.SpearError]) -> None:
    trailing = grpc.aio.Metadata(("retry-after-ms", "250"))
    rpc_error = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details="what went wrong")
    error = Connection("127.0.0.1:9").error(rpc_error)
    assert type(error) is expected and not isinstance(error, grpc.RpcError)
    assert "what went wrong" in str(error)
    if expected is errors.ResourceExhausted:
        assert error.retry_after == 0.25


def test_a_remote_exception_prints_like_a_local_one(client: spear_sdk.Client) -> None:
    @client.function
    def parse(text: str) -> int:
        return int(text)

    with pytest.raises(errors.RemoteFunctionError) as caught:
        parse("twelve")
    error = caught.value
    assert isinstance(error, errors.ExecutionError) and isinstance(error, errors.SpearError)
    assert error.remote_type == "ValueError"
    assert error.remote_message == "invalid literal for int() with base 10: 'twelve'"
    assert str(error) == "ValueError: invalid literal for int() with base 10: 'twelve'"
    assert error.error_code == "EXCEPTION" and error.status == "failed" and error.execution_id
    assert "in parse" in error.remote_traceback and "return int(text)" in error.remote_traceback
    printed = "".join(traceback.format_exception(error))
    assert (
        printed.index("return int(text)") < printed.index("direct cause") < printed.index('parse("twelve")')
    )


def test_execution_failures_have_their_own_types(client: spear_sdk.Client) -> None:
    @client.function
    def die() -> None:
        import os

        os._exit(3)

    @client.function(timeout=0.1)
    def stall() -> None:
        import time

        time.sleep(30)

    with pytest.raises(errors.WorkerCrashed) as crashed:
        die()
    assert crashed.value.error_code == "WORKER_CRASHED"
    with pytest.raises(errors.ExecutionTimeout) as timed_out:
        stall()
    assert timed_out.value.status == "timeout"
    execution = stall.options(timeout=30).submit()
    wait_until(lambda: execution.status == "running", what="the execution to run")
    execution.cancel()
    with pytest.raises(errors.ExecutionCancelled):
        execution.result()


def test_refusals_are_typed(client: spear_sdk.Client) -> None:
    with pytest.raises(errors.NotFound, match="no task named 'missing'"):
        client.invoke("missing", 1)
    with pytest.raises(errors.NotFound):
        client.execution("0" * 24)
    with pytest.raises(errors.InvalidArgument, match="argument 0 cannot be sent"):
        client.function(lambda x: x, name="takes-anything")(iter_of_lock())
    with pytest.raises(errors.InvalidArgument):
        client.function(lambda: 1, name="bad name with spaces/and/slashes" * 20)
    with pytest.raises(errors.InvalidArgument, match="limit"):
        client.executions(limit=-1)
    with pytest.raises(ValueError, match="choose one of pending"):
        client.executions(status="finished")


def iter_of_lock() -> object:
    import threading

    return threading.Lock()


def test_overload_is_resource_exhausted() -> None:
    small = spear_sdk.start_lab(max_concurrent=1, max_queued=1)
    try:

        @small.client.function
        def hold() -> None:
            import time

            time.sleep(30)

        running = hold.submit()
        wait_until(lambda: running.status == "running", what="the first call to run")
        queued = hold.submit()
        refused = hold.submit()  # returns at once: the refusal surfaces from the execution
        with pytest.raises(errors.ResourceExhausted) as caught:
            refused.result()
        assert isinstance(refused.exception(), errors.ResourceExhausted)
        assert "queue" in str(caught.value)
        assert caught.value.retry_after is None or caught.value.retry_after > 0
        assert queued.cancel() and running.cancel()
    finally:
        small.stop(0)


def test_pickled_code_is_refused_beyond_loopback_without_token() -> None:
    exposed = spear_sdk.start_lab(host="0.0.0.0")
    try:
        with pytest.raises(errors.PermissionDenied, match="pickle"):
            exposed.client.function(lambda: 1, name="refused")()
        assert exposed.client.register_module("math:floor")(2.5) == 2  # imported code is still allowed
    finally:
        exposed.stop(0)
