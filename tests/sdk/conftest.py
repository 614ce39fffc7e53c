"""One in-process lab for the SDK tests (the way a notebook uses it), and a polling helper."""

from __future__ import annotations

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
