"""Several spearlets on one PostgreSQL database (docs/design.md, "PostgreSQL"): shared tasks, records,
figures and waits; a dead server's work ended by a survivor; the database restarting or crashing under
load without losing anything acknowledged. Against a real PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from harness import TERMINAL, Harness, HarnessFactory, expect_code, params, poll, value
from pg import PostgresServer, make_postgres
from served import Launcher

import spear_sdk
from spear_sdk.errors import ExecutionError
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

MIB = 1 << 20

ASYNC = fpb.EXECUTION_MODE_ASYNC
COMPLETED, FAILED, RUNNING = (
    fpb.EXECUTION_STATUS_COMPLETED,
    fpb.EXECUTION_STATUS_FAILED,
    fpb.EXECUTION_STATUS_RUNNING,
)


async def _listed(h: Harness, task_id: str = "") -> list[fpb.ExecutionInfo]:
    found: list[fpb.ExecutionInfo] = []
    request = fpb.ListExecutionsRequest(task_id=task_id, limit=100)
    while True:
        page = await h.fn.ListExecutions(request)
        found += page.executions
        if not page.has_more:
            return found
        request.start_after = page.next_start_after


async def _stats(h: Harness) -> fpb.GetStatsResponse:
    return await h.fn.GetStats(fpb.GetStatsRequest(include_execution_stats=True))


async def test_two_servers_share_tasks_records_figures_and_waits(
    make_harness: HarnessFactory, pg_url: str
) -> None:
    a = await make_harness(store=pg_url)
    b = await make_harness(store=pg_url)
    task_id = await a.register("workloads:add")

    # A task registered on A runs on B, and the other way round; each sees the other's records.
    on_b = await b.invoke(task_id, 2, 3)
    on_a = await a.invoke(task_id, 4, 5)
    assert value(on_b.result) == 5 and value(on_a.result) == 9
    for h in (a, b):
        listed = await _listed(h, task_id)
        assert [e.execution_id for e in listed] == [on_b.execution_id, on_a.execution_id]
        assert all(e.status == COMPLETED for e in listed)
        found = await h.status(on_b.execution_id, include_result=True)
        assert found.found and value(found.result) == 5

    # The figures are every server's, the same on both.
    for h in (a, b):
        stats = await _stats(h)
        assert stats.service_stats.total_executions == 2
        assert stats.execution_stats.completed_executions == 2
        assert list(stats.execution_stats.executions_by_function.values()) == [2]
        health = await h.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
        assert health.status == "healthy"
        assert health.details.total_executions == 2 and health.details.task_count == 1
        task = await h.fn.GetTask(fpb.GetTaskRequest(task_id=task_id))
        assert task.task.execution_count == 2

    # Work running on A is seen RUNNING from B, then ends; B's waiter wakes on A's terminal write.
    sleeper = await a.register("workloads:sleep")
    started = await a.invoke(sleeper, 1.0, mode=ASYNC)
    execution_id = started.execution_id
    await b.wait_status(execution_id, {RUNNING})
    health_b = await b.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert health_b.details.running_executions == 1 and health_b.details.active_tasks == 1
    waited_at = time.monotonic()
    record = await asyncio.wait_for(b.server.engine.until_ended(execution_id), 20)
    assert record.status == COMPLETED and time.monotonic() - waited_at < 10
    assert (await b.status(execution_id)).result.status == COMPLETED

    # A cancel through B stops the run on A.
    long_run = (await a.invoke(sleeper, 30.0, mode=ASYNC)).execution_id
    await b.wait_status(long_run, {RUNNING})
    cancelled = await b.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=long_run))
    assert cancelled.success and cancelled.final_status == fpb.EXECUTION_STATUS_CANCELLED, cancelled
    assert (await a.status(long_run)).result.status == fpb.EXECUTION_STATUS_CANCELLED


async def test_function_percentiles_and_estimates_are_every_servers(
    make_harness: HarnessFactory, pg_url: str
) -> None:
    """Each function's run-time percentiles and its run-time estimate are the same on both servers: those
    of every run, wherever it ran (not either server's own runs)."""
    a = await make_harness(store=pg_url)
    b = await make_harness(store=pg_url)
    sleeper = await a.register("workloads:sleep", name="shared-sleep")
    for h, seconds in ((a, 0.01), (a, 0.03), (b, 0.12), (b, 0.2), (b, 0.06)):
        await h.invoke(sleeper, seconds)
    failing = await b.register("workloads:fail", name="shared-fail")
    await b.invoke(failing, "no")
    runs = await _listed(a, sleeper)
    run_ms = [(r.completed_at.ToNanoseconds() - r.started_at.ToNanoseconds()) / 1e6 for r in runs]
    p50, p95, p99 = np.quantile(run_ms, [0.5, 0.95, 0.99])

    requests = {
        "all time": fpb.GetStatsRequest(include_execution_stats=True),
        "last hour": fpb.GetStatsRequest(include_execution_stats=True, time_range_seconds=3600),
        "functions only": fpb.GetStatsRequest(include_execution_stats=True, only_function_stats=True),
    }
    for what, request in requests.items():
        on_a, on_b = [(await h.fn.GetStats(request)).execution_stats for h in (a, b)]
        assert list(on_a.function_stats) == list(on_b.function_stats), what
        fail, sleep = sorted(on_a.function_stats, key=lambda f: f.function)
        assert (fail.function, fail.executions, fail.failed, fail.completed) == ("shared-fail", 1, 1, 0)
        assert (sleep.function, sleep.executions, sleep.completed) == ("shared-sleep", 5, 5), what
        assert sleep.p50_execution_time_ms == pytest.approx(p50, abs=0.01), what
        assert sleep.p95_execution_time_ms == pytest.approx(p95, abs=0.01), what
        assert sleep.p99_execution_time_ms == pytest.approx(p99, abs=0.01), what
        assert sleep.max_execution_time_ms == pytest.approx(max(run_ms), abs=0.01), what
        assert sleep.average_execution_time_ms == pytest.approx(np.mean(run_ms), abs=0.01), what
        for stats in (on_a, on_b):  # every completed run is the sleeper's
            overall = (stats.p50_execution_time_ms, stats.p95_execution_time_ms, stats.p99_execution_time_ms)
            assert overall == pytest.approx((p50, p95, p99), abs=0.01), what

    # Estimates: the mean of the function's newest runs on both servers, read from the store now and then.
    expected = round(np.mean([r.execution_time_ms for r in runs]))
    engines = (a.server.engine, b.server.engine)

    async def both_estimate_every_run() -> bool:
        return all(e.stats.estimate_ms("shared-sleep", "") == expected for e in engines)

    await poll(both_estimate_every_run, what=f"both servers to estimate {expected} ms")
    for h in (a, b):
        accepted = await h.invoke(sleeper, 0.5, mode=ASYNC)
        assert accepted.estimated_completion_ms == expected


async def test_a_task_changed_on_one_server_is_the_new_one_on_the_other(
    make_harness: HarnessFactory, pg_url: str
) -> None:
    a = await make_harness(store=pg_url)
    b = await make_harness(store=pg_url)
    task_id = await a.register("workloads:add", name="shared-fn")
    assert value((await b.invoke(task_id, 1, 1)).result) == 2  # B now holds the task in memory
    await a.register("workloads:square", name="shared-fn")  # version 2 on A

    async def b_runs_the_new_version() -> bool:
        return value((await b.invoke(task_id, 3)).result) == 9

    await poll(b_runs_the_new_version, what="B to run version 2 after A's notice")

    # Deleting on A a task that runs on B: refused unless forced, and then B's run is cancelled.
    sleeper = await a.register("workloads:sleep", name="shared-sleeper")
    running = (await b.invoke(sleeper, 30.0, mode=ASYNC)).execution_id
    await a.wait_status(running, {RUNNING})
    await expect_code(
        a.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=sleeper)), grpc.StatusCode.FAILED_PRECONDITION
    )
    await a.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=sleeper, force=True, cleanup_executions=True))
    assert not (await b.status(running)).found  # cancelled on B, then cleaned up
    await a.fn.DeleteTask(fpb.DeleteTaskRequest(task_id=task_id, force=True))

    async def b_forgot_it() -> bool:
        return not (await b.fn.GetTask(fpb.GetTaskRequest(task_id=task_id))).found

    await poll(b_forgot_it, what="B to forget the deleted task")
    await expect_code(b.invoke(task_id, 1), grpc.StatusCode.NOT_FOUND)


