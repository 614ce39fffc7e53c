"""Runs jobs in daemon threads of the server process.

For functions that must share the server's memory, or where spawning processes is not possible. A thread
cannot be stopped: cancelling a job abandons it (``stops_work`` is False); its later output is dropped,
a stream it was generating ends at its next chunk, and the thread rejoins the pool once the function
returns. The pool keeps ``size`` idle threads and grows while jobs are abandoned or more run at once.
Unlike a worker process, jobs share ``os.environ`` (see :mod:`.call`) and report no memory figure.

A job's thread takes a credit for every chunk and gets it back once the sink has taken the chunk (or,
when the sink says it is full, once it is writable again): a fast generator waits for a slow reader
instead of filling memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

from spearlet.engine.executors import call
from spearlet.engine.executors.base import (
    DEFAULT_LOG_LIMIT,
    FAILED,
    WORKER_CRASHED,
    Executor,
    Job,
    Outcome,
    Sink,
)

log = logging.getLogger(__name__)
_names = itertools.count(1)
#: Chunks a job's thread may have posted that the sink has not taken yet.
_CHUNK_CREDITS = 64


class _Abandoned(Exception):
    """Raised in an abandoned job's thread at its next chunk: nobody reads that stream any more."""


class _Run:
    """One job's way back to the loop: the thread posts, the loop drains in order, one wake-up per batch."""

    __slots__ = (
        "_box",
        "_credits",
        "_held",
        "_resumer",
        "_scheduled",
        "abandoned",
        "fut",
        "loop",
        "on_done",
        "sink",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: Sink, on_done: Callable[[], None]) -> None:
        self.loop = loop
        self.sink = sink
        #: Called on the loop when the thread is free again (also after an abandoned job).
        self.on_done = on_done
        self.fut: asyncio.Future[Outcome] = loop.create_future()
        self.abandoned = False
        self._box: deque[tuple[str, object]] = deque()
        self._scheduled = False
        self._credits = threading.Semaphore(_CHUNK_CREDITS)
        self._held = 0  # credits kept back until the sink is writable again
        self._resumer: asyncio.Task[None] | None = None

    # In the job's thread.
    def log(self, text: str) -> None:
        self.post(("log", text))

    def chunk(self, data: bytes) -> None:
        self._credits.acquire()
        if self.abandoned:
            raise _Abandoned
        self.post(("chunk", data))

    def post(self, item: tuple[str, object]) -> None:
        self._box.append(item)
        if not self._scheduled:
            self._scheduled = True
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._drain)

    # On the loop.
    def abandon(self) -> None:
        """Drop whatever the thread still sends, and let it go if it waits for a credit."""
        self.abandoned = True
        self._credits.release()
        if self._resumer is not None:
            self._resumer.cancel()

    def _take_chunk(self, data: bytes) -> None:
        if self.sink.chunk(data):
            self._credits.release()
            return
        self._held += 1
        if self._resumer is None:
            self._resumer = self.loop.create_task(self._resume())

    async def _resume(self) -> None:
        await self.sink.writable()
        self._resumer = None
        held, self._held = self._held, 0
        self._credits.release(held)

    def _drain(self) -> None:
        self._scheduled = False  # first: a post racing with this drain schedules another one
        box = self._box
        while box:
            kind, value = box.popleft()
            if kind == "done":
                if not self.abandoned and not self.fut.done():
                    self.fut.set_result(value)  # type: ignore[arg-type]
                self.on_done()
            elif not self.abandoned:
                try:
                    if kind == "log":
                        self.sink.log(value)  # type: ignore[arg-type]
                    else:
                        self._take_chunk(value)  # type: ignore[arg-type]
                except Exception:  # the engine's bug must not lose the outcome behind it
                    log.exception("the sink of a job in a thread failed")


class _Slot:
    """A daemon thread with its own queue of jobs."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[tuple[Job, _Run] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._serve, name=f"spearlet-job-{next(_names)}", daemon=True)
        self.thread.start()
        self.instance_id = f"thread-{self.thread.ident}"

    def _serve(self) -> None:
        while (item := self.jobs.get()) is not None:
            job, run = item
            try:
                outcome = call.run_job(
                    job,
                    instance_id=self.instance_id,
                    emit_log=run.log,
                    emit_chunk=run.chunk,
                    process_wide=False,
                    clock=time.thread_time,
                )
            except BaseException as exc:  # a bug of ours, or _Abandoned: the thread must survive it
                message = f"the thread failed: {exc!r}"
                outcome = Outcome(
                    FAILED, error_code=WORKER_CRASHED, error_message=message, instance_id=self.instance_id
                )
            run.post(("done", outcome))


class ThreadExecutor(Executor):
    """Runs each job in a thread of the server process; cancelling abandons it."""

    name = "thread"
    stops_work = False
    limits_memory = False

    def __init__(self, size: int, *, log_limit_bytes: int = DEFAULT_LOG_LIMIT) -> None:
        """``size`` idle threads are kept; ``log_limit_bytes`` caps every job's own limit."""
        if size < 1:
            raise ValueError("a thread pool needs at least one thread")
        self._size = size
        self._log_cap = log_limit_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Slot] = []
        self._running: set[_Run] = set()
        self._closed = False

    async def start(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            call.install_stream_proxies()
            self._idle = [_Slot() for _ in range(self._size)]

    async def run(self, job: Job, sink: Sink) -> Outcome:
        if self._loop is None or self._closed:
            raise RuntimeError("the thread executor is not running (call start() first)")
        if job.log_limit_bytes > self._log_cap:
            job = replace(job, log_limit_bytes=self._log_cap)
        slot = self._idle.pop() if self._idle else _Slot()
        run = _Run(self._loop, sink, lambda: self._release(slot))
        self._running.add(run)
        slot.jobs.put((job, run))
        sink.started(slot.instance_id)
        try:
            return await run.fut
        except asyncio.CancelledError:
            run.abandon()  # the thread goes on; what it still sends is dropped
            raise
        finally:
            self._running.discard(run)

    async def close(self) -> None:
        self._closed = True
        for run in list(self._running):
            run.abandon()
            if not run.fut.done():
                run.fut.set_result(
                    Outcome(FAILED, error_code=WORKER_CRASHED, error_message="the thread executor was closed")
                )
        for slot in self._idle:
            slot.jobs.put(None)
        self._idle.clear()

    def worker_pids(self) -> list[int]:
        return []

    @property
    def healthy(self) -> bool:
        return True

    def _release(self, slot: _Slot) -> None:
        if self._closed or len(self._idle) >= self._size:
            slot.jobs.put(None)  # the thread ends
        else:
            self._idle.append(slot)
