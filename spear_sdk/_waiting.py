"""Waiting on several executions, like ``concurrent.futures.wait`` and ``as_completed``: coroutines on the
runtime loop that ``spear_sdk.wait`` / ``as_completed`` block on and ``spear_sdk.aio.wait`` /
``as_completed`` await."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

from ._handles import ExecutionBase
from ._status import TERMINAL

E = TypeVar("E", bound=ExecutionBase)

ReturnWhen = Literal["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]
ALL_COMPLETED: Final = "ALL_COMPLETED"
FIRST_COMPLETED: Final = "FIRST_COMPLETED"
FIRST_EXCEPTION: Final = "FIRST_EXCEPTION"
#: Seconds between two looks at the executions still running.
POLL_S = 0.05


async def completions(
    executions: Iterable[E], timeout: float | None, *, quiet_timeout: bool = False
) -> AsyncGenerator[E, None]:
    """Each execution as it finishes; ``TimeoutError`` (or, ``quiet_timeout``, the end) if some are still
    running after ``timeout`` seconds."""
    pending = list(dict.fromkeys(executions))
    deadline = None if timeout is None else time.monotonic() + timeout
    while pending:
        states = await asyncio.gather(*(e._core.state(e.execution_id) for e in pending))
        still = []
        for execution, state in zip(pending, states, strict=True):
            execution._last_status = state.status
            if state.status in TERMINAL:
                yield execution
            else:
                still.append(execution)
        pending = still
        if not pending:
            return
        if deadline is not None and time.monotonic() >= deadline:
            if quiet_timeout:
                return
            raise TimeoutError(f"{len(pending)} executions still running after {timeout} s")
        await asyncio.sleep(POLL_S)


async def wait_for(
    executions: Iterable[E], timeout: float | None, return_when: ReturnWhen
) -> tuple[set[E], set[E]]:
    """The ``(done, not_done)`` sets once ``return_when`` holds, or after ``timeout`` seconds."""
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(
            f"return_when is ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, not {return_when!r}"
        )
    pending = set(executions)
    done: set[E] = set()
    async with contextlib.aclosing(completions(pending, timeout, quiet_timeout=True)) as finished:
        async for execution in finished:
            done.add(execution)
            pending.discard(execution)
            if return_when == FIRST_COMPLETED or (
                return_when == FIRST_EXCEPTION and execution._last_status != "completed"
            ):
                break
    return done, pending


def canceller(executions: Sequence[ExecutionBase]) -> Callable[[], Coroutine[Any, Any, None]]:
    """What Ctrl-C during a blocking wait runs: it cancels every execution waited for that has not ended,
    as an interrupted ``f()`` or ``.result()`` cancels its own."""

    async def cancel_unfinished() -> None:
        await asyncio.gather(
            *(e._cancel_on_interrupt() for e in executions if e._last_status not in TERMINAL)
        )

    return cancel_unfinished