async def test_sigkilled_server_under_load_its_work_ends_on_a_survivor(
    make_harness: HarnessFactory, launcher: Launcher, pg_url: str
) -> None:
    """Every execution A acknowledged is in the store afterwards and has ended: the ones A finished, and
    the ones it left RUNNING or PENDING, marked INTERRUPTED by B once A's lease expired."""
    env = {"SPEARLET_LEASE_TTL_S": "1.5"}
    a = await launcher.start("--store", pg_url, "--max-concurrent", "2", env=env)
    b = await make_harness(store=pg_url, lease_ttl_s=1.5)
    quick = (await a.fn.RegisterTask(_register("quick", "workloads:add"))).task.task_id
    slow = (await a.fn.RegisterTask(_register("slow", "workloads:sleep"))).task.task_id
    acknowledged: list[str] = []
    stop = asyncio.Event()

    async def load(task_id: str, *args: object) -> None:
        while not stop.is_set():
            request = fpb.InvokeFunctionRequest(
                task_id=task_id, parameters=params(*args), execution_mode=ASYNC
            )
            try:
                response = await a.fn.InvokeFunction(request, timeout=5)
            except grpc.aio.AioRpcError:
                return  # A is gone
            acknowledged.append(response.execution_id)

    workers = [asyncio.create_task(load(quick, 1, 2)) for _ in range(3)]
    workers.append(asyncio.create_task(load(slow, 30.0)))

    async def enough() -> bool:
        return len(acknowledged) >= 40

    await poll(enough, timeout=30, what="40 acknowledged invocations on A")
    a.proc.kill()
    await a.wait_exit()
    stop.set()
    await asyncio.gather(*workers)

    async def all_ended() -> bool:
        statuses = [(await b.status(e)).result.status for e in acknowledged]
        return all(s in TERMINAL for s in statuses)

    await poll(all_ended, timeout=30, what="B to end A's unfinished executions")
    interrupted = 0
    for execution_id in acknowledged:
        found = await b.status(execution_id)
        assert found.found, f"acknowledged {execution_id} is missing"
        if found.result.status == FAILED:
            assert found.result.error_code == "INTERRUPTED", found.result
            interrupted += 1
    assert interrupted >= 1  # the slow ones at least were cut off
    stats = (await _stats(b)).execution_stats
    assert stats.running_executions == 0 and stats.pending_executions == 0


