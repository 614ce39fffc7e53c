"""A throwaway PostgreSQL cluster from Debian's binaries, run as the ``postgres`` user (which needs root:
PostgreSQL refuses to run as root). The PG benchmark group and the shared-store tests start theirs here."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOW = "install the PostgreSQL server (apt-get install postgresql) and run as root"


def unavailable() -> str | None:
    """Why no cluster can start here, or None."""
    if bin_dir() is None:
        return "no /usr/lib/postgresql/*/bin/initdb"
    if os.geteuid() != 0 or shutil.which("runuser") is None:
        return "PostgreSQL refuses to run as root, and switching to the postgres user needs root"
    return None


def bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One cluster: ``start``, ``stop``, ``restart``, ``kill`` (a SIGKILL of the postmaster), databases.
    Should this process die without ``destroy``, a guard process (``bench/pg_guard.py``) does it."""

    def __init__(self, bin_dir: Path, *, fsync: bool) -> None:
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="spear-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.sockets.mkdir()
        shutil.chown(self.root, "postgres", "postgres")
        shutil.chown(self.sockets, "postgres", "postgres")
        self.port = _free_port()
        self.fsync = fsync
        self._databases = itertools.count(1)
        self._made: list[str] = []  # the databases' URLs: their servers' object directories go with them
        self._guard = subprocess.Popen(
            [sys.executable, "-m", "bench.pg_guard", str(os.getpid()), str(self.bin), str(self.root)],
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.root,
        )

    @property
    def options(self) -> str:
        fsync = "on" if self.fsync else "off"
        return (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync={fsync} "
            "-c max_connections=200 -c shared_buffers=32MB"
        )

    def start(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
            "-o", self.options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop")

    def restart(self) -> None:
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w",
            "-m", "fast", "-o", self.options, "restart",
        )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL the postmaster and wait until its children are gone too (a crash, not a shutdown)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        # The backends notice their postmaster's death and exit on their own.
        while any(Path(f"/proc/{child}").exists() for child in [str(pid), *children]):
            if time.monotonic() > deadline:
                raise TimeoutError("PostgreSQL backends did not exit after the postmaster was killed")
            time.sleep(0.05)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        import psycopg

        name = f"t{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        self._made.append(self.url(name))
        return self._made[-1]

    def destroy(self) -> None:
        self._guard.terminate()
        self._guard.wait()
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
        from spearlet.blobs import shared_directory

        for url in self._made:  # the shared object directories servers made for them, in /dev/shm
            shutil.rmtree(shared_directory(url), ignore_errors=True)
