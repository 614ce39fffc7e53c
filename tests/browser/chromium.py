"""Finding a chromium for the browser tests, and what to do when there is none.

A fresh machine usually has no chromium: there the browser tests are skipped, with a reason that says how to
get them. In CI (``CI`` set, as CI services do, or ``SPEAR_REQUIRE_BROWSER=1``) a missing chromium fails
them instead, so that they are never skipped silently where they must run (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping

#: Debian's chromium (``apt-get install chromium``).
DEBIAN_CHROMIUM = "/usr/bin/chromium"
#: How long ``chromium --version`` may take: a working one answers in well under a second.
PROBE_TIMEOUT_S = 30.0

HOW_TO_GET_IT = (
    "apt-get install -y --no-install-recommends chromium fonts-dejavu-core "
    "(.ci/run installs it), or set SPEAR_TEST_CHROMIUM to a chromium executable"
)


def candidates(environ: Mapping[str, str] | None = None) -> list[str]:
    """Where to look, in order: ``SPEAR_TEST_CHROMIUM`` alone when it is set (an explicit choice is not
    second-guessed), else ``chromium`` on ``PATH`` and Debian's ``/usr/bin/chromium``."""
    environ = os.environ if environ is None else environ
    chosen = environ.get("SPEAR_TEST_CHROMIUM")
    if chosen:
        return [chosen]
    found = [
        path
        for name in ("chromium", "chromium-browser")
        if (path := shutil.which(name, path=environ.get("PATH", os.defpath)))
    ]
    return [*found, DEBIAN_CHROMIUM]


def works(path: str) -> bool:
    """An executable file that answers ``--version`` with a zero exit status."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        return False
    try:
        probe = subprocess.run([path, "--version"], capture_output=True, timeout=PROBE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def find_chromium(paths: Iterable[str]) -> str | None:
    """The first of ``paths`` that is a working chromium, or None."""
    return next((path for path in paths if works(path)), None)


def browser_required(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a missing chromium fails the browser tests rather than skipping them."""
    environ = os.environ if environ is None else environ
    ci = environ.get("CI", "").strip().lower()
    return ci not in ("", "0", "false", "no") or environ.get("SPEAR_REQUIRE_BROWSER") == "1"


def missing_reason(looked_at: Iterable[str]) -> str:
    return f"no working chromium (looked at {', '.join(looked_at)}): {HOW_TO_GET_IT}"
