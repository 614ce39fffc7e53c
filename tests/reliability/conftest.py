"""Reliability tests (R1-R6, see RELIABILITY.md): Hypothesis settings. The figures they measure are
recorded with the ``figures`` fixture (``tests/conftest.py``) and printed at the end of the run, which is
where RELIABILITY.md's numbers come from."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Examples are drawn afresh every run (no database in the repository); a failure prints how to reproduce it.
settings.register_profile(
    "reliability",
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
