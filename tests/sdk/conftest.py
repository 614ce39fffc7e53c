"""One in-process lab for the SDK tests (the way a notebook uses it), a polling helper, and Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

import spear_sdk

LAB_OPTIONS = {"max_concurrent": 2}


@pytest.fixture
def lab() -> spear_sdk.Lab:
    """The lab as a notebook's first cell starts it: running already unless a test replaced it."""
    return spear_sdk.start_lab(**LAB_OPTIONS)


@pytest.fixture(scope="session", autouse=True)
def _stop_the_lab_at_the_end() -> Iterator[None]:
    yield
    spear_sdk.start_lab(**LAB_OPTIONS).stop(0)


@pytest.fixture
def client(lab: spear_sdk.Lab) -> spear_sdk.Client:
    return lab.client


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
