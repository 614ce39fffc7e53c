"""The pytest plugin, driven the way a project uses it: a test file in a fresh directory run by pytest in
a subprocess (write the baseline, pass, regress, update), and the plugin's options and fixtures."""

from __future__ import annotations

import json

import pytest

pytest_plugins = ["pytester"]

TEST_FILE = """
import os

from spear_sdk.testing import assert_baseline

DELAY_S = float(os.environ.get("SCORE_DELAY_S", "0"))


def score(x):
    import time

    time.sleep(DELAY_S)
    return x * 2


def test_score_keeps_its_speed(spear_client):
    scored = spear_client.function(score)
    assert scored.map(range(20), progress=False) == [x * 2 for x in range(20)]
    assert_baseline(spear_client.stats(), "baselines/score.json", rel=0.5, abs=20)


def test_both_fixtures_share_one_lab(spear_lab, spear_client):
    assert spear_client is spear_lab.client
    print("STORE", spear_lab.config.store)
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nspear_executor = thread\n")
    pytester.makepyfile(test_score=TEST_FILE)
    return pytester


def p95(pytester: pytest.Pytester) -> float:
    document = json.loads((pytester.path / "baselines" / "score.json").read_text())
    return float(document["functions"]["score"]["p95_latency_ms"])


@pytest.mark.timeout(400)  # five pytest sessions, each starting a lab
def test_write_pass_regress_update(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPEAR_UPDATE_BASELINES", raising=False)
    monkeypatch.delenv("SCORE_DELAY_S", raising=False)
    first = project.runpytest_subprocess("-s")
    first.assert_outcomes(passed=2)
    first.stdout.fnmatch_lines(["*spear baselines*", "baseline written: *score.json (no baseline was there)"])
    fast = p95(project)

    project.runpytest_subprocess().assert_outcomes(passed=2)  # the same speed: no regression

    monkeypatch.setenv("SCORE_DELAY_S", "0.1")
    slower = project.runpytest_subprocess()
    slower.assert_outcomes(passed=1, failed=1)
    slower.stdout.fnmatch_lines(
        ["*assert_baseline: score regressed against*", "*score*p95_latency_ms*REGRESSED*"]
    )
    assert p95(project) == fast  # a failed comparison leaves the baseline alone

    updated = project.runpytest_subprocess("--spear-update-baselines")
    updated.assert_outcomes(passed=2)
    updated.stdout.fnmatch_lines(["baseline updated: *score.json*"])
    assert p95(project) >= 100

    monkeypatch.setenv("SPEAR_UPDATE_BASELINES", "1")
    monkeypatch.delenv("SCORE_DELAY_S")
    project.runpytest_subprocess().assert_outcomes(passed=2)
    assert p95(project) < 100


@pytest.mark.timeout(200)
def test_the_store_comes_from_the_option_or_the_ini(project: pytest.Pytester) -> None:
    default = project.runpytest_subprocess("-s", "-k", "share")
    default.assert_outcomes(passed=1)
    default.stdout.fnmatch_lines(["*STORE memory://*"])
    durable = project.runpytest_subprocess("-s", "-k", "share", "--spear-store", "sqlite:///lab.db")
    durable.assert_outcomes(passed=1)
    durable.stdout.fnmatch_lines(["*STORE sqlite:///lab.db*"])
    assert (project.path / "lab.db").exists()


def test_a_session_without_the_fixtures_starts_no_lab(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import spear_sdk.lab

        def test_plain():
            assert spear_sdk.lab._current is None
        """
    )
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    assert "spear baselines" not in result.stdout.str()
