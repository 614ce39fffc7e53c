"""The loop cases: the SDK works from a script, many threads, asyncio.run, a running loop (a notebook
cell), and the blocking API refuses clearly where it would deadlock."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from sdk_support import ctrl_c_once, wait_until

import spear_sdk
from spear_sdk._runtime import get_runtime


def test_sync_client_inside_a_running_loop_like_a_notebook_cell(client: spear_sdk.Client) -> None:
    add = client.function(lambda a, b: a + b, name="add-in-loop")

    async def cell() -> int:
        # A Jupyter cell runs while the kernel's loop is running: blocking calls must still work.
        return add(2, 3)

    assert asyncio.run(cell()) == 5


def test_async_client_from_several_event_loops(lab: spear_sdk.Lab) -> None:
    aclient = spear_sdk.AsyncClient(lab.address)
    negate = aclient.function(lambda x: -x, name="negate-loops")

    async def use(x: int) -> int:
        return await negate(x)

    # One client, awaited from successive asyncio.run loops and from loops in other threads at once.
    assert asyncio.run(use(1)) == -1
    assert asyncio.run(use(2)) == -2
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda x: asyncio.run(use(x)), range(8))) == [-x for x in range(8)]


def test_many_threads_share_one_sync_client(client: spear_sdk.Client) -> None:
    triple = client.function(lambda x: 3 * x, name="triple-threads")
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(triple, range(64))) == [3 * x for x in range(64)]


def test_blocking_call_on_the_runtime_loop_is_refused_clearly(client: spear_sdk.Client) -> None:
    runtime = get_runtime()

    async def misuse() -> object:
        return client.health()

    with pytest.raises(RuntimeError, match="use AsyncClient"):
        runtime.submit(misuse()).result(timeout=10)


def test_async_client_on_the_runtime_loop_itself(lab: spear_sdk.Lab) -> None:
    async def inside() -> str:
        return (await spear_sdk.AsyncClient(lab.address).health()).status

    assert get_runtime().submit(inside()).result(timeout=10) == "healthy"


def test_keyboard_interrupt_cancels_the_remote_execution(client: spear_sdk.Client) -> None:
    @client.function
    def long_sleep() -> None:
        import time

        time.sleep(60)

    def running() -> bool:
        return "running" in set(client.executions(task=long_sleep)["status"])

    for call in (long_sleep, lambda: long_sleep.submit().result()):
        # Other tests' work may hold the lab's slots for a while: the interrupt waits for the call to run.
        with pytest.raises(KeyboardInterrupt), ctrl_c_once(running):
            call()
        wait_until(
            lambda: set(client.executions(task=long_sleep)["status"]) == {"cancelled"},
            what="the interrupted execution to be cancelled",
        )


def test_a_script_runs_from_top_to_bottom_and_exits_cleanly(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import spear_sdk

        lab = spear_sdk.start_lab(store="sqlite:///lab.db")
        square = lab.client.function(lambda x: x * x, name="square")
        print(square(7), flush=True)
        # no lab.stop(): the lab must shut down by itself at interpreter exit
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "49\n"
    assert "Traceback" not in done.stderr
    import sqlite3

    with sqlite3.connect(f"{tmp_path}/lab.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT count(*) FROM kv WHERE key LIKE 'execution:%'").fetchone() == (1,)
