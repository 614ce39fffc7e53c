"""What travels with a notebook function: stable code identity, handles that pickle, clear refusals."""

from __future__ import annotations

import asyncio
import copy
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import spear_sdk
from spear_sdk import errors


def cell(source: str, filename: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``source`` as a notebook cell does: compiled under the kernel's cell file name, in ``__main__``."""
    namespace = {"__name__": "__main__"} if namespace is None else namespace
    exec(compile(textwrap.dedent(source), filename, "exec", dont_inherit=True), namespace)
    return namespace


#: A cell as a data scientist writes it: a class of their own, a set literal in a condition.
RESTART_CELL = """
class Token:
    def __init__(self, text):
        self.text = text

def tokenize(text):
    return [Token(w).text for w in text.split() if w.lower() not in {"a", "an", "the", "of", "to"}]
"""


def test_an_unchanged_cell_after_a_kernel_restart_keeps_its_version(client: spear_sdk.Client) -> None:
    # Each kernel defines its own class object, and salts string hashes with its own seed.
    first = cell(RESTART_CELL, "/tmp/ipykernel_4101/2871930519.py")
    restarted = cell(RESTART_CELL, "/tmp/ipykernel_4977/2871930519.py")
    before = client.function(first["tokenize"], name="tokenize-restart")
    after = client.function(restarted["tokenize"], name="tokenize-restart")
    assert (after.task_id, after.version) == (before.task_id, before.version)
    assert after("the cat of a dog") == ["cat", "dog"]
    script = (
        "import sys, textwrap\n"
        "from spear_sdk._handles import pickled_function\n"
        "namespace = {'__name__': '__main__'}\n"
        "exec(compile(textwrap.dedent(sys.argv[1]), '/tmp/ipykernel_1/1.py', 'exec'), namespace)\n"
        "print(pickled_function(namespace['tokenize'], None, {}).checksum)\n"
    )
    checksums = {
        subprocess.run(
            [sys.executable, "-c", script, RESTART_CELL],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2", "3")
    }
    assert len(checksums) == 1 and before.ref is not None and before.ref.checksum in checksums


def test_a_changed_class_is_new_code(client: spear_sdk.Client) -> None:
    old = cell("class Unit:\n    size = 1\ndef measure():\n    return Unit.size\n", "/tmp/ipykernel_1/2.py")
    new = cell("class Unit:\n    size = 2\ndef measure():\n    return Unit.size\n", "/tmp/ipykernel_1/2.py")
    first = client.function(old["measure"], name="measure-class")
    second = client.function(new["measure"], name="measure-class")
    assert second.version == first.version + 1  # type: ignore[operator]
    assert (first(), second()) == (1, 2)


def test_a_remote_traceback_of_a_cell_still_shows_its_source(client: spear_sdk.Client, tmp_path: Any) -> None:
    cell_file = tmp_path / "ipykernel_4101" / "11.py"
    cell_file.parent.mkdir()
    source = "def explode(x):\n    return 1 / x\n"
    cell_file.write_text(source)
    explode = client.function(cell(source, str(cell_file))["explode"], name="explode-cell")
    with pytest.raises(errors.RemoteFunctionError) as caught:
        explode(0)
    assert f'File "{cell_file}", line 2' in caught.value.remote_traceback
    assert "return 1 / x" in caught.value.remote_traceback


def test_a_closure_over_an_unpicklable_global_names_it(client: spear_sdk.Client) -> None:
    namespace = cell(
        """
        def locked_sum(xs):
            with guard:
                return sum(xs)
        """,
        "/tmp/ipykernel_4101/42.py",
        {"__name__": "__main__", "guard": threading.Lock()},
    )
    with pytest.raises(errors.InvalidArgument, match=r"cannot ship locked_sum.*global 'guard'.*lock"):
        client.function(namespace["locked_sum"])


def test_function_handles_pickle_and_deepcopy(client: spear_sdk.Client) -> None:
    @client.function
    def double(x: int) -> int:
        return x * 2

    assert copy.deepcopy(double)(4) == 8
    assert copy.copy(double)(5) == 10
    assert pickle.loads(pickle.dumps(double))(6) == 12


def test_a_remote_function_calls_another(client: spear_sdk.Client) -> None:
    @client.function
    def inner(x: int) -> int:
        return x * 10

    @client.function
    def outer(x: int) -> int:
        return inner(x) + 1

    @client.function
    def fan_out(xs: list[int]) -> list[int]:
        return [e.result() for e in [inner.submit(x) for x in xs]]

    assert outer(4) == 41
    assert fan_out([1, 2]) == [10, 20]
    assert os.environ.get("SPEAR_ADDRESS") is None  # the kernel's environment is left alone


def test_async_handles_compose_remotely(lab: spear_sdk.Lab) -> None:
    async def main() -> int:
        async with spear_sdk.AsyncClient(lab.address) as aclient:

            @aclient.function
            async def inner(x: int) -> int:
                return x + 100

            @aclient.function
            async def outer(x: int) -> int:
                return await inner(x) * 2

            return int(await outer(1))

    assert asyncio.run(main()) == 202


def test_globals_are_captured_when_the_cell_runs(client: spear_sdk.Client) -> None:
    namespace = cell("threshold = 0.5\ndef above(x):\n    return x > threshold\n", "/tmp/ipykernel_4101/7.py")
    above = client.function(namespace["above"], name="above-threshold")
    namespace["threshold"] = 0.9  # a later cell changes the global...
    assert above(0.7) is True  # ...and the shipped function still has the value of its cell's run
    assert client.function(namespace["above"], name="above-threshold")(0.7) is False  # the cell re-run
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Globals are captured when the cell runs" in readme
