"""R6: a bearer token (``--token`` or ``SPEARLET_TOKEN``) guards every RPC of every service and is
compared in constant time; TLS works end to end; a server bound beyond loopback without a token refuses
pickled code; a stopping server drains its work."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import signal
from pathlib import Path

import cloudpickle
import grpc
import pytest
import trustme
from harness import HarnessFactory, expect_code, params, poll, value
from served import Launcher, Served
from services import METHODS, call_raw

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc
from spear_sdk.wire import object_pb2 as opb

TOKEN = "s3cret-token"
GOOD = (("authorization", f"Bearer {TOKEN}"),)
COMPLETED = fpb.EXECUTION_STATUS_COMPLETED
REFUSED_HEADERS = {
    "none": (),
    "wrong token": (("authorization", "Bearer not-it-at-all"),),
    "same length": (("authorization", "Bearer s3cret-tokeN"),),
    "no scheme": (("authorization", TOKEN),),
    "other scheme": (("authorization", f"Basic {TOKEN}"),),
    "scheme only": (("authorization", "Bearer"),),
    "trailing space": (("authorization", f"Bearer {TOKEN} "),),
    "elsewhere": (("x-token", f"Bearer {TOKEN}"),),
}


# -- tokens -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", REFUSED_HEADERS)
async def test_every_rpc_of_every_service_needs_the_token(make_harness: HarnessFactory, header: str) -> None:
    h = await make_harness(token=TOKEN, executor="thread")
    metadata = REFUSED_HEADERS[header]
    for name, method in METHODS.items():
        code = await call_raw(h.channel, method, b"", metadata)
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{name} with {header}: {code}"

    # Requests that would change something change nothing when refused.
    artifact = fpb.ArtifactSpec(artifact_type="python", location="workloads:square")
    for call in (
        h.obj.PutObject(opb.PutObjectRequest(key="k", value=b"v"), metadata=metadata),
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="t", artifact_spec=artifact), metadata=metadata),
        h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_name="t", artifact_spec=artifact, parameters=params(3)),
            metadata=metadata,
        ),
    ):
        error = await expect_code(call, grpc.StatusCode.UNAUTHENTICATED)
        assert "Bearer" in (error.details() or "")
    assert not (await h.fn.ListTasks(fpb.ListTasksRequest(), metadata=GOOD)).tasks
    assert not (await h.obj.ListObjects(opb.ListObjectsRequest(), metadata=GOOD)).objects
    stats = await h.fn.GetStats(fpb.GetStatsRequest(), metadata=GOOD)
    assert stats.service_stats.total_executions == 0


async def test_the_token_is_compared_in_constant_time(
    make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return original(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    h = await make_harness(token=TOKEN, executor="thread")
    await expect_code(
        h.fn.GetHealth(fpb.GetHealthRequest(), metadata=REFUSED_HEADERS["same length"]),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert (await h.fn.GetHealth(fpb.GetHealthRequest(), metadata=GOOD)).status == "healthy"
    expected = f"Bearer {TOKEN}".encode()
    assert compared == [(b"Bearer s3cret-tokeN", expected), (expected, expected)]


async def test_the_right_token_is_served_and_allows_pickle_beyond_loopback(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness(token=TOKEN, host="0.0.0.0", executor="thread")
    health = await h.fn.GetHealth(fpb.GetHealthRequest(), metadata=GOOD)
    assert health.status == "healthy"
    await h.obj.PutObject(opb.PutObjectRequest(key="k", value=b"v"), metadata=GOOD)
    registered = await h.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="p", artifact_spec=fpb.ArtifactSpec(artifact_type="pickle", location="object://k")
        ),
        metadata=GOOD,
    )
    assert registered.created


# -- TLS ----------------------------------------------------------------------------------------------


def certificate(tmp_path: Path) -> tuple[trustme.CA, Path, Path]:
    """A self-signed CA and a certificate it issued for the loopback addresses: (ca, cert, key)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    issued.cert_chain_pems[0].write_to_path(str(cert))
    return ca, cert, key


async def test_tls_end_to_end(make_harness: HarnessFactory, tmp_path: Path) -> None:
    ca, cert, key = certificate(tmp_path)
    h = await make_harness(tls_cert=str(cert), tls_key=str(key), executor="thread")

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{h.server.port}", credentials) as channel:
        stub = fgrpc.FunctionServiceStub(channel)
        assert (await stub.GetHealth(fpb.GetHealthRequest())).status == "healthy"

    with pytest.raises(grpc.aio.AioRpcError) as plain:
        await h.fn.GetHealth(fpb.GetHealthRequest(), timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("source", ["--token", "SPEARLET_TOKEN", "--token over SPEARLET_TOKEN"])
async def test_spearlet_serve_with_a_token_over_tls(launcher: Launcher, tmp_path: Path, source: str) -> None:
    ca, cert, key = certificate(tmp_path)
    args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    env = {}
    if source.startswith("--token"):
        args += ["--token", TOKEN]
    if source.endswith("SPEARLET_TOKEN"):
        env["SPEARLET_TOKEN"] = TOKEN if source == "SPEARLET_TOKEN" else "the-env-loses"
    served = await launcher.start(*args, env=env)

    credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
    async with grpc.aio.secure_channel(served.address, credentials) as channel:
        stub = fgrpc.FunctionServiceStub(channel)
        response = await stub.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_name="square",
                artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:square"),
                parameters=params(7),
            ),
            metadata=GOOD,
            timeout=30,
        )
        assert (response.result.status, value(response.result)) == (COMPLETED, 49)
        for refused in (REFUSED_HEADERS["none"], (("authorization", "Bearer the-env-loses"),)):
            await expect_code(
                stub.GetHealth(fpb.GetHealthRequest(), metadata=refused), grpc.StatusCode.UNAUTHENTICATED
            )
    with pytest.raises(grpc.aio.AioRpcError) as plain:
        await served.fn.GetHealth(fpb.GetHealthRequest(), metadata=GOOD, timeout=5)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.output()


