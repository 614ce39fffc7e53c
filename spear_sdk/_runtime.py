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
from typing import Any, TypeVar

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
    ) -> T:
        """Run ``coro`` on the runtime loop and block until it is done.

        A KeyboardInterrupt while waiting cancels ``coro`` (and runs ``on_interrupt``, which cancels the
        remote execution), then propagates, so Ctrl-C in a cell stops the remote work too.
        """
        try:
            self.check_blocking_allowed()
        except RuntimeError:
            coro.close()
            raise
        future = self.submit(coro)
        try:
            return result_of(future)
        except KeyboardInterrupt:
            future.cancel()
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
        """Await ``coro`` from any event loop; it runs on the runtime loop."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self.loop:
            return await coro
        return await asyncio.wrap_future(self.submit(coro))

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
