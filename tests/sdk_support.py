"""Helpers of the SDK tests (``tests/sdk``): the lab's options, a polling wait, and Ctrl-C.

A module of its own rather than the directory's ``conftest.py``: a test that imported from ``conftest``
got whichever ``conftest`` pytest had loaded last, another directory's when several were collected
together."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator

import pytest

from spear_sdk._runtime import Runtime

LAB_OPTIONS = {"max_concurrent": 2}


def wait_until(check: Callable[[], object], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``check`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def main_thread_waits_in_a_call() -> bool:
    """Whether the main thread is blocked in a blocking SDK call's wait (``Runtime.run``), where a Ctrl-C
    cancels what it waits for. (The server may run the call before the caller gets there: a Ctrl-C a
    moment earlier would interrupt something else, such as the ``submit()`` before a ``.result()``.)"""
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    return frame is not None and frame.f_code is Runtime.run.__code__


@contextlib.contextmanager
def ctrl_c_once(ready: Callable[[], bool], timeout: float = 30) -> Iterator[None]:
    """Send this process one SIGINT (what Ctrl-C or Jupyter's interrupt sends) once ``ready()`` holds and
    the main thread waits in an SDK call, from a thread, while the ``with`` block runs; never after it: a
    signal that outlived its block would interrupt whatever runs next. Fails if they did not hold within
    ``timeout`` seconds.

    SIGINT raises KeyboardInterrupt during the block, as in a kernel or a terminal, whatever this process
    inherited: a shell without job control starts its background commands with SIGINT ignored, and Python
    then leaves it so."""
    leaving = threading.Event()
    sent = threading.Event()
    sending = threading.Lock()  # the block is not left between the last look at ``leaving`` and the kill
    seen: list[str] = []  # where the main thread was, and who handled SIGINT, when it was sent

    def interrupt() -> None:
        deadline = time.monotonic() + timeout
        while not leaving.is_set() and time.monotonic() < deadline:
            if ready() and main_thread_waits_in_a_call():
                with sending:
                    if not leaving.is_set():
                        seen.append(_where_the_main_thread_is())
                        sent.set()
                        os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    try:
        yield
    finally:
        with sending:
            leaving.set()
        interrupter.join()
        if inherited is not None:  # (None: a handler set outside Python, which cannot be put back)
            signal.signal(signal.SIGINT, inherited)
    if not sent.is_set():
        pytest.fail(f"not ready to interrupt within {timeout} s")
    pytest.fail(f"a Ctrl-C was sent, but the block ended without a KeyboardInterrupt; {seen[0]}")


def _where_the_main_thread_is() -> str:
    frame = sys._current_frames().get(threading.main_thread().ident or 0)
    stack = "".join(traceback.format_stack(frame)[-6:]) if frame is not None else "(gone)\n"
    return f"SIGINT handler: {signal.getsignal(signal.SIGINT)!r}; the main thread was at:\n{stack}"
