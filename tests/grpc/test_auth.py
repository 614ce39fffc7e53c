"""A token-protected server refuses every RPC without ``authorization: Bearer <token>`` (SPEC §5)."""

from __future__ import annotations

import grpc
import pytest
from conftest import HarnessFactory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

TOKEN = "s3cret-token"


async def test_every_rpc_needs_the_token(make_harness: HarnessFactory) -> None:
    h = await make_harness(token=TOKEN, executor="thread")
    calls = [
        h.fn.InvokeFunction(fpb.InvokeFunctionRequest()),
        h.fn.GetExecutionStatus(fpb.GetExecutionStatusRequest(execution_id="x")),
        h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id="x")),
        h.fn.ListTasks(fpb.ListTasksRequest()),
        h.fn.GetTask(fpb.GetTaskRequest(task_id="x")),
        h.fn.DeleteTask(fpb.DeleteTaskRequest(task_id="x")),
        h.fn.ListExecutions(fpb.ListExecutionsRequest()),
        h.fn.GetHealth(fpb.GetHealthRequest()),
        h.fn.GetStats(fpb.GetStatsRequest()),
        h.fn.RegisterTask(fpb.RegisterTaskRequest()),
        h.obj.PutObject(opb.PutObjectRequest(key="k", value=b"v")),
        h.obj.GetObject(opb.GetObjectRequest(key="k")),
        h.obj.ListObjects(opb.ListObjectsRequest()),
        h.obj.DeleteObject(opb.DeleteObjectRequest(key="k")),
        health_pb2_grpc.HealthStub(h.channel).Check(health_pb2.HealthCheckRequest()),
    ]
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    stream = h.fn.StreamFunction(fpb.InvokeFunctionRequest())
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        await stream.read()
    assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED

    wrong = (("authorization", "Bearer not-it"),)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await h.fn.GetHealth(fpb.GetHealthRequest(), metadata=wrong)
    assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_right_token_is_served_and_allows_pickle_beyond_loopback(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(token=TOKEN, host="0.0.0.0", executor="thread")
    good = (("authorization", f"Bearer {TOKEN}"),)
    health = await h.fn.GetHealth(fpb.GetHealthRequest(), metadata=good)
    assert health.status == "healthy"
    await h.obj.PutObject(opb.PutObjectRequest(key="k", value=b"v"), metadata=good)
    registered = await h.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="p", artifact_spec=fpb.ArtifactSpec(artifact_type="pickle", location="object://k")
        ),
        metadata=good,
    )
    assert registered.created
