"""Fixtures every test directory may use: an in-process server (``harness``), ``spearlet serve``
subprocesses (``served``), a Dask cluster (``dask_cluster``) and ``figures``, which records what a test
measured (how long a stop took, how many calls were refused) to be printed at the end of the run rather
than held against a line that a loaded machine could cross; and the hand-over of ``anyio``-marked tests to
anyio's plugin."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from dask_cluster import dask_cluster
from harness import anyio_backend, make_harness, shared
from pg import pg_url, postgres_server
from pytest_asyncio.plugin import PytestAsyncioFunction
from served import launcher

__all__ = [
    "anyio_backend",
    "dask_cluster",
    "launcher",
    "make_harness",
    "pg_url",
    "postgres_server",
    "shared",
]


_FIGURES = pytest.StashKey[list[tuple[str, str, object]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    """``figures(name, value)`` records one measured figure of the calling test."""
    found = request.config.stash[_FIGURES]
    test = request.node.name

    def record(name: str, value: object) -> None:
        found.append((test, name, value))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    found = config.stash.get(_FIGURES, [])
    if not found:
        return
    soak = os.environ.get("SPEAR_SOAK") == "1"
    terminalreporter.section(f"measured figures ({'soak' if soak else 'CI'} run)")
    for test, name, value in found:
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{test}: {name} = {shown}")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """pytest-asyncio's auto mode claims every coroutine test, and would run an ``anyio``-marked one on its
    own asyncio loop whatever ``anyio_backend`` says (trio included). Such a test goes back to a plain
    test item, which anyio's plugin runs on the backend of its parameter."""
    for index, item in enumerate(items):
        if isinstance(item, PytestAsyncioFunction) and item.get_closest_marker("anyio") is not None:
            items[index] = pytest.Function.from_parent(
                item.parent,
                name=item.name,
                callspec=getattr(item, "callspec", None),
                callobj=item.obj,
                fixtureinfo=item._fixtureinfo,
                keywords=item.keywords,
                originalname=item.originalname,
            )
