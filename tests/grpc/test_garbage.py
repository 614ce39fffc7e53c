"""An execution's objects are freed by reference counting as soon as it has settled: none is left in a
reference cycle for the cycle collector. ``spearlet serve`` spaces the collector's runs out on the strength
of this (``spearlet.collector``), and every cycle per call would otherwise cost the server a share of a
full collection."""

from __future__ import annotations

import gc
import types
from collections import Counter
from pathlib import Path

import spearlet
from harness import Harness, HarnessFactory, params, poll
from spearlet.engine.output import SESSION_KEY
from test_batch import batch_request, results
from test_invoke_many import invocation, invoke_many, scheduler_idle

from spear_sdk.wire import function_pb2 as fpb

ASYNC = fpb.EXECUTION_MODE_ASYNC
COMPLETED = fpb.EXECUTION_STATUS_COMPLETED
SERVER = str(Path(spearlet.__file__).parent)


def of_the_server(obj: object) -> bool:
    """An object the server made: of a class of its own, or a coroutine or function of its code."""
    if isinstance(obj, types.CoroutineType):
        return obj.cr_code.co_filename.startswith(SERVER)
    if isinstance(obj, types.FunctionType):
        return obj.__code__.co_filename.startswith(SERVER)
    return type(obj).__module__.startswith("spearlet.")


async def every_kind_of_call(h: Harness, task_id: str, sleeper_id: str, counter_id: str) -> None:
    """SYNC, ASYNC, InvokeMany, InvokeBatch, a stream, a failure, a cancel and a time-out."""
    for i in range(10):  # (calls that name an output session have their output forwarded)
        request = fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(i))
        request.invocation_metadata[SESSION_KEY] = "a-session"
        assert (await h.fn.InvokeFunction(request)).result.status == COMPLETED
    accepted = [(await h.invoke(task_id, i, mode=ASYNC)).execution_id for i in range(10)]
    outcomes = await invoke_many(h, [invocation(task_id, i) for i in range(30)])
    accepted += [o.response.execution_id for o in outcomes]
    batch = batch_request(task_id, [(i,) for i in range(50)])
    batch.template.invocation_metadata[SESSION_KEY] = "a-session"
    found = await results(h, batch)
    assert all(r.result.status == COMPLETED for r in found.values())
    streamed = [
        m
        async for m in h.fn.StreamFunction(
            fpb.InvokeFunctionRequest(task_id=counter_id, parameters=params(5))
        )
    ]
    assert streamed
    failed = await h.invoke(task_id, "not a number")
    assert failed.result.status == fpb.EXECUTION_STATUS_FAILED
    cancelled = await h.invoke(sleeper_id, 30, mode=ASYNC)
    await h.fn.CancelExecution(fpb.CancelExecutionRequest(execution_id=cancelled.execution_id))
    timed_out = await h.invoke(sleeper_id, 30, context=fpb.ExecutionContext(timeout_ms=200))
    assert timed_out.result.status == fpb.EXECUTION_STATUS_TIMEOUT
    for execution_id in accepted:
        assert (await h.wait_status(execution_id)).result.status == COMPLETED


async def test_an_execution_leaves_no_reference_cycle_behind(
    make_harness: HarnessFactory, tmp_path: Path
) -> None:
    h = await make_harness(store=f"sqlite:///{tmp_path / 'spear.db'}")
    task_id = await h.register("workloads:square")
    sleeper_id = await h.register("workloads:sleep")
    counter_id = await h.register("workloads:count")
    await every_kind_of_call(h, task_id, sleeper_id, counter_id)  # warm: workers, caches, first imports

    async def idle() -> bool:
        return scheduler_idle(h) and not h.server.engine.live

    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds is kept in gc.garbage, not freed
    try:
        await every_kind_of_call(h, task_id, sleeper_id, counter_id)
        await poll(idle, what="every execution settled")
        await h.server.engine.executions.flush()
        gc.collect()
        left = Counter(type(obj).__qualname__ for obj in gc.garbage if of_the_server(obj))
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert not left, f"objects of the server freed only by the cycle collector: {dict(left)}"
