"""Fixtures every test directory may use: an in-process server (``harness``), ``spearlet serve``
subprocesses (``served``) and a Dask cluster (``dask_cluster``); and the hand-over of ``anyio``-marked
tests to anyio's plugin."""

from __future__ import annotations

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
