"""R1: SIGKILL ``spearlet serve`` over SQLite at random points of a load, restart it, and check every time
that the database passes ``PRAGMA integrity_check``, that everything acknowledged to a client is there,
that the work cut off reads INTERRUPTED, and that the statistics agree with the records (R1).

The kill points are random: after a random number of acknowledged operations, with eight clients mixing
sync, async and streamed calls, failures, objects and task registrations. The seed is printed with the
figures; ``SPEAR_SEED`` replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from harness import pages, params, poll, value
from processes import children, pid_dead
from served import Launcher, Served
from soak import SOAK, Record, scale
from spearlet.store.records import EXECUTION, StoredExecution

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

pytestmark = pytest.mark.timeout(4 * 3600 if SOAK else 120)

KILLS = scale(20, 1000)
CLIENTS = 8
#: A soak run starts a new database now and then, so that restarts stay quick.
KILLS_PER_DATABASE = 50
SERVE_ARGS = ("--max-concurrent", "2", "--max-queued", "1000")
PENDING, RUNNING = fpb.EXECUTION_STATUS_PENDING, fpb.EXECUTION_STATUS_RUNNING
COMPLETED, FAILED = fpb.EXECUTION_STATUS_COMPLETED, fpb.EXECUTION_STATUS_FAILED
ACTIVE = {PENDING, RUNNING}
ACCEPTED = 0  # acknowledged as accepted, outcome not yet known to the client
#: What a client may see once the server is gone.
GONE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN}


@dataclass
class Ledger:
    """What the server acknowledged to a client, and so must still hold after any crash."""

    executions: dict[str, int] = field(default_factory=dict)  # id -> status acknowledged
    results: dict[str, object] = field(default_factory=dict)  # this cycle's sync results
    tasks: dict[str, str] = field(default_factory=dict)  # id -> name
    objects: dict[str, bytes] = field(default_factory=dict)
    acks: int = 0
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    target: int = 0

    def ack(self) -> None:
        self.acks += 1
        if self.acks >= self.target:
            self.enough.set()

    def new_cycle(self, target: int) -> None:
        self.results.clear()
        self.acks = 0
        self.target = target
        self.enough.clear()


@dataclass
class Load:
    served: Served
    ledger: Ledger
    rng: random.Random
    tasks: dict[str, str]  # function -> task id
    serials: Iterator[int]  # names of objects and tasks, unique across restarts
    killed: bool = False
    unexpected: list[BaseException] = field(default_factory=list)

    async def client(self) -> None:
        operations = (
            self.sync_call,
            self.failing_call,
            self.async_call,
            self.stream,
            self.put,
            self.register,
        )
        weights = (35, 10, 25, 10, 10, 10)
        while True:
            try:
                await self.rng.choices(operations, weights)[0]()
            except grpc.aio.AioRpcError as exc:
                if not (self.killed and exc.code() in GONE):
                    self.unexpected.append(exc)
                return

    def _next(self) -> int:
        return next(self.serials)

    async def sync_call(self) -> None:
        n = self._next()
        response = await self.served.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(task_id=self.tasks["square"], parameters=params(n))
        )
        assert response.result.status == COMPLETED, response
        self.ledger.executions[response.execution_id] = COMPLETED
        self.ledger.results[response.execution_id] = n * n
        self.ledger.ack()

    async def failing_call(self) -> None:
        response = await self.served.fn.InvokeFunction(fpb.InvokeFunctionRequest(task_id=self.tasks["fail"]))
        assert (response.result.status, response.result.error_code) == (FAILED, "EXCEPTION"), response
        self.ledger.executions[response.execution_id] = FAILED
        self.ledger.ack()

    async def async_call(self) -> None:
        response = await self.served.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_id=self.tasks["sleep"],
                parameters=params(self.rng.uniform(0, 0.05)),
                execution_mode=fpb.EXECUTION_MODE_ASYNC,
            )
        )
        self.ledger.executions[response.execution_id] = ACCEPTED
        self.ledger.ack()

    async def stream(self) -> None:
        request = fpb.InvokeFunctionRequest(task_id=self.tasks["count"], parameters=params(3))
        async for message in self.served.fn.StreamFunction(request):
            if message.is_final:
                assert message.status == COMPLETED, message
                self.ledger.executions[message.execution_id] = COMPLETED
                self.ledger.ack()

    async def put(self) -> None:
        key = f"obj-{self._next()}"
        data = self.rng.randbytes(self.rng.randint(0, 4096))
        await self.served.obj.PutObject(opb.PutObjectRequest(key=key, value=data, metadata={"n": key}))
        self.ledger.objects[key] = data
        self.ledger.ack()

    async def register(self) -> None:
        name = f"task-{self._next()}"
        response = await self.served.fn.RegisterTask(
            fpb.RegisterTaskRequest(
                task_name=name,
                artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:add"),
            )
        )
        self.ledger.tasks[response.task.task_id] = name
        self.ledger.ack()


async def test_sigkill_under_load_loses_nothing_acknowledged(
    launcher: Launcher, tmp_path: Path, figures: Record
) -> None:
    seed = int(os.environ.get("SPEAR_SEED") or time.time_ns() % 2**32)
    rng = random.Random(seed)
    figures("seed (SPEAR_SEED)", seed)
    serials = itertools.count()
    interrupted = 0
    began = time.monotonic()
    served: Served | None = None
    for kill in range(KILLS):
        if kill % KILLS_PER_DATABASE == 0:
            if served is not None:
                await launcher.stop(served)
            db = f"crash-{kill // KILLS_PER_DATABASE}.db"
            served = await launcher.start(*SERVE_ARGS, db=db)
            ledger = Ledger()
            functions = await register_functions(served, ledger)
        assert served is not None
        load = Load(served, ledger, rng, functions, serials)
        ledger.new_cycle(rng.randint(1, 40))
        clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
        await asyncio.wait_for(ledger.enough.wait(), 30)
        workers = children(served.proc.pid)
        load.killed = True
        served.proc.kill()
        assert await served.wait_exit() == -signal.SIGKILL
        await asyncio.gather(*clients)
        assert not load.unexpected, load.unexpected
        await launcher.stop(served)
        # The workers die with the server (PR_SET_PDEATHSIG): nothing is orphaned.
        await poll(functools.partial(_all_dead, workers), what="the killed server's workers to die")
        integrity, in_flight = inspect(tmp_path / db)
        assert integrity == "ok", f"seed {seed}, kill {kill}: {integrity}"
        served = await launcher.start(*SERVE_ARGS, db=db)
        await verify(served, ledger, in_flight, f"seed {seed}, kill {kill}")
        interrupted += len(in_flight)
    figures("kills, each followed by a restart and the checks", KILLS)
    figures("executions cut off and marked INTERRUPTED", interrupted)
    figures("seconds", round(time.monotonic() - began, 1))


async def register_functions(served: Served, ledger: Ledger) -> dict[str, str]:
    functions = {}
    for name in ("square", "fail", "sleep", "count"):
        response = await served.fn.RegisterTask(
            fpb.RegisterTaskRequest(
                task_name=name,
                artifact_spec=fpb.ArtifactSpec(artifact_type="python", location=f"workloads:{name}"),
            )
        )
        functions[name] = response.task.task_id
        ledger.tasks[response.task.task_id] = name
    return functions


def inspect(db: Path) -> tuple[str, set[str]]:
    """The killed server's database as it was left: its integrity check, and the executions in flight."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        integrity = "\n".join(row[0] for row in conn.execute("PRAGMA integrity_check"))
        rows = conn.execute(
            "SELECT value FROM kv WHERE key > ? AND key < ?", (EXECUTION, EXECUTION[:-1] + ";")
        ).fetchall()
    records = [StoredExecution.decode(row[0]) for row in rows]
    return integrity, {r.execution_id for r in records if r.status in ACTIVE}


