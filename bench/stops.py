"""R5 as a figure: how long after a time limit is due, or a cancel is asked for, the work has stopped.

Against the ``spearlet serve`` child, through the generated stubs: ``process`` artifacts (``sleep 30``),
several at a time so that the server's loop has other work while the limits fall due. Both figures are
upper bounds of the time to the process's end, since the server records a stop only once the process is
killed and reaped:

- a time limit: from when it was due (``started_at`` + the limit) to the ``completed_at`` of the TIMEOUT
  record, both on the server's clock;
- a cancel of a running process: the ``CancelExecution`` round trip, which answers once the process is gone.
"""

from __future__ import annotations

import asyncio
import shutil
import time

from spear_sdk.wire import function_pb2 as fpb

from .ours import Spear

#: The time limit given to each run: short, so that a run is mostly its stop.
TIMEOUT_MS = 50
#: Runs in flight at once (the server runs two at a time in the suite: the others wait their turn).
IN_FLIGHT = 4
RUNNING, TIMEOUT = fpb.EXECUTION_STATUS_RUNNING, fpb.EXECUTION_STATUS_TIMEOUT
#: How often a submitted run's status is asked for until it runs.
_POLL_S = 0.002


async def _until_running(spear: Spear, execution_id: str) -> bool:
    request = fpb.GetExecutionStatusRequest(execution_id=execution_id)
    while True:
        status = (await spear.stub.GetExecutionStatus(request)).result.status
        if status == RUNNING:
            return True
        if status != fpb.EXECUTION_STATUS_PENDING:
            return False
        await asyncio.sleep(_POLL_S)


async def stop_latencies(spear: Spear, calls: int) -> dict[str, list[float]]:
    """Milliseconds from due (time limit) or asked (cancel) to the stop, ``calls`` of each."""
    sleep = shutil.which("sleep")
    assert sleep, "the stop figures need a 'sleep' executable"
    task = await spear.stub.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name="bench-sleep",
            artifact_spec=fpb.ArtifactSpec(
                artifact_type="process", location=sleep, metadata={"args": '["30"]'}
            ),
        )
    )
    task_id = task.task.task_id
    stops: dict[str, list[float]] = {"timeout": [], "cancel": []}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def time_out() -> None:
        async with gate:
            response = await spear.stub.InvokeFunction(
                fpb.InvokeFunctionRequest(
                    task_id=task_id, context=fpb.ExecutionContext(timeout_ms=TIMEOUT_MS)
                )
            )
            result = response.result
            assert result.status == TIMEOUT, response
            due_ns = result.started_at.ToNanoseconds() + TIMEOUT_MS * 1_000_000
            stops["timeout"].append((result.completed_at.ToNanoseconds() - due_ns) / 1e6)

    async def cancel() -> None:
        async with gate:
            submitted = await spear.stub.InvokeFunction(
                fpb.InvokeFunctionRequest(task_id=task_id, execution_mode=fpb.EXECUTION_MODE_ASYNC)
            )
            assert await _until_running(spear, submitted.execution_id), submitted
            asked = time.perf_counter()
            await spear.stub.CancelExecution(fpb.CancelExecutionRequest(execution_id=submitted.execution_id))
            stops["cancel"].append((time.perf_counter() - asked) * 1000)

    await asyncio.gather(*(op() for _ in range(calls) for op in (time_out, cancel)))
    return stops
