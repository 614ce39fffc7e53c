"""Stops a throwaway PostgreSQL cluster whose owner died without stopping it (a SIGKILLed pytest or
benchmark run), and removes its directory: ``python -m bench.pg_guard OWNER_PID BIN_DIR ROOT``.

A postmaster outlives the process that started it, so without this guard every killed run would leave a
server and its files behind. ``PostgresServer`` starts one guard per cluster, in a session of its own (a
Ctrl-C to the run's process group must not take the guard with it), and ends it in ``destroy``.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
from pathlib import Path


def wait_for_exit(pid: int) -> None:
    """Return once process ``pid`` has exited (at once if it is gone already)."""
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([handle], [], [])
    finally:
        os.close(handle)


def stop_and_remove(bin_dir: Path, root: Path) -> None:
    data = root / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-m",
             "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str]) -> int:
    owner, bin_dir, root = int(argv[0]), Path(argv[1]), Path(argv[2])
    wait_for_exit(owner)
    stop_and_remove(bin_dir, root)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
