"""A run killed without cleaning up (SIGKILL, an OOM kill) leaves no PostgreSQL server or files behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from pg import need_postgres

ROOT = Path(__file__).resolve().parents[2]


def test_a_killed_owner_leaves_no_postgres_server_behind() -> None:
    need_postgres()
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import sys, time
                from bench.postgres import PostgresServer, bin_dir
                server = PostgresServer(bin_dir(), fsync=False)
                server.start()
                postmaster = (server.data / "postmaster.pid").read_text().split()[0]
                print(server.root, postmaster, flush=True)
                time.sleep(600)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        root, postmaster = owner.stdout.readline().split()
        assert Path(f"/proc/{postmaster}").exists()
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 60
    while Path(f"/proc/{postmaster}").exists() or Path(root).exists():
        assert time.monotonic() < deadline, f"postmaster {postmaster} or {root} still there after 60 s"
        time.sleep(0.05)