async def test_a_dead_servers_call_is_retried_on_a_survivor_where_max_retries_allows(
    make_harness: HarnessFactory, launcher: Launcher, pg_url: str
) -> None:
    env = {"SPEARLET_LEASE_TTL_S": "1.5"}
    a = await launcher.start("--store", pg_url, env=env)
    b = await make_harness(store=pg_url, lease_ttl_s=1.5)
    slow = (await a.fn.RegisterTask(_register("slow-retried", "workloads:sleep"))).task.task_id

    async def start(retries: int) -> str:
        request = fpb.InvokeFunctionRequest(
            task_id=slow,
            parameters=params(1.5, then_print="done"),
            execution_mode=ASYNC,
            context=fpb.ExecutionContext(max_retries=retries),
        )
        return (await a.fn.InvokeFunction(request)).execution_id

    retried, not_retried = await start(1), await start(0)
    await b.wait_status(retried, {RUNNING})
    await b.wait_status(not_retried, {RUNNING})
    a.proc.kill()
    await a.wait_exit()
    record = await asyncio.wait_for(b.server.engine.until_ended(retried), 30)
    assert record.status == COMPLETED and record.attempt == 2, record
    response = await b.status(retried, include_result=True, include_logs=True)
    assert value(response.result) == 1.5
    assert any("lost with its server; retrying" in line for line in response.logs), response.logs
    ended = await asyncio.wait_for(b.server.engine.until_ended(not_retried), 30)
    assert ended.status == FAILED and ended.error_code == "INTERRUPTED"


