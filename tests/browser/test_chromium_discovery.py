"""Without a chromium the browser tests skip, saying how to get one; in CI they fail instead.

These tests need no browser: discovery runs over candidate executables made here, and the end-to-end checks
run a browser test in a child pytest pointed (``SPEAR_TEST_CHROMIUM``) at a chromium that is not there.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from chromium import DEBIAN_CHROMIUM, browser_required, candidates, find_chromium, missing_reason

ROOT = Path(__file__).resolve().parents[2]
A_BROWSER_TEST = "tests/browser/test_quickstart_notebook.py"


def _script(path: Path, body: str, executable: bool = True) -> str:
    path.write_text(f"#!/bin/sh\n{body}\n")
    if executable:
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_discovery_takes_the_first_candidate_that_answers(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent")
    not_executable = _script(tmp_path / "plain", "echo Chromium 1.0", executable=False)
    broken = _script(tmp_path / "broken", "exit 3")
    working = _script(tmp_path / "working", 'echo "Chromium 131.0"')
    also_working = _script(tmp_path / "also-working", 'echo "Chromium 132.0"')

    assert find_chromium([absent, not_executable, broken, working, also_working]) == working
    assert find_chromium([absent, not_executable, broken]) is None
    assert find_chromium([]) is None


def test_candidates_are_the_override_alone_or_path_then_debian(tmp_path: Path) -> None:
    on_path = _script(tmp_path / "chromium", 'echo "Chromium 131.0"')
    assert candidates({"PATH": str(tmp_path)}) == [on_path, DEBIAN_CHROMIUM]
    assert candidates({"PATH": str(tmp_path / "empty")}) == [DEBIAN_CHROMIUM]
    assert candidates({"PATH": str(tmp_path), "SPEAR_TEST_CHROMIUM": "/opt/c"}) == ["/opt/c"]


def test_a_browser_is_required_in_ci_or_when_asked() -> None:
    assert not browser_required({})
    assert not browser_required({"CI": ""})
    assert not browser_required({"CI": "false"})
    assert browser_required({"CI": "true"})
    assert browser_required({"CI": "1"})
    assert browser_required({"SPEAR_REQUIRE_BROWSER": "1"})
    assert "apt-get install" in missing_reason(["/usr/bin/chromium"])


def _run_a_browser_test(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in ("CI", "SPEAR_REQUIRE_BROWSER", "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")
    }
    environ.update(SPEAR_TEST_CHROMIUM=str(tmp_path / "no-chromium-here"), **extra)
    return subprocess.run(
        [sys.executable, "-m", "pytest", A_BROWSER_TEST, "-p", "no:cacheprovider", "-rsE", "-q"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_chromium_the_browser_tests_skip_with_how_to_get_it(tmp_path: Path) -> None:
    run = _run_a_browser_test(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout, run.stdout
    assert "no working chromium" in run.stdout and "apt-get install" in run.stdout, run.stdout


@pytest.mark.parametrize("required", [{"CI": "true"}, {"SPEAR_REQUIRE_BROWSER": "1"}])
def test_without_chromium_in_ci_the_browser_tests_fail(tmp_path: Path, required: dict[str, str]) -> None:
    run = _run_a_browser_test(tmp_path, **required)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 error" in run.stdout and "skipped" not in run.stdout, run.stdout
    assert "the browser tests must run" in run.stdout and "apt-get install" in run.stdout, run.stdout
