"""Waiting on several executions, like ``concurrent.futures.wait`` and ``as_completed``: coroutines on the
runtime loop that ``spear_sdk.wait`` / ``as_completed`` block on and ``spear_sdk.aio.wait`` /
``as_completed`` await.

Ends are pushed by the server (``_completions``): however many executions are awaited, they are ids on the
one stream of their client, and nothing is asked per execution. Against a server that cannot push, the
executions still running are asked about in rounds, at most :data:`POLLS_IN_FLIGHT` at a time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, Literal, TypeVar

from ._handles import ExecutionBase
from ._status import TERMINAL, status_name
from .wire.errors import Unimplemented

E = TypeVar("E", bound=ExecutionBase)

ReturnWhen = Literal["ALL_COMPLETED", "FIRST_COMPLETED", "FIRST_EXCEPTION"]
ALL_COMPLETED: Final = "ALL_COMPLETED"
FIRST_COMPLETED: Final = "FIRST_COMPLETED"
FIRST_EXCEPTION: Final = "FIRST_EXCEPTION"
#: Seconds between two rounds of asking, against a server that cannot push.
POLL_S = 0.05
#: Status requests in flight at once in such a round.
POLLS_IN_FLIGHT = 64
#: Cancels in flight at once when an interrupted wait cancels what it waited for.
CANCELS_IN_FLIGHT = 64


async def completions(
    executions: Iterable[E], timeout: float | None, *, quiet_timeout: bool = False
) -> AsyncGenerator[E, None]:
    """Each execution as it finishes; ``TimeoutError`` (or, ``quiet_timeout``, the end) if some are still
    running after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ready: collections.deque[E] = collections.deque()
    arrived = asyncio.Event()
    polled: list[E] = []
    left = 0

    def ended(execution: E, future: asyncio.Future[Any]) -> None:
        if not future.cancelled() and isinstance(future.exception(), Unimplemented):
            polled.append(execution)  # the server turned out not to push
        else:
            if not future.cancelled() and future.exception() is None:
                execution._last_status = status_name(future.result().status) or "unknown"
            ready.append(execution)
        arrived.set()

    for execution in dict.fromkeys(executions):
        left += 1
        try:
            execution_id = await execution._id()
        except Exception:  # refused when submitted: done, with its error
            ready.append(execution)
            continue
        watched = execution._watch(execution_id)
        if watched is None:
            polled.append(execution)
            continue
        if watched.ended.done():
            ended(execution, watched.ended)
        else:
            watched.ended.add_done_callback(lambda f, e=execution: ended(e, f))  # type: ignore[misc]
    while left:
        while ready:
            left -= 1
            yield ready.popleft()
        if not left:
            return
        if polled:
            await _poll_round(polled, ready)
            if ready:
                continue
        if deadline is not None and time.monotonic() >= deadline:
            if quiet_timeout:
                return
            raise TimeoutError(f"{left} executions still running after {timeout} s")
        arrived.clear()
        wait = POLL_S if polled else None
        if deadline is not None:
            wait = max(0.0, min(wait if wait is not None else float("inf"), deadline - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), wait)


async def _poll_round(polled: list[E], ready: collections.deque[E]) -> None:
    """Ask about each execution in ``polled`` once; move those that ended to ``ready``."""
    limit = asyncio.Semaphore(POLLS_IN_FLIGHT)

    async def ask(execution: E) -> bool:
        async with limit:
            state = await execution._core.state(await execution._id())
        execution._last_status = state.status
        return state.status in TERMINAL

    finished = await asyncio.gather(*(ask(e) for e in polled))
    still = [e for e, done in zip(polled, finished, strict=True) if not done]
    ready.extend(e for e, done in zip(polled, finished, strict=True) if done)
    polled[:] = still


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
    as an interrupted ``f()`` or ``.result()`` cancels its own, :data:`CANCELS_IN_FLIGHT` at a time."""

    async def cancel_unfinished() -> None:
        limit = asyncio.Semaphore(CANCELS_IN_FLIGHT)

        async def cancel(execution: ExecutionBase) -> None:
            async with limit:
                await execution._cancel_on_interrupt()

        await asyncio.gather(*(cancel(e) for e in executions if e._last_status not in TERMINAL))

    return cancel_unfinished