async def test_a_server_whose_lease_lapsed_cannot_overwrite_the_survivors_decision(
    make_harness: HarnessFactory, launcher: Launcher, pg_url: str
) -> None:
    """A stalls (SIGSTOP) past its lease while running a call; B ends that call INTERRUPTED. When A goes
    on, its function's late end is refused (and logged): the record keeps B's decision, and A's own
    caller is answered with it."""
    env = {"SPEARLET_LEASE_TTL_S": "1.5"}
    a = await launcher.start("--store", pg_url, env=env)
    b = await make_harness(store=pg_url, lease_ttl_s=1.5)
    slow = (await a.fn.RegisterTask(_register("stalled", "workloads:sleep"))).task.task_id
    request = fpb.InvokeFunctionRequest(task_id=slow, parameters=params(0.5))

    async def call() -> fpb.InvokeFunctionResponse:
        return await a.fn.InvokeFunction(request, timeout=60)

    caller = asyncio.create_task(call())  # SYNC, on A

    async def running_on_a() -> bool:
        listed = await _listed(b, slow)
        return len(listed) == 1 and listed[0].status == RUNNING

    await poll(running_on_a, timeout=20, what="the call to run on A")
    (running,) = await _listed(b, slow)
    a.proc.send_signal(signal.SIGSTOP)
    try:
        decided = await asyncio.wait_for(b.server.engine.until_ended(running.execution_id), 30)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    assert decided.status == FAILED and decided.error_code == "INTERRUPTED", decided

    answer = await asyncio.wait_for(caller, 30)  # A's worker finished; A tried to store its end
    assert answer.result.status == FAILED and answer.result.error_code == "INTERRUPTED", answer
    stored = await b.status(running.execution_id, include_result=True)
    assert stored.result.status == FAILED and stored.result.error_code == "INTERRUPTED", stored
    assert stored.result.error_message == decided.error_message
    assert "was not stored" in a.stderr.read_text()

    # A is alive again: its next calls run and are stored as usual.
    again = await a.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_id=slow, parameters=params(0.01)))
    assert again.result.status == COMPLETED, again


def _register(name: str, location: str) -> fpb.RegisterTaskRequest:
    return fpb.RegisterTaskRequest(
        task_name=name, artifact_spec=fpb.ArtifactSpec(artifact_type="python", location=location)
    )


@pytest.fixture
def own_postgres() -> object:
    """A cluster of this test's own, to restart and kill (fsync on: a crash must not lose commits)."""
    server = make_postgres(fsync=True)
    yield server
    server.destroy()