async def verify(served: Served, ledger: Ledger, in_flight: set[str], where: str) -> None:
    """The restarted server holds everything acknowledged, and marked the work cut off INTERRUPTED."""
    records = {
        info.execution_id: info
        for page in await pages(served.fn.ListExecutions, fpb.ListExecutionsRequest(limit=1000))
        for info in page.executions
    }
    for execution_id, status in ledger.executions.items():
        assert execution_id in records, f"{where}: acknowledged execution {execution_id} is lost"
        info = records[execution_id]
        if status == ACCEPTED:
            assert info.status not in ACTIVE, f"{where}: {info}"
        else:
            assert info.status == status, f"{where}: acknowledged {status}, found {info}"
    for execution_id in in_flight:
        info = records[execution_id]
        assert (info.status, info.error_code) == (FAILED, "INTERRUPTED"), f"{where}: {info}"
    assert not [i for i in records.values() if i.status in ACTIVE], f"{where}: work left active"
    for execution_id, expected in ledger.results.items():
        status = await served.fn.GetExecutionStatus(
            fpb.GetExecutionStatusRequest(execution_id=execution_id, include_result=True)
        )
        assert value(status.result) == expected, f"{where}: {execution_id}"

    tasks = [
        t for page in await pages(served.fn.ListTasks, fpb.ListTasksRequest(limit=1000)) for t in page.tasks
    ]
    assert ledger.tasks.items() <= {(t.task_id, t.task_name) for t in tasks}, where
    objects = [
        o
        for page in await pages(
            served.obj.ListObjects, opb.ListObjectsRequest(limit=1000, include_values=True)
        )
        for o in page.objects
    ]
    assert ledger.objects.items() <= {(o.key, o.value) for o in objects}, where

    # The statistics (rebuilt from the store at start) agree with the records.
    stats = await served.fn.GetStats(
        fpb.GetStatsRequest(include_execution_stats=True, include_task_stats=True)
    )
    by_status = Counter(i.status for i in records.values())
    figures = stats.execution_stats
    assert stats.service_stats.total_executions == len(records), where
    assert stats.service_stats.total_tasks == len(tasks), where
    assert (figures.completed_executions, figures.failed_executions) == (
        by_status[COMPLETED],
        by_status[FAILED],
    )
    assert (figures.running_executions, figures.pending_executions) == (0, 0), where
    by_task = Counter(i.task_id for i in records.values())
    assert {t.task_id: t.execution_count for t in tasks if t.execution_count} == dict(by_task), where
    health = await served.fn.GetHealth(fpb.GetHealthRequest(include_details=True))
    assert (health.details.total_executions, health.details.task_count) == (len(records), len(tasks)), where
    assert health.details.object_count == len(objects), where


async def _all_dead(pids: dict[int, str]) -> bool:
    return all(pid_dead(pid) for pid in pids)
