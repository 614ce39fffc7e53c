"""Calls that fail before they start: local binding, map's options, interrupted waits and clear messages."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sdk_support import LAB_OPTIONS, ctrl_c_once, wait_until

import spear_sdk
from spear_sdk import errors


def test_a_call_that_cannot_bind_fails_at_once(client: spear_sdk.Client) -> None:
    @client.function
    def add(a: int, b: int) -> int:
        return a + b

    before = len(client.executions(task=add))
    for attempt in (
        lambda: add(1),
        lambda: add.submit(1, 2, 3),
        lambda: add(1, c=2),
        lambda: list(add.stream(1)),
    ):
        with pytest.raises(TypeError, match=r"missing a required argument: 'b'|too many|unexpected keyword"):
            attempt()
    with pytest.raises(TypeError, match=r"map item 0: multiple values for argument 'b'"):
        add.map([1, 2], [3, 4], b=1, progress=False)
    assert len(client.executions(task=add)) == before  # nothing reached the server
    assert add(1, b=2) == 3


def test_map_broadcasts_keywords_and_can_return_exceptions(client: spear_sdk.Client) -> None:
    @client.function
    def scaled(x: int, factor: int = 1, col: str = "") -> str:
        if x == 3:
            raise ValueError(f"no {x}")
        return f"{col}{x * factor}"

    assert scaled.map([1, 2], factor=10, col="v", progress=False) == ["v10", "v20"]
    results = scaled.map(range(5), return_exceptions=True, progress=False)
    assert results[:3] == ["0", "1", "2"] and results[4] == "4"
    assert isinstance(results[3], errors.RemoteFunctionError) and results[3].index == 3
    with pytest.raises(errors.RemoteFunctionError, match=r"map item 3\b") as caught:
        scaled.map(range(5), progress=False)
    assert caught.value.index == 3 and caught.value.remote_message == "no 3"
    with pytest.raises(ValueError, match="same length"):
        scaled.map([1, 2, 3], [1, 2], progress=False)


def test_ctrl_c_in_wait_and_as_completed_cancels_the_executions(client: spear_sdk.Client) -> None:
    @client.function
    def nap_long(tag: str) -> None:
        import time

        time.sleep(60)

    waits: list[Callable[[list[spear_sdk.Execution]], object]] = [
        lambda es: spear_sdk.wait(es),
        lambda es: list(spear_sdk.as_completed(es)),
    ]
    for waiting in waits:
        executions = [nap_long.submit("a"), nap_long.submit("b")]

        def running(es: list[spear_sdk.Execution] = executions) -> bool:
            return any(e.status == "running" for e in es)

        with pytest.raises(KeyboardInterrupt), ctrl_c_once(running):
            waiting(executions)
        for execution in executions:
            wait_until(lambda e=execution: e.status == "cancelled", what="the waited execution cancelled")


def test_a_handle_of_a_stopped_or_replaced_lab_says_so() -> None:
    old = spear_sdk.start_lab(**LAB_OPTIONS)
    ping = old.client.function(lambda: "pong", name="ping-old")
    new = spear_sdk.start_lab(**LAB_OPTIONS, max_queued=9)  # replaces the lab
    try:
        with pytest.raises(errors.Unavailable, match=r"replaced.*re-run the cell that defines the function"):
            ping()
    finally:
        new.stop()
    with pytest.raises(errors.Unavailable, match=r"stopped.*re-run the cell that defines the function"):
        new.client.function(lambda: 1, name="after-stop")


def test_register_module_refuses_a_module_the_server_cannot_import(client: spear_sdk.Client) -> None:
    with pytest.raises(errors.FailedPrecondition, match=r"cannot import module 'no_such_module'"):
        client.register_module("no_such_module:fn")
    assert client.tasks(prefix="fn").empty
    assert client.register_module("json:dumps")([1]) == "[1]"


def test_connect_with_a_scheme_says_to_drop_it() -> None:
    with pytest.raises(ValueError, match=r"without a scheme.*'localhost:50051'"):
        spear_sdk.connect("http://localhost:50051")


def test_long_names_have_one_limit_and_message(client: spear_sdk.Client) -> None:
    long = "n" * 257
    message = r"a task name is at most 256 characters; this one has 257"
    with pytest.raises(errors.InvalidArgument, match=message):
        client.function(lambda: 1, name=long)
    with pytest.raises(errors.InvalidArgument, match=message):
        client.register_module("json:dumps", name=long)
    with pytest.raises(errors.InvalidArgument, match=message):
        client.task(long)
    assert client.objects(prefix=f"spear/functions/{long[:10]}").empty  # nothing uploaded for it
    assert client.function(lambda: 1, name="n" * 256)() == 1
