"""A spearlet with ``executor="dask"`` on the session's Dask cluster, driven over gRPC like any other."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import psutil
from dask_cluster import DaskCluster, require_distributed
from harness import Harness, HarnessFactory, params, poll, stop_harness, value
from processes import children
from test_batch import batch_request, results
from test_invoke import process_script

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb

COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
TIMEOUT = fpb.EXECUTION_STATUS_TIMEOUT
WORKERS = {"dask-w1", "dask-w2"}


async def dask_server(make_harness: HarnessFactory, cluster: DaskCluster) -> Harness:
    return await make_harness(executor="dask", dask_address=cluster.address)


async def test_health_and_stats_describe_the_cluster(
    make_harness: HarnessFactory, dask_cluster: DaskCluster
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health.status == "healthy"
    cluster = health.details.cluster
    assert (cluster.address, cluster.reachable) == (dask_cluster.address, True)
    assert (cluster.workers, cluster.threads, cluster.slots) == (2, 2, 2)
    assert set(cluster.worker_names) == WORKERS and cluster.memory_limit_bytes > 0
    info = health.details.system_info
    assert info["executor"] == "dask" and info["max_concurrent_executions"] == "2"  # the cluster's slots
    stats = await h.fn.GetStats(fpb.GetStatsRequest())
    assert stats.service_stats.cluster.workers == 2


async def test_calls_run_on_the_workers_and_name_them(
    make_harness: HarnessFactory, dask_cluster: DaskCluster
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    task_id = await h.register("workloads:square")
    response = await h.invoke(task_id, 7)
    assert response.result.status == COMPLETED and value(response.result) == 49
    pending = await h.invoke(task_id, 3, mode=fpb.EXECUTION_MODE_ASYNC)
    done = await h.wait_status(pending.execution_id)
    assert value(done.result) == 9
    listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id))
    assert len(listing.executions) == 2
    assert all(e.instance_id in WORKERS for e in listing.executions)


async def test_chunks_arrive_as_they_are_yielded(
    make_harness: HarnessFactory, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    task_id = await h.register("workloads:yield_then_wait")
    gate = tmp_path / "gate"
    request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(str(gate)))
    values = []
    async for message in h.fn.StreamFunction(request):
        if message.HasField("chunk_data"):
            values.append(codec.decode(message.chunk_data))
        if values == ["first"] and not gate.exists():
            gate.touch()  # the function waits for this: the first value came while it ran
    assert values == ["first", "second"]


async def test_a_timeout_stops_the_call_on_the_cluster(
    make_harness: HarnessFactory, dask_cluster: DaskCluster
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    task_id = await h.register("workloads:sleep")
    started = time.monotonic()
    response = await h.invoke(task_id, 30, context=fpb.ExecutionContext(timeout_ms=300))
    assert response.result.status == TIMEOUT
    assert time.monotonic() - started < 5
    again = await h.invoke(task_id, 0)  # the slot is free again
    assert again.result.status == COMPLETED


async def test_a_killed_worker_is_retried_or_fails(
    make_harness: HarnessFactory, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    task_id = await h.register("workloads:kill_host_once")
    retried = await h.invoke(task_id, str(tmp_path / "retried"), context=fpb.ExecutionContext(max_retries=1))
    assert retried.result.status == COMPLETED and value(retried.result) == "recovered"
    assert retried.result.metrics["attempts"] == "2"
    await asyncio.to_thread(dask_cluster.wait_workers, 2)
    failed = await h.invoke(task_id, str(tmp_path / "failed"))
    assert (failed.result.status, failed.result.error_code) == (FAILED, "WORKER_CRASHED")
    assert "died" in failed.result.error_message
    await asyncio.to_thread(dask_cluster.wait_workers, 2)


async def test_a_batch_is_pipelined_to_the_cluster(
    make_harness: HarnessFactory, dask_cluster: DaskCluster
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    task_id = await h.register("workloads:square")
    found = await results(h, batch_request(task_id, [(i,) for i in range(200)]))
    assert sorted(found) == list(range(200))
    assert all(value(found[i].result) == i * i for i in found)
    assert all(found[i].result.status == COMPLETED for i in found)
    listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id, limit=1000))
    assert {e.instance_id for e in listing.executions} <= WORKERS


async def test_process_artifacts_run_on_the_workers(
    make_harness: HarnessFactory, dask_cluster: DaskCluster, tmp_path: Path
) -> None:
    h = await dask_server(make_harness, dask_cluster)
    script = process_script(tmp_path)
    task_id = await h.register(
        sys.executable, artifact_type="process", metadata={"args": json.dumps([str(script)])}
    )
    response = await h.invoke(task_id, 1.0, 2.0, function_name="sum")
    assert value(response.result) == {"sum": 3.0, "kwargs": {}} and response.instance_id in WORKERS
    logs = await h.status(response.execution_id, include_logs=True)
    assert "working on sum" in logs.logs
    request = fpb.InvokeFunctionRequest(task_id=task_id, function_name="lines", parameters=params(2.0))
    messages = [m async for m in h.fn.StreamFunction(request)]
    assert [codec.decode(m.chunk_data) for m in messages[:-1]] == [{"i": 0}, {"i": 1}]
    failed = await h.invoke(task_id, function_name="fail")
    assert (failed.result.error_code, failed.result.error_message) == (
        "PROCESS_EXIT",
        "process exited with status 4",
    )
    found = await results(h, batch_request(task_id, [(float(i),) for i in range(20)]))
    assert sorted(value(found[i].result)["sum"] for i in found) == list(range(20))
    listing = await h.fn.ListExecutions(fpb.ListExecutionsRequest(task_id=task_id, limit=100))
    assert len(listing.executions) == 23 and {e.instance_id for e in listing.executions} <= WORKERS


async def test_without_an_address_the_server_starts_a_local_cluster(make_harness: HarnessFactory) -> None:
    require_distributed()
    before = set(children())
    h = await make_harness(executor="dask")
    health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    cluster = health.details.cluster
    assert cluster.address.startswith("tcp://127.0.0.1:") and cluster.workers == (os.cpu_count() or 1)
    assert cluster.slots == cluster.workers and health.details.system_info[
        "max_concurrent_executions"
    ] == str(cluster.slots)
    task_id = await h.register("workloads:square")
    response = await h.invoke(task_id, 5)
    assert value(response.result) == 25
    await stop_harness(h)
    await poll(lambda: _no_new_children(before), what="the local cluster's processes to end")


async def _no_new_children(before: set[int]) -> bool:
    """No process the cluster started is left (multiprocessing's resource tracker, which LocalCluster's
    spawning starts, lives as long as this interpreter by design)."""
    left = []
    for pid in set(children()) - before:
        with contextlib.suppress(psutil.Error):
            if "multiprocessing.resource_tracker" not in " ".join(psutil.Process(pid).cmdline()):
                left.append(pid)
    return not left
