"""nbval settings for the notebooks in this folder (the flags themselves are in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """``--nbval-sanitize-with`` names a path relative to the project root: resolve it there, so that
    pytest started from another folder still finds the file."""
    option = config.option
    path = getattr(option, "nbval_sanitize_with", None)
    if path and not Path(path).is_absolute() and not Path(path).exists():
        option.nbval_sanitize_with = str(config.rootpath / path)