# -- pickled code beyond loopback ----------------------------------------------------------------------


async def test_pickled_code_is_refused_beyond_loopback_without_a_token(make_harness: HarnessFactory) -> None:
    h = await make_harness(host="0.0.0.0")
    payload = cloudpickle.dumps(lambda: 1)
    await h.obj.PutObject(opb.PutObjectRequest(key="f", value=payload))
    pickled = fpb.ArtifactSpec(
        artifact_type="pickle",
        location="object://f",
        checksum="sha256:" + hashlib.sha256(payload).hexdigest(),
    )
    for call in (
        h.fn.RegisterTask(fpb.RegisterTaskRequest(task_name="p", artifact_spec=pickled)),
        h.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_name="p", artifact_spec=pickled)),
        _first_message(h.fn.StreamFunction(fpb.InvokeFunctionRequest(task_name="p", artifact_spec=pickled))),
    ):
        error = await expect_code(call, grpc.StatusCode.PERMISSION_DENIED)
        assert "beyond loopback without a token" in (error.details() or "")
    identity = await h.register("workloads:identity")
    await expect_code(h.invoke(identity, {1, 2}), grpc.StatusCode.PERMISSION_DENIED)  # a pickled value
    # Plain values still run, and nothing refused was stored.
    assert value((await h.invoke(identity, "plain")).result) == "plain"
    tasks = await h.fn.ListTasks(fpb.ListTasksRequest())
    assert [t.task_id for t in tasks.tasks] == [identity]
    assert (await h.fn.GetStats(fpb.GetStatsRequest())).service_stats.total_executions == 1


async def test_a_stored_pickle_task_is_refused_once_served_beyond_loopback(launcher: Launcher) -> None:
    loopback = await launcher.start()
    payload = cloudpickle.dumps(lambda x: x + 1)
    await loopback.obj.PutObject(opb.PutObjectRequest(key="inc", value=payload))
    registered = await loopback.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="inc", artifact_spec=fpb.ArtifactSpec(artifact_type="pickle", location="object://inc")
        )
    )
    task_id = registered.task.task_id
    assert value((await _invoke(loopback, task_id, 1)).result) == 2
    await _stop_gracefully(launcher, loopback)

    exposed = await launcher.start("--host", "0.0.0.0")
    await expect_code(_invoke(exposed, task_id, 1), grpc.StatusCode.PERMISSION_DENIED)
    await _stop_gracefully(launcher, exposed)

    guarded = await launcher.start("--host", "0.0.0.0", "--token", TOKEN)
    assert value((await _invoke(guarded, task_id, 2, metadata=GOOD)).result) == 3


# -- shutdown -----------------------------------------------------------------------------------------


async def test_sigterm_drains_queued_work_before_exiting(launcher: Launcher) -> None:
    served = await launcher.start("--max-concurrent", "1", "--shutdown-grace-s", "20")
    registered = await served.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="sleep",
            artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:sleep"),
        )
    )
    task_id = registered.task.task_id
    queued = [
        (await _invoke(served, task_id, 0.3, mode=fpb.EXECUTION_MODE_ASYNC)).execution_id for _ in range(3)
    ]
    waiting = asyncio.ensure_future(_invoke(served, task_id, 0.1))

    async def one_running_and_the_rest_queued() -> bool:
        stats = await served.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))
        return (stats.execution_stats.running_executions, stats.execution_stats.pending_executions) == (1, 3)

    await poll(one_running_and_the_rest_queued, what="one running and three queued")
    served.proc.send_signal(signal.SIGTERM)
    finished = await asyncio.wait_for(waiting, 30)
    assert finished.result.status == COMPLETED
    assert await served.wait_exit(30) == 0, served.output()

    again = await launcher.start()
    for execution_id in queued:
        status = await again.fn.GetExecutionStatus(fpb.GetExecutionStatusRequest(execution_id=execution_id))
        assert status.result.status == COMPLETED, status


async def _first_message(
    call: grpc.aio.UnaryStreamCall[fpb.InvokeFunctionRequest, fpb.StreamExecutionResult],
) -> None:
    await call.read()


async def _invoke(
    served: Served,
    task_id: str,
    *args: object,
    mode: int = fpb.EXECUTION_MODE_SYNC,
    metadata: tuple[tuple[str, str], ...] = (),
) -> fpb.InvokeFunctionResponse:
    return await served.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(*args), execution_mode=mode),  # type: ignore[arg-type]
        metadata=metadata,
        timeout=30,
    )


async def _stop_gracefully(launcher: Launcher, served: Served) -> None:
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit() == 0, served.output()
    await launcher.stop(served)
