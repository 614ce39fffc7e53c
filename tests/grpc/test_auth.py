"""Bearer tokens and TLS (SPEC §5): a token-protected server refuses every RPC without the token."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
import trustme
from conftest import HarnessFactory
from grpc_health.v1 import health_pb2, health_pb2_grpc

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc
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


async def test_tls_end_to_end(make_harness: HarnessFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    h = await make_harness(tls_cert=str(cert), tls_key=str(key), executor="thread")

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.server.port}", credentials) as channel:
        stub = fgrpc.FunctionServiceStub(channel)
        assert (await stub.GetHealth(fpb.GetHealthRequest())).status == "healthy"

    with pytest.raises(grpc.aio.AioRpcError) as plain:
        await h.fn.GetHealth(fpb.GetHealthRequest(), timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
