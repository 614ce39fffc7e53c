"""Child processes the suite measures: servers that print their address, and command-driven peers.

Every child gets the repository on ``PYTHONPATH`` (so spearlet's workers can import
:mod:`bench.workloads`) and writes its stderr to a log file in the run's working directory, which an
error message quotes when the child fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import psutil

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def kill_tree(pid: int) -> None:
    """Kill ``pid`` and its descendants, each by its own id (children first, so none is re-parented)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


class Child:
    """A child process with a line-oriented stdout, stderr in ``workdir/<name>.log``."""

    #: Whether the child ends by itself when its stdin closes (else :meth:`stop` sends SIGTERM).
    exits_on_eof = False

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log: IO[str] = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=workdir,
            env=child_env(),
        )
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        threading.Thread(target=self._read, name=f"{name}-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def readline(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """The next stdout line; a child that exits or stays silent first raises with the tail of its log."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            line = None
        if line is None:
            self.stop()
            raise RuntimeError(f"{self.name} failed (exit {self.proc.returncode}):\n{_tail(self.log_path)}")
        return line

    def stop(self) -> None:
        """Close stdin (a child that ``exits_on_eof`` ends by itself), else SIGTERM; whatever is left of
        the tree after the grace period is killed."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()
            if not self.exits_on_eof:
                self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait()
        self._log.close()


class Server(Child):
    """A server child that prints ``listening on HOST:PORT`` once it accepts calls."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        super().__init__(name, argv, workdir)
        while True:
            line = self.readline()
            if "listening on " in line:
                self.address = line.split("listening on ", 1)[1].split()[0]
                break


def echo_server(workdir: Path) -> Server:
    return Server("echo", [sys.executable, "-m", "bench.echo_server"], workdir)


def spearlet_server(workdir: Path, store: str, *options: str, name: str = "spearlet") -> Server:
    """``spearlet serve`` with its defaults (process executor, CPU-count concurrency) on a free port, or
    what ``options`` (more flags) say."""
    argv = [
        sys.executable,
        "-m",
        "spearlet",
        "serve",
        "--port",
        "0",
        "--store",
        store,
        "--log-level",
        "ERROR",
        *options,
    ]
    return Server(name, argv, workdir)


class Peer(Child):
    """A baseline system in a child (``python -m bench.peer KIND``) that answers JSON commands.

    ``available`` is false (and ``reason`` says why) when the system is not installed.
    """

    exits_on_eof = True

    def __init__(self, kind: str, workdir: Path, *options: str) -> None:
        name = f"peer-{kind}" + ("-cluster" if options else "")
        super().__init__(name, [sys.executable, "-m", "bench.peer", kind, *options], workdir)
        hello = json.loads(self.readline())
        self.available: bool = hello["available"]
        self.reason: str = hello.get("reason", "")
        self.startup_s: float | None = hello.get("startup_s")
        self.version: str = hello.get("version", "")

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.readline(timeout_s=600))
        if "error" in answer:
            raise RuntimeError(f"{self.name} failed at {op}: {answer['error']}")
        return answer


def run_script(name: str, args: list[str], workdir: Path, timeout_s: float = 300) -> str:
    """Run ``python *args`` in a fresh interpreter; its stdout's last line."""
    log = workdir / f"{name}.log"
    with log.open("w") as err:
        done = subprocess.run(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=workdir,
            env=child_env(),
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"{name} failed (exit {done.returncode}):\n{_tail(log)}")
    return done.stdout.strip().splitlines()[-1]


class DaskCluster:
    """``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on 127.0.0.1, each
    with one ``spear_slot`` and the scheduler with ``allowed-failures=0``, as ``--executor dask`` wants."""

    def __init__(self, workdir: Path, workers: int = 2) -> None:
        dask = str(Path(sys.executable).with_name("dask"))
        scheduler_file = workdir / "dask-scheduler.json"
        env = child_env()
        env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
        self._logs = [(workdir / f"dask-{name}.log").open("w") for name in ("scheduler", "workers")]
        self._procs = [
            subprocess.Popen(
                [
                    dask,
                    "scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--no-dashboard",
                    "--scheduler-file",
                    str(scheduler_file),
                ],
                stdout=self._logs[0],
                stderr=subprocess.STDOUT,
                env=env,
                cwd=workdir,
            )
        ]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            if self._procs[0].poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dask scheduler failed:\n{_tail(workdir / 'dask-scheduler.log')}")
            time.sleep(0.05)
        self.address: str = json.loads(scheduler_file.read_text())["address"]
        for n in range(workers):
            self._procs.append(
                subprocess.Popen(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        "--nthreads",
                        "1",
                        "--name",
                        f"w{n + 1}",
                        "--no-dashboard",
                        "--resources",
                        "spear_slot=1",
                    ],
                    stdout=self._logs[1],
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=workdir,
                )
            )
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(workers, timeout=START_TIMEOUT_S)

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                proc.wait()
        for log in self._logs:
            log.close()
