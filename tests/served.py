"""``spearlet serve`` as a real subprocess, over SQLite in a test's temporary directory.

The ``launcher`` fixture (registered by ``tests/conftest.py``) starts servers and makes sure none outlives
its test.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest_asyncio
from harness import poll

from spear_sdk.wire import function_pb2_grpc as fgrpc
from spear_sdk.wire import object_pb2_grpc as ogrpc

TESTS = Path(__file__).resolve().parent
LISTENING = re.compile(r"^spearlet listening on (\S+) ", re.MULTILINE)


@dataclass
class Served:
    proc: asyncio.subprocess.Process
    address: str
    stdout: Path
    stderr: Path
    channel: grpc.aio.Channel
    fn: fgrpc.FunctionServiceStub
    obj: ogrpc.ObjectServiceStub

    def output(self) -> str:
        return f"stdout:\n{self.stdout.read_text()}\nstderr:\n{self.stderr.read_text()}"

    async def wait_exit(self, timeout: float = 15) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout)


class Launcher:
    """Starts ``spearlet serve`` subprocesses and makes sure none outlives its test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Served] = []
        self._count = 0

    def command(self, *args: str, db: str = "s.db") -> list[str]:
        command = [sys.executable, "-m", "spearlet", "serve", "--port", "0"]
        return [*command, "--store", f"sqlite:///{self.tmp_path / db}", *args]

    def environ(self, env: dict[str, str] | None = None) -> dict[str, str]:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("SPEARLET_")}
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), environ.get("PYTHONPATH")]))
        environ.update(env or {})
        return environ

    async def start(self, *args: str, db: str = "s.db", env: dict[str, str] | None = None) -> Served:
        n = self._count
        self._count += 1
        stdout, stderr = self.tmp_path / f"stdout-{n}.txt", self.tmp_path / f"stderr-{n}.txt"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *self.command(*args, db=db), cwd=self.tmp_path, env=self.environ(env), stdout=out, stderr=err
            )
        address: list[str] = []

        async def listening() -> bool:
            match = LISTENING.search(stdout.read_text())
            if match:
                address.append(match.group(1))
                return True
            assert proc.returncode is None, f"spearlet exited with {proc.returncode}\n{stderr.read_text()}"
            return False

        try:
            await poll(listening, timeout=30, what="the 'spearlet listening on' line")
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        channel = grpc.aio.insecure_channel(address[0])
        served = Served(
            proc,
            address[0],
            stdout,
            stderr,
            channel,
            fgrpc.FunctionServiceStub(channel),
            ogrpc.ObjectServiceStub(channel),
        )
        self.started.append(served)
        return served

    async def stop(self, served: Served) -> None:
        """Close the channel and kill the server if it still runs."""
        await served.channel.close()
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
        if served in self.started:
            self.started.remove(served)

    async def close(self) -> None:
        for served in list(self.started):
            await self.stop(served)


async def communicate(proc: asyncio.subprocess.Process, timeout: float) -> tuple[bytes, bytes]:
    """Wait for a child's output with a deadline; a child that overruns it is killed, not leaked."""
    try:
        return await asyncio.wait_for(proc.communicate(), timeout=timeout)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise


@pytest_asyncio.fixture
async def launcher(tmp_path: Path) -> AsyncIterator[Launcher]:
    launched = Launcher(tmp_path)
    try:
        yield launched
    finally:
        await launched.close()
