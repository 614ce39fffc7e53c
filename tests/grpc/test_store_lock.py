"""One ``spearlet serve`` per SQLite store: a second one on the same file is refused at start, naming the
process that holds it, and the store is free again once that process has gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

from served import Launcher, communicate


async def test_a_second_server_on_the_same_sqlite_store_is_refused(
    launcher: Launcher, tmp_path: Path
) -> None:
    first = await launcher.start(db="shared.db")
    proc = await asyncio.create_subprocess_exec(
        *launcher.command(db="shared.db"),
        cwd=tmp_path,
        env=launcher.environ(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await communicate(proc, timeout=30)
    assert proc.returncode == 1, (out, err)
    message = err.decode()
    assert f"in use by process {first.proc.pid}" in message and "one server per SQLite store" in message
    assert "Traceback" not in message and b"listening" not in out

    await launcher.stop(first)  # killed: the operating system drops its lock
    second = await launcher.start(db="shared.db")
    assert second.proc.returncode is None
