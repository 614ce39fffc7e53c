"""A real PostgreSQL server for the tests of the shared store (``bench/postgres.py`` starts it).

``postgres_server`` (session-wide) starts one cluster in a temporary directory the ``postgres`` user owns,
listening on 127.0.0.1 only; ``pg_url`` gives each test a database of its own. Without the binaries (or
without root, which ``runuser`` needs) the tests skip saying how to get them, except under CI (``CI`` set),
where they fail: CI installs them (``.ci/run``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.postgres import HOW, PostgresServer, bin_dir, unavailable

__all__ = ["PostgresServer", "make_postgres", "need_postgres", "pg_url", "postgres_server"]


def _unavailable(why: str) -> None:
    message = f"PostgreSQL tests need a server: {why}; {HOW}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def need_postgres() -> Path:
    """The directory of the PostgreSQL binaries; skip (or fail, under CI) when a cluster cannot run here."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'spear-lab[postgres]')")
    why = unavailable()
    if why is not None:
        _unavailable(why)
    found = bin_dir()
    assert found is not None
    return found


def make_postgres(*, fsync: bool = False) -> PostgresServer:
    """A started cluster (its caller destroys it), or skip/fail when PostgreSQL cannot run here."""
    server = PostgresServer(need_postgres(), fsync=fsync)
    try:
        server.start()
    except BaseException:
        server.destroy()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (fsync off: these tests are about the spearlet, not disks)."""
    server = make_postgres()
    yield server
    server.destroy()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's cluster."""
    return postgres_server.new_database()
