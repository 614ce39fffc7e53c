"""The one background event-loop thread that owns every gRPC channel (and the lab's server).

A ``grpc.aio`` channel or server is bound to the loop it was made on, and a notebook kernel already runs a
loop of its own. So every coroutine of the SDK runs here: the sync API blocks its caller until the result
arrives (:meth:`Runtime.run`), the async API awaits a future chained to it (:meth:`Runtime.hop`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

from .wire.errors import SpearError

T = TypeVar("T")

_SHUTDOWN_TIMEOUT_S = 10.0


class Runtime:
    """A daemon thread running an asyncio loop until interpreter exit."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._closers: list[Callable[[], Awaitable[None]]] = []
        self._thread = threading.Thread(target=self._serve, name="spear-sdk-loop", daemon=True)
        self._thread.start()
        self._ready.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self._thread.ident

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule ``coro`` on the runtime loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(
        self,
        coro: Coroutine[Any, Any, T],
        *,
        on_interrupt: Callable[[], Coroutine[Any, Any, object]] | None = None,
        tick: Callable[[], object] | None = None,
        tick_interval: float = 0.2,
    ) -> T:
        """Run ``coro`` on the runtime loop and block until it is done.

        ``tick``, if given, is called on this thread every ``tick_interval`` seconds while it waits (a
        progress bar draws itself there). A KeyboardInterrupt while waiting cancels ``coro`` (and runs
        ``on_interrupt``, which cancels the remote execution), then propagates, so Ctrl-C in a cell stops
        the remote work too.
        """
        try:
            self.check_blocking_allowed()
        except RuntimeError:
            coro.close()
            raise
        call = _BlockingCall(coro)
        try:
            # Inside the try: a Ctrl-C that lands right after the call is scheduled must cancel it too.
            self.loop.call_soon_threadsafe(call.start, self.loop)
            if tick is not None:
                while not call.done.acquire(timeout=tick_interval):
                    tick()
            else:
                call.done.acquire()
            return call.outcome()
        except KeyboardInterrupt:
            self.loop.call_soon_threadsafe(call.cancel)
            if on_interrupt is not None:
                cleanup = self.submit(on_interrupt())
                # Wait briefly so that the cancel has reached the server before the cell ends.
                concurrent.futures.wait([cleanup], timeout=5)
            raise

    def check_blocking_allowed(self) -> None:
        """Blocking on the runtime loop from its own thread would wait forever: refuse it clearly."""
        if self.in_loop_thread():
            raise RuntimeError(
                "a blocking spear_sdk call was made from the SDK's own event loop; use AsyncClient "
                "(await its methods) in coroutines and callbacks"
            )

    async def hop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` from any event loop; it runs on the runtime loop, and cancelling the caller
        cancels it.

        An asyncio caller awaits an asyncio future chained to the runtime's. A caller on another anyio
        backend (trio) waits through anyio's thread bridge: one of its worker threads blocks on the
        result, so the caller's loop neither blocks nor ever runs grpc.aio.
        """
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            return await coro
        future = self.submit(coro)
        if here is not None:
            return await asyncio.wrap_future(future)
        return await _wait_in_worker_thread(future)

    def on_shutdown(self, closer: Callable[[], Awaitable[None]]) -> None:
        """Register a coroutine function to await on the loop at interpreter exit (servers, channels)."""
        self._closers.append(closer)

    def forget(self, closer: Callable[[], Awaitable[None]]) -> None:
        if closer in self._closers:
            self._closers.remove(closer)

    def shutdown(self) -> None:
        """Close what registered itself (newest first), then stop the loop."""
        if not self._thread.is_alive():
            return
        closers, self._closers = self._closers[::-1], []

        async def close_all() -> None:
            for closer in closers:
                with contextlib.suppress(Exception):  # one failed close must not keep the others open
                    await closer()

        if closers and not self.in_loop_thread():
            concurrent.futures.wait([self.submit(close_all())], timeout=_SHUTDOWN_TIMEOUT_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_loop_thread():
            self._thread.join(timeout=_SHUTDOWN_TIMEOUT_S)


class _BlockingCall(Generic[T]):
    """One coroutine run on the runtime loop for a thread that blocks until it ends.

    Cheaper than ``run_coroutine_threadsafe`` and its ``concurrent.futures.Future`` (a condition
    variable, and a done callback that costs the loop one more turn): the coroutine runs inside a task
    that releases a plain lock as its last step, and the blocked thread wakes on that lock."""

    __slots__ = ("_coro", "_error", "_task", "_value", "done")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._task: asyncio.Task[None] | None = None
        self._value: T | None = None
        self._error: BaseException | None = None
        #: Held until the coroutine has ended; the caller waits by acquiring it.
        self.done = threading.Lock()
        self.done.acquire()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop: run the coroutine in a task."""
        self._task = loop.create_task(self._run())

    async def _run(self) -> None:
        try:
            self._value = await self._coro
        except BaseException as exc:  # everything goes to the caller's thread, which raises it there
            self._error = exc
        finally:
            self.done.release()

    def cancel(self) -> None:
        """On the loop (scheduled after :meth:`start`, if that was scheduled): cancel the coroutine."""
        if self._task is not None:
            self._task.cancel()
        else:  # the interrupt came before the call was scheduled: it never starts
            self._coro.close()

    def outcome(self) -> T:
        """Once ``done`` is acquired: the value, or the error raised as :func:`result_of` does."""
        error = self._error
        if error is None:
            return self._value  # type: ignore[return-value]
        self._error = None  # (no reference cycle through the traceback)
        if isinstance(error, asyncio.CancelledError):
            raise concurrent.futures.CancelledError() from None
        if isinstance(error, SpearError):
            raise error.with_traceback(None)
        raise error


#: Callers of another anyio backend waiting on the runtime loop at once, per event loop; more wait their
#: turn for a thread (their work runs meanwhile).
WAITING_THREADS = 256
_waiting_threads: RunVar[anyio.CapacityLimiter] = RunVar("spear_sdk_waiting_threads")


async def _wait_in_worker_thread(future: concurrent.futures.Future[T]) -> T:
    """Await ``future`` from a non-asyncio loop (trio) in one of anyio's worker threads, under a limiter
    of its own (anyio's default one stays free for the caller's threads); cancelling the caller cancels
    the future."""
    try:
        limiter = _waiting_threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(WAITING_THREADS)
        _waiting_threads.set(limiter)
    try:
        await anyio.to_thread.run_sync(
            concurrent.futures.wait, [future], abandon_on_cancel=True, limiter=limiter
        )
    except BaseException:  # trio's Cancelled is a BaseException
        future.cancel()
        raise
    return result_of(future)


def result_of(future: concurrent.futures.Future[T]) -> T:
    """``future.result()``, raising our errors without the frames of the loop thread and of
    ``concurrent.futures``, which tell a notebook user nothing (the remote traceback stays the cause)."""
    try:
        return future.result()
    except SpearError as exc:
        raise exc.with_traceback(None)  # noqa: B904


_lock = threading.Lock()
_runtime: Runtime | None = None
_runtime_pid = 0


def get_runtime() -> Runtime:
    """The process's runtime, started on first use (and anew in a forked child, where threads are gone)."""
    global _runtime, _runtime_pid
    with _lock:
        if _runtime is None or _runtime_pid != os.getpid():
            _runtime = Runtime()
            _runtime_pid = os.getpid()
            atexit.register(_runtime.shutdown)
        return _runtime
