"""Notebook functions as remote calls: shipping, calling in every mode, options, re-registration."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest
from sdk_support import wait_until

import spear_sdk
from spear_sdk.errors import ExecutionCancelled, ExecutionTimeout


def test_closures_lambdas_and_inner_imports_run_remotely(client: spear_sdk.Client) -> None:
    offset = 10

    @client.function
    def shifted(x: int) -> int:
        return x + offset

    def uses_math(x: float) -> float:
        import math

        return math.sqrt(x)

    def remote_pid() -> int:
        return os.getpid()

    assert shifted(5) == 15
    assert client.function(lambda x, y=2: x**y)(3) == 9
    assert client.function(uses_math)(16) == 4.0
    assert client.function(remote_pid)() != os.getpid()


def test_values_come_back_exactly(client: spear_sdk.Client) -> None:
    same = client.function(lambda value: value, name="same")
    for value in (9, 2.5, "text", None, True, [1, 2], (1, "a"), {"k": [1, 2.0]}, b"\x00\x01", {1, 2}):
        result = same(value)
        assert result == value and type(result) is type(value)


def test_keyword_arguments_and_defaults(client: spear_sdk.Client) -> None:
    @client.function
    def describe(a: int, b: int = 2, *, scale: int = 1) -> list[int]:
        return [a, b, scale]

    assert describe(1) == [1, 2, 1]
    assert describe(1, b=5, scale=3) == [1, 5, 3]


def test_running_the_defining_cell_again_updates_the_same_task(client: spear_sdk.Client) -> None:
    factor = 2

    def scale(x: int) -> int:
        return x * factor

    first = client.function(scale, name="scale-hot")
    assert first(5) == 10
    again = client.function(scale, name="scale-hot")  # the same code: nothing to update
    assert (again.task_id, again.version) == (first.task_id, first.version)

    factor = 3  # the "cell" now defines a different function

    def scale(x: int) -> int:
        return x * factor

    second = client.function(scale, name="scale-hot")
    assert second.task_id == first.task_id
    assert second.version == first.version + 1
    assert second(5) == 15
    tasks = client.tasks(prefix="scale-hot")
    assert list(tasks["task_name"]) == ["scale-hot"] and tasks["version"].iloc[0] == second.version


def test_submit_is_a_future(client: spear_sdk.Client) -> None:
    @client.function
    def slow_double(x: int, seconds: float) -> int:
        import time

        time.sleep(seconds)
        print("doubling", x)
        return 2 * x

    execution = slow_double.submit(21, 0.3)
    assert execution.status in ("pending", "running")
    with pytest.raises(TimeoutError):
        execution.result(timeout=0.01)  # the client's wait, not the execution's limit
    assert execution.result(timeout=30) == 42
    assert execution.done() and execution.status == "completed"
    assert execution.logs() == ["doubling 21"]
    info = execution.info()
    assert info.status == "completed" and info.duration is not None and info.metrics["attempts"] == "1"
    assert client.execution(execution.execution_id).result() == 42


def test_cancel_stops_a_running_execution(client: spear_sdk.Client) -> None:
    @client.function
    def forever() -> None:
        import time

        while True:
            time.sleep(0.01)

    execution = forever.submit()
    wait_until(lambda: execution.status == "running", what="the execution to run")
    assert execution.cancel() is True
    with pytest.raises(ExecutionCancelled) as caught:
        execution.result()
    assert caught.value.execution_id == execution.execution_id
    assert execution.status == "cancelled" and execution.cancel() is False


def test_wait_and_as_completed(client: spear_sdk.Client, tmp_path: Path) -> None:
    @client.function
    def nap(seconds: float) -> float:
        import time

        time.sleep(seconds)
        return seconds

    @client.function
    def until_exists(path: str) -> str:
        import os
        import time

        while not os.path.exists(path):
            time.sleep(0.01)
        return path

    # The slow call ends only when the test says so: which one ends first does not depend on the load.
    go = tmp_path / "go"
    slow, fast = until_exists.submit(str(go)), nap.submit(0.01)
    first = next(spear_sdk.as_completed([slow, fast], timeout=30))
    assert first is fast
    done, pending = spear_sdk.wait([slow, fast], return_when=spear_sdk.FIRST_COMPLETED)
    assert done == {fast} and pending == {slow}
    go.touch()
    done, pending = spear_sdk.wait([slow, fast], timeout=30)
    assert done == {slow, fast} and not pending
    assert {e.result() for e in done} == {0.01, str(go)}
    lingering = nap.submit(5)
    with pytest.raises(TimeoutError):
        list(spear_sdk.as_completed([lingering], timeout=0.05))
    assert lingering.cancel()


def test_stream_yields_chunks_as_they_come(client: spear_sdk.Client) -> None:
    @client.function
    def countdown(n: int):  # type: ignore[no-untyped-def]
        yield from range(n, 0, -1)

    @client.function
    def ticks():  # type: ignore[no-untyped-def]
        import itertools
        import time

        for i in itertools.count():
            yield i
            time.sleep(0.05)

    assert list(countdown.stream(4)) == [4, 3, 2, 1]
    chunks = ticks.stream()
    assert next(chunks) == 0
    chunks.close()  # leaving early cancels the execution
    wait_until(
        lambda: list(client.executions(task=ticks)["status"]) == ["cancelled"],
        what="the abandoned stream to be cancelled",
    )


def test_map_keeps_order_and_shows_progress(
    client: spear_sdk.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    @client.function
    def jitter(i: int) -> int:
        import random
        import time

        time.sleep(random.random() / 100)
        return i * i

    assert jitter.map(range(200)) == [i * i for i in range(200)]
    progress = capsys.readouterr().err
    assert "jitter" in progress and "200/200" in progress
    assert client.function(lambda a, b: a - b, name="minus").map([5, 6], [1, 2], progress=False) == [4, 4]
    assert capsys.readouterr().err == ""


def test_map_raises_the_first_failure(client: spear_sdk.Client) -> None:
    @client.function
    def picky(i: int) -> int:
        if i == 7:
            raise ValueError(f"no {i}")
        return i

    with pytest.raises(spear_sdk.errors.RemoteFunctionError, match="no 7"):
        picky.map(range(20), progress=False)


def test_options_timeout_retries_metadata_environment(client: spear_sdk.Client, tmp_path: Path) -> None:
    @client.function
    def env(name: str) -> str | None:
        import os

        return os.environ.get(name)

    tagged = env.options(environment={"STAGE": "test"}, metadata={"experiment": "e1"})
    assert tagged("STAGE") == "test"
    assert env("STAGE") is None  # options make a new handle; the original is unchanged
    frame = client.executions(task=env)
    assert frame["metadata"].iloc[-2]["experiment"] == "e1"

    @client.function(timeout=0.2)
    def sleepy() -> None:
        import time

        time.sleep(30)

    with pytest.raises(ExecutionTimeout) as caught:
        sleepy()
    assert caught.value.status == "timeout"

    def crash_once(marker: str) -> str:
        import os

        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)  # the worker dies: a retry runs the call again in a fresh one
        return "survived"

    marker = str(tmp_path / "crashed")
    flaky = client.function(crash_once)
    with pytest.raises(spear_sdk.errors.WorkerCrashed):
        flaky(marker + "-no-retry")
    execution = flaky.options(retries=1).submit(marker)
    assert execution.result(timeout=30) == "survived" and execution.info().metrics["attempts"] == "2"
    with pytest.raises(TypeError, match="unknown option 'timout'"):
        env.options(timout=1)
    with pytest.raises(ValueError, match="timeout"):
        env.options(timeout=-1)


def test_register_module_and_process(client: spear_sdk.Client) -> None:
    hypot = client.register_module("math:hypot")
    assert hypot.name == "hypot" and hypot(3, 4) == 5.0
    assert client.invoke("hypot", 6, 8) == 10.0
    script = "import json, sys\ncall = json.load(sys.stdin)\nprint(json.dumps(sum(call['args'])))\n"
    adder = client.register_process(sys.executable, ["-c", script], name="py-sum")
    assert adder(1, 2, 3) == 6
    assert client.task("py-sum")(4, 5) == 9


def test_async_client_mirrors_the_sync_one(lab: spear_sdk.Lab) -> None:
    async def main() -> None:
        aclient = spear_sdk.AsyncClient(lab.address)

        @aclient.function
        def cube(x: int) -> int:
            return x**3

        def upto(n: int):  # type: ignore[no-untyped-def]
            yield from range(n)

        assert await cube(3) == 27
        execution = await cube.submit(4)
        assert await execution == 64 and await execution.status() == "completed"
        assert [c async for c in aclient.function(upto).stream(3)] == [0, 1, 2]
        assert await cube.map(range(5), progress=False) == [0, 1, 8, 27, 64]
        assert (await aclient.stats()).total_executions > 0
        frame = await aclient.executions(task=cube)
        assert len(frame) == 7
        await aclient.close()

    asyncio.run(main())


def test_both_clients_register_a_function_when_it_is_defined(lab: spear_sdk.Lab) -> None:
    plus_one = lab.client.function(lambda x: x + 1, name="registered-when-defined")
    assert plus_one.version == 1 and plus_one.register() == plus_one.ref

    async def main() -> None:
        async with spear_sdk.AsyncClient(lab.address) as aclient:
            plus_two = aclient.function(lambda x: x + 2, name="registered-when-defined-async")
            # Started at once without blocking: the server lists the task before any call.
            deadline = time.monotonic() + 10
            while not len(await aclient.tasks(prefix=plus_two.name)):
                assert time.monotonic() < deadline, "the task was not registered when defined"
                await asyncio.sleep(0.01)
            ref = await plus_two.register()
            assert ref.version == 1 and plus_two.ref == ref and await plus_two(1) == 3

    asyncio.run(main())


def test_memory_limit_is_a_task_option(client: spear_sdk.Client) -> None:
    @client.function(memory_limit_mb=200)
    def hoard(megabytes: int) -> int:
        return len(bytearray(megabytes << 20))

    assert hoard(10) == 10 << 20
    with pytest.raises(spear_sdk.errors.ExecutionError) as caught:
        hoard(1024)
    assert caught.value.error_code == "OUT_OF_MEMORY" and "200" in str(caught.value)
    assert hoard(10) == 10 << 20  # the worker that ran out is fine for the next call
