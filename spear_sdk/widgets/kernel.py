"""Where widget changes happen: on the loop of the thread that made the view (a notebook cell runs on the
kernel's loop), never on the SDK's runtime thread. ipykernel sends comm messages from that thread."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from typing import Any


class KernelLoop:
    """The running asyncio loop of the creating thread, or ``None`` outside one (a plain script)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None, thread: int) -> None:
        self.loop = loop
        self.thread = thread

    @classmethod
    def here(cls) -> KernelLoop:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        return cls(loop, threading.get_ident())

    @property
    def live(self) -> bool:
        return self.loop is not None and not self.loop.is_closed()

    def owns_thread(self) -> bool:
        return threading.get_ident() == self.thread

    def call(self, fn: Callable[..., object], *args: Any) -> bool:
        """Run ``fn(*args)`` on the loop's thread: now if this is that thread, else as soon as the loop is
        free. ``False`` when it cannot run there (no loop, or the loop is gone)."""
        if self.owns_thread():
            fn(*args)
            return True
        if self.loop is None:
            return False
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the kernel is shutting down
            return False
        return True

    def later(self, delay: float, fn: Callable[[], object]) -> asyncio.TimerHandle | None:
        """Run ``fn`` on the loop after ``delay`` seconds; call this from the loop's own thread."""
        if not self.live:
            return None
        assert self.loop is not None
        return self.loop.call_later(delay, fn)


def in_kernel() -> bool:
    """Running in a Jupyter kernel, where a widget frontend may show views (not a terminal IPython)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return getattr(shell, "kernel", None) is not None


def widgets_available() -> bool:
    try:
        import ipywidgets  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True
