"""One in-process lab for the SDK tests (the way a notebook uses it); the helpers the tests import are in
``tests/sdk_support.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sdk_support import LAB_OPTIONS

import spear_sdk


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
