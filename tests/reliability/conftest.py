"""Reliability tests (R1-R6, see RELIABILITY.md): the soak switch, Hypothesis settings, and the figures they
report.

Each test records what it measured with the ``figures`` fixture; the figures are printed at the end of
the run (``pytest tests/reliability``), which is where RELIABILITY.md's numbers come from.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from soak import SOAK, Record

_FIGURES = pytest.StashKey[list[tuple[str, str, object]]]()

# Examples are drawn afresh every run (no database in the repository); a failure prints how to reproduce it.
settings.register_profile(
    "reliability",
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_FIGURES] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Record:
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
    terminalreporter.section(f"reliability figures ({'soak' if SOAK else 'CI'} run)")
    for test, name, value in found:
        shown = f"{value:.1f}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{test}: {name} = {shown}")
