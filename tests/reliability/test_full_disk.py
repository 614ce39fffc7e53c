"""A full disk under the SQLite store: calls fail with a clear UNAVAILABLE, health turns unhealthy (and
grpc.health.v1 NOT_SERVING) while the store cannot write, the server comes back by itself when space
returns, and a shutdown on a full disk ends with one clear line and loses nothing.

The disk is genuinely full: the store lives on a 1 MiB tmpfs mounted for the test, filled with a file
until the kernel answers ENOSPC. SQLite then reports "database or disk is full" (SQLITE_FULL) from its
own writes, as it does on a real full disk. Mounting needs root (CI runs as root); elsewhere the test is
skipped and says so.
"""

from __future__ import annotations

import errno
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import expect_code, params, poll
from served import Launcher, Served

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb

FULL = "database or disk is full"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"a full disk is made by mounting a small tmpfs, which needs root: {mounted.stderr.strip()}"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = disk / "filler"
    chunk = b"\0" * 4096
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    # Whatever is left is smaller than a page: fill it byte by byte.
    with filler.open("ab", buffering=0) as out:
        try:
            while True:
                out.write(b"\0")
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


async def health(served: Served) -> tuple[str, str, int]:
    """GetHealth's status and message, and grpc.health.v1's status of the whole server."""
    details = await served.fn.GetHealth(fpb.GetHealthRequest())
    standard = await health_pb2_grpc.HealthStub(served.channel).Check(health_pb2.HealthCheckRequest())
    return details.status, details.message, standard.status


async def square(served: Served, task_id: str, n: int) -> object:
    response = await served.fn.InvokeFunction(
        fpb.InvokeFunctionRequest(task_id=task_id, parameters=params(n))
    )
    assert response.result.status == fpb.EXECUTION_STATUS_COMPLETED, response
    return codec.decode(response.result.result)


async def register(served: Served, name: str) -> str:
    response = await served.fn.RegisterTask(
        fpb.RegisterTaskRequest(
            task_name=name,
            artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:square"),
        )
    )
    return response.task.task_id


async def test_a_full_disk_turns_health_unhealthy_until_space_returns(
    launcher: Launcher, small_disk: Path
) -> None:
    db = small_disk / "spearlet.db"
    served = await launcher.start(db=str(db))
    task_id = await register(served, "square")
    assert await square(served, task_id, 3) == 9
    assert (await health(served))[::2] == ("healthy", SERVING)

    filler = fill(small_disk)
    refused = await expect_code(square(served, task_id, 4), grpc.StatusCode.UNAVAILABLE)
    assert FULL in (refused.details() or "") and str(db) in (refused.details() or ""), refused.details()
    await expect_code(register(served, "refused"), grpc.StatusCode.UNAVAILABLE)
    status, message, standard = await health(served)
    assert (status, standard) == ("unhealthy", NOT_SERVING)
    assert FULL in message, message

    # Space returns: with no call in between, health comes back by itself (the server probes the store).
    filler.unlink()

    async def healthy_again() -> bool:
        return (await health(served))[::2] == ("healthy", SERVING)

    await poll(healthy_again, timeout=15, what="health to come back once the disk has space")
    assert await square(served, task_id, 5) == 25
    kept_id = await register(served, "kept")

    # Full again, and shut down: one clear line, no traceback, exit status 0.
    fill(small_disk)
    await expect_code(square(served, task_id, 6), grpc.StatusCode.UNAVAILABLE)
    assert (await health(served))[0] == "unhealthy"
    served.proc.send_signal(signal.SIGTERM)
    assert await served.wait_exit(30) == 0, served.output()
    stderr = served.stderr.read_text()
    assert "Traceback" not in stderr, served.output()
    closing = [line for line in stderr.splitlines() if "closed without a checkpoint" in line]
    assert len(closing) == 1 and FULL in closing[0], served.output()
    assert served.stdout.read_text().rstrip().endswith("spearlet shutting down"), served.output()

    # Nothing written before the disk filled up again is lost: the WAL holds it, the next open applies it.
    (small_disk / "filler").unlink()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        keys = [key for (key,) in conn.execute("SELECT key FROM kv")]
    assert any(kept_id in key for key in keys), keys
