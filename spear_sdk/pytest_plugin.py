"""The pytest plugin of Spear Lab (registered as the ``pytest11`` entry point ``spear``).

Fixtures:

- ``spear_lab``: one in-process spearlet for the whole session, on ``memory://`` unless ``--spear-store
  URL`` or the ini option ``spear_store`` names another store (``spear_executor`` picks the executor);
  stopped when the session ends.
- ``spear_client``: the lab's :class:`~spear_sdk.Client`.

``--spear-update-baselines`` (or ``SPEAR_UPDATE_BASELINES=1``) makes every
:func:`~spear_sdk.testing.assert_baseline` rewrite its file instead of comparing; the baselines written in
a session are listed at its end.

Nothing happens unless a test asks for a fixture: no lab is started, no option changes other tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from . import Client, Lab
    from .baselines import BaselineResult

STORE_OPTION = "--spear-store"
UPDATE_OPTION = "--spear-update-baselines"
_WRITTEN = pytest.StashKey[list["BaselineResult"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spear", "Spear Lab")
    group.addoption(
        STORE_OPTION,
        default=None,
        metavar="URL",
        help="store of the spear_lab fixture's server (memory://, sqlite:///path.db); default: the "
        "spear_store ini option, else memory://",
    )
    group.addoption(
        UPDATE_OPTION,
        action="store_true",
        default=False,
        help="rewrite the baseline files of assert_baseline instead of comparing with them "
        "(also: SPEAR_UPDATE_BASELINES=1)",
    )
    parser.addini("spear_store", "store URL of the spear_lab fixture's server", default="memory://")
    parser.addini("spear_executor", "executor of the spear_lab fixture's server (process or thread)")


def pytest_configure(config: pytest.Config) -> None:
    from . import baselines

    written: list[BaselineResult] = []
    config.stash[_WRITTEN] = written
    baselines.written_listeners.append(written.append)
    if config.getoption(UPDATE_OPTION):
        baselines.forced_updates += 1


def pytest_unconfigure(config: pytest.Config) -> None:
    from . import baselines

    written = config.stash.get(_WRITTEN, None)
    if written is not None and written.append in baselines.written_listeners:
        baselines.written_listeners.remove(written.append)
    if config.getoption(UPDATE_OPTION):
        baselines.forced_updates -= 1


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    written = config.stash.get(_WRITTEN, [])
    if written:
        terminalreporter.section("spear baselines")
        for result in written:
            terminalreporter.write_line(result.message)


@pytest.fixture(scope="session")
def spear_lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    """One in-process spearlet for the session (see the module's doc for its store)."""
    from .lab import start_lab

    options: dict[str, Any] = {
        "store": pytestconfig.getoption(STORE_OPTION) or pytestconfig.getini("spear_store") or "memory://"
    }
    executor = pytestconfig.getini("spear_executor")
    if executor:
        options["executor"] = executor
    lab = start_lab(**options)
    try:
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def spear_client(spear_lab: Lab) -> Client:
    """The client of the session's lab."""
    return spear_lab.client
