"""R5: a storm of cancels and timeouts mixed with normal calls. Every cancel and timeout stops its work (the
process running it has ended, by the server's kill, long before it could end by itself); afterwards no
process, asyncio task or thread is left over. How fast a stop is (within 100 ms) is a figure of the
benchmark (``python -m bench --only R5``), measured on a machine nothing else loads; this test runs beside
whatever else the machine does, so it holds a line that only a stop that did not work can cross.

A stop is timed from the moment it was asked for (the cancel sent, the timeout or the caller's deadline
due) to the moment the process ended, as a pidfd reports it to a thread of the test's own: neither the
answer's way back nor a busy event loop on the client's side is counted.

Python functions run in the warm pool (a cancel kills and replaces the worker, which costs a process
start); most of the storm uses ``process`` artifacts (``sleep 30``), which cost a fork and an exec, so
that a thousand operations fit in a CI run.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import pytest
from harness import TERMINAL, Harness, HarnessFactory, pages, params, poll, value
from processes import ExitClock, children, pid_gone, worker_pid, zombies
from soak import SOAK, Record, percentile, scale

from spear_sdk.wire import function_pb2 as fpb

pytestmark = pytest.mark.timeout(3600 if SOAK else 120)

ASYNC = fpb.EXECUTION_MODE_ASYNC
RUNNING, COMPLETED = fpb.EXECUTION_STATUS_RUNNING, fpb.EXECUTION_STATUS_COMPLETED
CANCELLED, TIMEOUT = fpb.EXECUTION_STATUS_CANCELLED, fpb.EXECUTION_STATUS_TIMEOUT
#: Every stop ends its process within this. On an idle machine a stop takes a few ms (p99 well under the
#: 100 ms the benchmark holds it to); on two cores loaded by other work as well (CPU burners on both cores
#: beside another test suite, load average 12) the server's event loop falls behind and the slowest of
#: 650 stops took 1.0 s. What this line catches cannot come from load: a kill that missed leaves the
#: ``sleep 30`` running for 30 s, a spinning Python call runs until its worker is killed, and a reap that
#: waits out its timeout takes 5 s.
EVERY_STOP_WITHIN_MS = 3000
#: Operations in flight at once.
CONCURRENCY = 8
#: How the storm is made up (CI counts; a soak run does ten times as many).
MIX = {
    "normal call": 350,
    "cancel a running process": 200,
    "time out a process": 200,
    "cancel at once": 100,
    "client deadline": 90,
    "cancel a running python call": 30,
    "time out a python call": 30,
}
COUNTS = {kind: scale(count, 10 * count) for kind, count in MIX.items()}


@dataclass
class Tasks:
    square: str
    sleep: str
    spin: str
    process_sleep: str


@dataclass
class Storm:
    h: Harness
    tasks: Tasks
    rng: random.Random
    clock: ExitClock
    #: Milliseconds from asking for a stop (or its being due) to the process having ended, by kind.
    stops: dict[str, list[float]] = field(default_factory=dict)
    #: Milliseconds a CancelExecution call took, answer included.
    round_trips: list[float] = field(default_factory=list)
    #: Executions whose work must be gone.
    stopped: list[str] = field(default_factory=list)
    #: Calls whose caller gave up before the server took them (checked again at the end).
    not_admitted: list[str] = field(default_factory=list)

    def record(self, kind: str, ms: float, execution_id: str) -> None:
        self.stops.setdefault(kind, []).append(ms)
        self.stopped.append(execution_id)

    async def running_pid(self, execution_id: str, call: asyncio.Future[object] | None = None) -> int | None:
        """Once the execution runs in a process, that process's pid, watched by the clock; None if the
        execution (or ``call``, the request that makes it) ended before it got that far."""
        live = self.h.server.engine.live

        async def running_or_over() -> bool:
            entry = live.get(execution_id)
            if entry is not None:
                return entry.record.status == RUNNING and bool(entry.record.instance_id)
            return call is not None and call.done()

        await poll(running_or_over, timeout=20, what=f"{execution_id} to start")
        entry = live.get(execution_id)
        if entry is None:
            return None
        pid = worker_pid(entry.record.instance_id)
        try:
            self.clock.watch(pid)
        except ProcessLookupError:  # over, and reaped, already
            return None
        return pid

    async def ended(self, pid: int) -> float:
        async def noted() -> bool:
            return self.clock.ended_at(pid) is not None

        await poll(noted, what=f"the end of process {pid}")
        ended = self.clock.ended_at(pid)
        assert ended is not None
        return ended

    async def cancel(self, execution_id: str) -> fpb.CancelExecutionResponse:
        began = time.monotonic()
        response = await self.h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=execution_id))
        self.round_trips.append((time.monotonic() - began) * 1000)
        assert (response.success, response.final_status) == (True, CANCELLED), response
        return response

    async def submit(self, task_id: str, *args: object) -> str:
        return (await self.h.invoke(task_id, *args, mode=ASYNC)).execution_id


async def normal_call(storm: Storm, n: int) -> None:
    response = await storm.h.invoke(storm.tasks.square, n)
    assert (response.result.status, value(response.result)) == (COMPLETED, n * n)


async def cancel_running(storm: Storm, task_id: str) -> None:
    execution_id = await storm.submit(task_id, 30.0)
    pid = await storm.running_pid(execution_id)
    assert pid is not None, "a 30 s sleep cannot end by itself"
    asked = time.time()
    await storm.cancel(execution_id)
    assert pid_gone(pid), f"process {pid} still there when the cancel returned"
    storm.record("cancel", (await storm.ended(pid) - asked) * 1000, execution_id)


async def cancel_running_process(storm: Storm, n: int) -> None:
    await cancel_running(storm, storm.tasks.process_sleep)


async def cancel_running_python(storm: Storm, n: int) -> None:
    await cancel_running(storm, storm.tasks.sleep)


async def cancel_at_once(storm: Storm, n: int) -> None:
    """Cancelled whether still queued or just started (its process, if any, is checked at the end)."""
    execution_id = await storm.submit(storm.tasks.sleep, 30.0)
    await storm.cancel(execution_id)
    storm.stopped.append(execution_id)


async def time_out(storm: Storm, n: int, task_id: str) -> None:
    timeout_ms = storm.rng.randint(60, 120)
    execution_id = f"timeout-{n}"
    call = asyncio.ensure_future(
        storm.h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_id=task_id,
                execution_id=execution_id,
                context=fpb.ExecutionContext(timeout_ms=timeout_ms),
            )
        )
    )
    pid = await storm.running_pid(execution_id, call)
    response = await call
    assert (response.result.status, response.result.error_code) == (TIMEOUT, "TIMEOUT"), response
    if pid is None:  # it timed out waiting for a replacement worker: no process ran it
        storm.stopped.append(execution_id)
        return
    assert pid_gone(pid), f"process {pid} still there after its timeout"
    due = response.result.started_at.ToNanoseconds() / 1e9 + timeout_ms / 1000
    storm.record("timeout", (await storm.ended(pid) - due) * 1000, execution_id)


async def time_out_process(storm: Storm, n: int) -> None:
    await time_out(storm, n, storm.tasks.process_sleep)


async def time_out_python(storm: Storm, n: int) -> None:
    await time_out(storm, n, storm.tasks.spin)


async def client_deadline(storm: Storm, n: int) -> None:
    """The caller gives up: the server cancels the execution it was waiting for."""
    execution_id = f"deadline-{n}"
    deadline_s = storm.rng.uniform(0.06, 0.12)
    due = time.time() + deadline_s
    call = asyncio.ensure_future(
        storm.h.fn.InvokeFunction(
            fpb.InvokeFunctionRequest(
                task_id=storm.tasks.process_sleep, execution_id=execution_id, parameters=params(30.0)
            ),
            timeout=deadline_s,
        )
    )
    pid = await storm.running_pid(execution_id, call)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call
    assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    final = await _final_unless_never_admitted(storm.h, execution_id)
    if final is None:  # the caller gave up before the server took the call: there is nothing to stop
        storm.not_admitted.append(execution_id)
        return
    assert final.result.status == CANCELLED, final
    if pid is None:
        storm.stopped.append(execution_id)
        return
    storm.record("client deadline", (await storm.ended(pid) - due) * 1000, execution_id)


async def _final_unless_never_admitted(
    h: Harness, execution_id: str
) -> fpb.GetExecutionStatusResponse | None:
    absent_until = time.monotonic() + 1
    while True:
        status = await h.status(execution_id)
        if status.found and status.result.status in TERMINAL:
            return status
        if not status.found and time.monotonic() > absent_until:
            return None
        await asyncio.sleep(0.01)


OPERATIONS: dict[str, Callable[[Storm, int], Awaitable[None]]] = {
    "normal call": normal_call,
    "cancel a running process": cancel_running_process,
    "time out a process": time_out_process,
    "cancel at once": cancel_at_once,
    "client deadline": client_deadline,
    "cancel a running python call": cancel_running_python,
    "time out a python call": time_out_python,
}


async def test_a_storm_of_cancels_and_timeouts_stops_work_fast_and_leaks_nothing(
    make_harness: HarnessFactory, figures: Record
) -> None:
    seed = int(os.environ.get("SPEAR_SEED") or time.time_ns() % 2**32)
    figures("seed (SPEAR_SEED)", seed)
    h = await make_harness(max_concurrent=4)
    sleep_binary = shutil.which("sleep")
    assert sleep_binary, "the storm needs a 'sleep' executable"
    storm = Storm(
        h,
        Tasks(
            square=await h.register("workloads:square"),
            sleep=await h.register("workloads:sleep"),
            spin=await h.register("workloads:spin"),
            process_sleep=await h.register(
                sleep_binary, artifact_type="process", metadata={"args": json.dumps(["30"])}
            ),
        ),
        random.Random(seed),
        ExitClock(),
    )
    # One of each first, so that whatever grpc and asyncio create lazily is there before the baseline.
    for n, operation in enumerate(OPERATIONS.values()):
        await operation(storm, -1 - n)
    await poll(lambda: _pool_full(h), what="the pool to refill")
    storm.clock.join()
    baseline_tasks = len(asyncio.all_tasks())
    baseline_threads = threading.active_count()
    baseline_children = set(children())
    storm.stops.clear()
    storm.round_trips.clear()

    plan = [kind for kind, count in COUNTS.items() for _ in range(count)]
    storm.rng.shuffle(plan)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def run(n: int, kind: str) -> None:
        async with gate:
            await OPERATIONS[kind](storm, n)

    began = time.monotonic()
    await asyncio.gather(*(run(n, kind) for n, kind in enumerate(plan)))
    elapsed = time.monotonic() - began

    # Every stop came within the bound, and no process of a stopped execution is left.
    for kind, samples in storm.stops.items():
        spread = f"{kind}: p50/p99/max {_spread(samples)} ms"
        assert max(samples) <= EVERY_STOP_WITHIN_MS, spread
        figures(f"{kind} ms p50/p99/max", _spread(samples))
    stopped = set(storm.stopped)
    records = {
        info.execution_id: info
        for page in await pages(h.fn.ListExecutions, fpb.ListExecutionsRequest(limit=1000))
        for info in page.executions
    }
    assert stopped <= records.keys()
    for execution_id in stopped:
        info = records[execution_id]
        assert info.status in (CANCELLED, TIMEOUT), info
        if info.instance_id:
            assert pid_gone(worker_pid(info.instance_id)), info
    for execution_id in storm.not_admitted:
        assert execution_id not in records or records[execution_id].status == CANCELLED
    statuses = Counter(info.status for info in records.values())
    assert statuses[COMPLETED] == COUNTS["normal call"] + 1  # and the warm-up's

    # Nothing is left over: processes, asyncio tasks, threads, engine state.
    storm.clock.join()
    await poll(lambda: _pool_full(h), what="the pool to refill")
    assert set(children()) - baseline_children <= set(h.server.engine.executor.worker_pids())
    assert not zombies()
    await poll(lambda: _settled(baseline_tasks, baseline_threads), what="tasks and threads to settle")
    engine = h.server.engine
    assert not engine.live
    assert (engine.scheduler.running, engine.scheduler.pending) == (0, 0)
    figures("operations", len(plan))
    figures("storm seconds", round(elapsed, 1))
    figures("cancel round trip ms p50/p99/max", _spread(storm.round_trips))
    figures("stops", len(stopped))
    figures("callers that gave up before the server took the call", len(storm.not_admitted))


def _spread(samples: list[float]) -> str:
    return "/".join(f"{percentile(samples, q):.1f}" for q in (50, 99, 100))


async def _pool_full(h: Harness) -> bool:
    return len(h.server.engine.executor.worker_pids()) == h.server.config.max_concurrent


async def _settled(tasks: int, threads: int) -> bool:
    return len(asyncio.all_tasks()) <= tasks and threading.active_count() <= threads