async def test_database_restart_under_load_servers_reconnect(
    make_harness: HarnessFactory, own_postgres: PostgresServer
) -> None:
    """While the database restarts calls fail with UNAVAILABLE and health says unhealthy; afterwards
    the server works again, and every call that succeeded is stored."""
    url = own_postgres.new_database()
    h = await make_harness(store=url)
    task_id = await h.register("workloads:add")
    acknowledged: dict[str, int] = {}
    failures: list[grpc.StatusCode] = []
    stop = asyncio.Event()

    async def load(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                response = await h.invoke(task_id, n, i)
            except grpc.aio.AioRpcError as exc:
                failures.append(exc.code())
                await asyncio.sleep(0.01)
                continue
            if response.result.status == COMPLETED:
                acknowledged[response.execution_id] = n + i

    workers = [asyncio.create_task(load(n * 1000)) for n in range(3)]

    async def some(count: int) -> bool:
        return len(acknowledged) >= count

    await poll(lambda: some(20), timeout=30, what="calls before the restart")
    await asyncio.to_thread(own_postgres.stop)
    health = await h.fn.GetHealth(fpb.GetHealthRequest())
    assert health.status == "unhealthy", health
    await expect_code(h.invoke(task_id, 1, 1), grpc.StatusCode.UNAVAILABLE)
    await asyncio.to_thread(own_postgres.start)
    before = len(acknowledged)
    await poll(lambda: some(before + 20), timeout=30, what="calls after the restart")

    async def healthy() -> bool:
        return (await h.fn.GetHealth(fpb.GetHealthRequest())).status == "healthy"

    await poll(healthy, timeout=15, what="health to come back")
    # pg_ctl restart under the same load: calls go on succeeding once it is back.
    await asyncio.to_thread(own_postgres.restart)
    before = len(acknowledged)
    await poll(lambda: some(before + 20), timeout=30, what="calls after pg_ctl restart")
    stop.set()
    await asyncio.gather(*workers)
    assert set(failures) <= {grpc.StatusCode.UNAVAILABLE}, failures
    for execution_id, expected in acknowledged.items():
        found = await h.status(execution_id, include_result=True)
        assert found.found and value(found.result) == expected


async def test_acknowledged_write_survives_a_killed_postmaster(
    make_harness: HarnessFactory, own_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = own_postgres.new_database()
    h = await make_harness(store=url)
    task_id = await h.register("workloads:add")
    done = await h.invoke(task_id, 20, 22)
    assert done.result.status == COMPLETED
    await asyncio.to_thread(own_postgres.kill)
    await asyncio.to_thread(own_postgres.start)  # crash recovery replays the WAL

    async def found() -> bool:
        try:
            return (await h.status(done.execution_id)).found
        except grpc.aio.AioRpcError:
            return False  # still reconnecting

    await poll(found, timeout=30, what="the record after the database's crash")
    response = await h.status(done.execution_id, include_result=True)
    assert value(response.result) == 42


def _object_root(h: Harness) -> Path:
    objects = h.server._objects
    assert objects is not None and objects.files is not None
    return objects.files.root


async def test_an_object_put_through_one_server_is_an_argument_through_another(
    make_harness: HarnessFactory, pg_url: str, tmp_path: Path
) -> None:
    a = await make_harness(store=pg_url)
    b = await make_harness(store=pg_url)
    assert _object_root(a) == _object_root(b)  # one machine: one directory
    array = np.arange(3 * MIB // 8, dtype=np.float64)
    async with (
        spear_sdk.AsyncClient(f"127.0.0.1:{a.server.port}") as on_a,
        spear_sdk.AsyncClient(f"127.0.0.1:{b.server.port}") as on_b,
    ):
        ref = await on_a.put(array)
        echo = on_b.function(lambda x: x, name="shared-echo")
        assert np.array_equal(await echo(ref), array)  # B's worker maps the file A's client wrote
        assert np.array_equal(await echo(array * 2), array * 2)  # an argument by reference through B
        other = await on_b.put(array + 1)
        total = on_a.function(lambda x: float(x.sum()), name="shared-total")
        assert await total(other) == float((array + 1).sum())

        # A server whose object directory is elsewhere (another machine) says what to do.
        far = await make_harness(store=pg_url, object_dir=str(tmp_path / "elsewhere"))
        error = await expect_code(
            far.obj.OpenObject(opb.OpenObjectRequest(key=ref.key)), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert "--object-dir" in (error.details() or "")
        async with spear_sdk.AsyncClient(f"127.0.0.1:{far.server.port}") as on_far:
            with pytest.raises(ExecutionError, match="--object-dir"):
                await on_far.function(lambda x: float(x.sum()), name="far-total")(ref)
        await ref.delete()
        await other.delete()
