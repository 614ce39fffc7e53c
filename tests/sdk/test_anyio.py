"""``AsyncClient`` on every anyio backend: asyncio and trio, through anyio's pytest plugin (and under
``anyio.run``). The SDK's own loop thread keeps every channel; a trio caller only waits for it.

``tests/conftest.py`` hands these tests to anyio's plugin rather than pytest-asyncio's auto mode.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from collections.abc import Callable, Iterator

import anyio
import pytest
import trio

import spear_sdk
import spear_sdk.aio
from spear_sdk.errors import NotFound, RemoteFunctionError

pytestmark = pytest.mark.anyio

_names = itertools.count()


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def address(lab: spear_sdk.Lab) -> str:
    return lab.address


def unique(stem: str, backend: str) -> str:
    """A task name of this test alone (the lab is shared)."""
    return f"{stem}-{backend}-{next(_names)}"


def running_on(backend: str) -> None:
    """The test body really runs on ``backend``'s loop (and not, say, on pytest-asyncio's)."""
    try:
        asyncio.get_running_loop()
        actual = "asyncio"
    except RuntimeError:
        trio.lowlevel.current_root_task()  # raises outside trio
        actual = "trio"
    assert actual == backend


async def test_invoke(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        offset = 10
        add = aclient.function(lambda x: x + offset, name=unique("add", anyio_backend))
        assert await add(5) == 15
        assert await aclient.invoke(add, 1) == 11
        hypot = await aclient.register_module("math:hypot", name=unique("hypot", anyio_backend))
        assert await hypot(3, 4) == 5.0
        assert await aclient.invoke(hypot.name, 5, 12) == 13.0
        script = "import json, sys\ncall = json.load(sys.stdin)\nprint(json.dumps(sum(call['args'])))\n"
        adder = await aclient.register_process(
            sys.executable, ["-c", script], name=unique("sum", anyio_backend)
        )
        assert await adder(1, 2, 3) == 6
        ref = await add.register()
        assert ref.version == 1 and add.ref == ref


async def test_submit_and_result(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        square = aclient.function(lambda x: x * x, name=unique("square", anyio_backend))
        execution = await square.submit(7)
        assert await execution.result(timeout=30) == 49
        assert await execution == 49
        assert await execution.done() and await execution.status() == "completed"
        assert await execution.exception() is None

        def fail(x: int) -> None:
            raise ValueError(f"no {x}")

        failing = await aclient.submit(aclient.function(fail, name=unique("fail", anyio_backend)), 3)
        error = await failing.exception(timeout=30)
        assert isinstance(error, RemoteFunctionError) and error.remote_message == "no 3"
        with pytest.raises(RemoteFunctionError, match="no 3"):
            await failing
        again = await aclient.execution(failing.execution_id)
        assert (await again.info()).status == "failed"


async def test_stream(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:

        def countdown(n: int) -> Iterator[int]:
            yield from range(n, 0, -1)

        counting = aclient.function(countdown, name=unique("countdown", anyio_backend))
        assert [v async for v in counting.stream(4)] == [4, 3, 2, 1]
        assert [v async for v in aclient.stream(counting, 2)] == [2, 1]
        endless = await aclient.register_module("workloads:upto", name=unique("endless", anyio_backend))
        async for value in endless.stream(10**9):
            if value == 3:
                break  # leaving the loop cancels the execution
        await until_statuses(aclient, endless, lambda seen: seen == {"cancelled"})


async def test_map(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        negate = aclient.function(lambda x: -x, name=unique("negate", anyio_backend))
        assert await negate.map(range(300), progress=False) == [-x for x in range(300)]
        # With the bar (text here): it is drawn by a task of this loop while the calls run.
        assert await aclient.map(negate, [1, 2, 3], progress=True) == [-1, -2, -3]
        with pytest.raises(RemoteFunctionError):
            await negate.map([1, "a", 3], progress=True)


async def test_executions_and_the_other_listings(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        name = unique("listed", anyio_backend)
        listed = aclient.function(lambda x: x, name=name)
        await listed.map(range(5), progress=False)
        frame = await aclient.executions(task=listed)
        assert len(frame) == 5 and set(frame["status"]) == {"completed"}
        assert list((await aclient.tasks(prefix=name))["task_name"]) == [name]
        assert len(await aclient.objects(prefix=f"spear/functions/{name}/")) == 1
        assert (await aclient.stats()).completed >= 5
        assert (await aclient.health()).healthy and (await aclient.check(timeout=10)).healthy
        assert (await aclient.task(name)).name == name
        assert await aclient.delete_task(name, cleanup_executions=True) == 5
        with pytest.raises(NotFound):
            await aclient.task(name)


async def test_wait_and_as_completed(address: str, anyio_backend: str) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        halve = aclient.function(lambda x: x // 2, name=unique("halve", anyio_backend))
        executions = [await halve.submit(x) for x in (2, 4, 6)]
        done, pending = await spear_sdk.aio.wait(executions, timeout=30)
        assert done == set(executions) and not pending
        finished = [e async for e in spear_sdk.aio.as_completed(executions, timeout=30)]
        assert sorted([await e for e in finished]) == [1, 2, 3]
        # The live views are plain methods: made here, fetched on the SDK's loop.
        watch = aclient.watch(executions)
        assert watch.state.done and not watch.running
        watch.close()
        panel = aclient.panel(interval=0.5)
        assert panel.state.completed >= 3
        panel.close()


async def test_the_loop_keeps_running_while_a_call_waits_and_cancelling_it_cancels_the_execution(
    address: str, anyio_backend: str
) -> None:
    running_on(anyio_backend)
    async with spear_sdk.AsyncClient(address) as aclient:
        slow = await aclient.register_module("workloads:sleep", name=unique("slow", anyio_backend))
        async with anyio.create_task_group() as group:
            group.start_soon(slow, 60)
            # This loop is free while the call waits: it polls for the execution to be running.
            await until_statuses(aclient, slow, lambda seen: "running" in seen)
            group.cancel_scope.cancel()
        await until_statuses(aclient, slow, lambda seen: seen == {"cancelled"})


async def until_statuses(
    aclient: spear_sdk.AsyncClient, task: spear_sdk.AsyncFunction, check: Callable[[set[str]], bool]
) -> None:
    """Poll the statuses of ``task``'s executions until ``check`` holds; fail after 30 s."""
    with anyio.fail_after(30):
        while True:
            if check(set((await aclient.executions(task=task))["status"])):
                return
            await anyio.sleep(0.01)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_under_anyio_run(lab: spear_sdk.Lab, backend: str) -> None:
    async def main() -> list[object]:
        async with spear_sdk.AsyncClient(lab.address) as aclient:
            cube = aclient.function(lambda x: x**3, name=unique("cube", backend))
            execution = await cube.submit(2)
            return [await cube(3), await execution, [v async for v in aclient.stream("workloads-upto", 3)]]

    async def registered() -> None:
        async with spear_sdk.AsyncClient(lab.address) as aclient:
            await aclient.register_module("workloads:upto", name="workloads-upto")

    anyio.run(registered, backend=backend)
    assert anyio.run(main, backend=backend) == [27, 8, [0, 1, 2]]
