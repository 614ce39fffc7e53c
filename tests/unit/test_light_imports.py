"""A spearlet server and its worker processes load ``spear_sdk.wire`` but neither the client nor pandas:
``spear_sdk``'s public names are imported when first used. A worker starts in about a tenth of a second
instead of half a second, and holds tens of megabytes less."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import spear_sdk

HEAVY = ("pandas", "spear_sdk.client", "spear_sdk.lab", "spear_sdk.widgets", "ipywidgets")


def loaded_after(module: str) -> list[str]:
    """Which of :data:`HEAVY` a fresh interpreter has loaded once it imported ``module``."""
    code = f"import sys, json, {module}; print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


@pytest.mark.parametrize(
    "module",
    ["spearlet.engine.executors.worker", "spearlet.cli", "spearlet.app", "spear_sdk.wire.codec"],
)
def test_the_server_and_its_workers_load_no_client(module: str) -> None:
    assert loaded_after(module) == []


def test_the_public_names_come_on_first_use() -> None:
    assert loaded_after("spear_sdk") == []
    for name in spear_sdk.__all__:
        assert getattr(spear_sdk, name) is not None
    assert spear_sdk.start_lab.__module__ == "spear_sdk.lab"
    assert set(spear_sdk.__all__) <= set(dir(spear_sdk))
    assert spear_sdk.frames.__name__ == "spear_sdk.frames"  # a submodule, as if imported


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'start_labs'"):
        spear_sdk.start_labs  # noqa: B018
    for probe in ("__wrapped__", "nothing.at_all", "not a name"):  # what tools ask with hasattr
        assert not hasattr(spear_sdk, probe)
