"""Helpers of the SDK tests (``tests/sdk``): the lab's options, a polling wait, and Ctrl-C.

A module of its own rather than the directory's ``conftest.py``: a test that imported from ``conftest``
got whichever ``conftest`` pytest had loaded last, another directory's when several were collected
together."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

LAB_OPTIONS = {"max_concurrent": 2}


def wait_until(check: Callable[[], object], timeout: float = 10, what: str = "condition") -> None:
    """Poll ``check`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def ctrl_c_once(ready: Callable[[], bool], timeout: float = 30) -> Iterator[None]:
    """Send this process one SIGINT (what Ctrl-C or Jupyter's interrupt sends) once ``ready()`` holds,
    from a thread, while the ``with`` block runs; never after it: a signal that outlived its block would
    interrupt whatever runs next. Fails if ``ready()`` did not hold within ``timeout`` seconds."""
    leaving = threading.Event()
    sent = threading.Event()
    sending = threading.Lock()  # the block is not left between the last look at ``leaving`` and the kill

    def interrupt() -> None:
        deadline = time.monotonic() + timeout
        while not leaving.is_set() and time.monotonic() < deadline:
            if ready():
                with sending:
                    if not leaving.is_set():
                        sent.set()
                        os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    interrupter = threading.Thread(target=interrupt, daemon=True)
    interrupter.start()
    try:
        yield
    finally:
        with sending:
            leaving.set()
        interrupter.join()
    if not sent.is_set():
        pytest.fail(f"not ready to interrupt within {timeout} s")
