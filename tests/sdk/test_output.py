"""What a remote function prints shows in the calling cell as it is printed, and stays in its logs."""

from __future__ import annotations

import collections
import time

import pytest
from sdk_support import wait_until

import spear_sdk


def test_printed_lines_show_before_the_call_returns(
    client: spear_sdk.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    @client.function
    def chatty(n: int) -> int:
        for i in range(n):
            print(f"step {i}")
        print("no newline at the end", end="")
        return n

    assert chatty(3) == 3
    out = capsys.readouterr().out
    assert out == ("[chatty] step 0\n[chatty] step 1\n[chatty] step 2\n[chatty] no newline at the end\n")
    last = client.executions(task=chatty, last=1)["execution_id"].iloc[0]
    assert client.execution(last).logs() == ["step 0", "step 1", "step 2", "no newline at the end"]


def test_lines_show_while_the_function_runs(
    client: spear_sdk.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    @client.function
    def slow(marker: str) -> str:
        import os

        print("started")
        while not os.path.exists(marker):  # runs until the test has seen the line
            time.sleep(0.01)
        return "done"

    import tempfile

    marker = tempfile.mktemp()
    execution = slow.submit(marker)
    seen: list[str] = []
    try:
        wait_until(
            lambda: seen.append(capsys.readouterr().out) or "[slow] started" in "".join(seen),
            10,
            "the line printed by the running function",
        )
    finally:
        open(marker, "w").close()
    assert execution.result() == "done"


def test_forwarding_can_be_turned_off_per_client_and_per_call(
    lab: spear_sdk.Lab, capsys: pytest.CaptureFixture[str]
) -> None:
    @lab.client.function
    def shout() -> int:
        print("HELLO")
        return 1

    assert shout.options(forward_output=False)() == 1
    assert capsys.readouterr().out == ""
    quiet = spear_sdk.connect(lab.address, forward_output=False)
    try:
        assert quiet.invoke("shout") == 1
        assert capsys.readouterr().out == ""
        assert quiet.task("shout").options(forward_output=True)() == 1
        assert capsys.readouterr().out == "[shout] HELLO\n"
    finally:
        quiet.close()
    assert spear_sdk.start_lab(max_concurrent=2, forward_output=False) is lab
    try:
        assert shout() == 1 and capsys.readouterr().out == ""
    finally:
        spear_sdk.start_lab(max_concurrent=2, forward_output=True)
    assert shout() == 1 and capsys.readouterr().out == "[shout] HELLO\n"


def test_maps_output_is_forwarded_too(client: spear_sdk.Client, capsys: pytest.CaptureFixture[str]) -> None:
    @client.function
    def loud(x: int) -> int:
        print(f"item {x}")
        return x

    assert loud.map(range(3), progress=False) == [0, 1, 2]
    seen: list[str] = []
    wait_until(
        lambda: (
            seen.append(capsys.readouterr().out)
            or all(f"[loud] item {x}\n" in "".join(seen) for x in range(3))
        ),
        10,
        "the lines printed by the map's calls",
    )


def test_in_a_kernel_each_cells_remote_output_lands_in_that_cell() -> None:
    from jupyter_client.manager import start_new_kernel

    cells = [
        "import spear_sdk\nlab = spear_sdk.start_lab()",
        "@lab.client.function\ndef shout(x):\n    print('hello', x)\n    return x",
        "shout(1)",
        "execution = shout.submit(2)\nexecution.result()",
        "print('local')",
    ]
    manager, kernel = start_new_kernel(kernel_name="python3")
    streams: dict[int | None, list[str]] = collections.defaultdict(list)
    try:
        for index, source in enumerate(cells):
            ids = {kernel.execute(source): index}
            while True:
                message = kernel.get_iopub_msg(timeout=60)
                owner = ids.get(message["parent_header"].get("msg_id"))
                if message["msg_type"] == "stream":
                    streams[owner].append(message["content"]["text"])
                idle = message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
                if owner == index and idle:
                    break
        kernel.execute("lab.stop()")
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "".join(streams[2]) == "[shout] hello 1\n"
    assert "".join(streams[3]) == "[shout] hello 2\n"  # not in the cell that opened the output stream
    assert "".join(streams[4]) == "local\n"
    assert not streams[None]


def test_a_failures_traceback_is_raised_not_printed(
    client: spear_sdk.Client, capsys: pytest.CaptureFixture[str]
) -> None:
    @client.function
    def fragile(x: int) -> float:
        print("dividing")
        return 1 / x

    with pytest.raises(spear_sdk.errors.RemoteFunctionError, match="division by zero"):
        fragile(0)
    assert capsys.readouterr().out == "[fragile] dividing\n"
    last = client.executions(task=fragile, last=1)["execution_id"].iloc[0]
    assert "Traceback (most recent call last):" in client.execution(last).logs()  # the logs keep it
