"""A real Dask cluster for the tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

``dask_cluster`` (session scope) is one scheduler and two single-threaded workers (``w1``, ``w2``, one
``spear_slot`` each, behind nannies that restart a killed worker), with ``allowed-failures=0`` as the Dask
executor expects. :class:`DaskCluster` also starts clusters of a test's own (the scheduler on a port it
keeps, so that it can be killed and started again).

Without ``distributed`` the tests that need it skip, saying how to install it; under CI they fail instead,
so that a broken install cannot pass for a green run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
START_TIMEOUT_S = 60.0
INSTALL_HINT = 'the Dask tests need distributed: pip install -e ".[dask]"'


def require_distributed() -> None:
    """Skip (fail under CI) when distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{INSTALL_HINT} (CI is set, so this fails instead of skipping)")
        pytest.skip(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    # Workers import the tests' workloads; their calls' processes take the workers' sys.path.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), env.get("PYTHONPATH", "")) if p)
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "0"
    env["DASK_DISTRIBUTED__ADMIN__LOW_LEVEL_LOG_LENGTH"] = "200"
    return env


def _dask_cli() -> str:
    return str(Path(sys.executable).with_name("dask"))


class DaskCluster:
    """A scheduler and workers as CLI processes; ``address`` reaches the scheduler."""

    def __init__(self, workdir: Path, workers: int = 2, port: int = 0) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler_file = workdir / "scheduler.json"
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self._env = _environ()
        self._names = [f"w{n + 1}" for n in range(workers)]

    def start(self) -> DaskCluster:
        self.start_scheduler()
        self.start_workers()
        return self

    def start_workers(self) -> None:
        """Start the workers (again: a worker that loses its scheduler shuts down)."""
        for name in self._names:
            self.workers[name] = self._spawn(
                "worker",
                self.address,
                "--nthreads",
                "1",
                "--name",
                name,
                "--no-dashboard",
                "--resources",
                "spear_slot=1",
                "--death-timeout",
                "120",
            )
        self.wait_workers(len(self._names))

    def start_scheduler(self) -> None:
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._spawn(
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--scheduler-file",
            str(self.scheduler_file),
            "--no-dashboard",
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.scheduler_file.exists():
            if self.scheduler.poll() is not None:
                raise RuntimeError(f"dask scheduler exited with {self.scheduler.returncode}")
            assert time.monotonic() < deadline, "the dask scheduler did not start"
            time.sleep(0.05)

    def kill_scheduler(self) -> None:
        if self.scheduler is not None:
            self.scheduler.kill()
            self.scheduler.wait()
            self.scheduler = None

    def wait_workers(self, count: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(count, timeout=START_TIMEOUT_S)

    def worker_pids(self) -> dict[str, int]:
        """The pid of each worker process (the nanny's child), by worker name."""
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            pids = client.run(os.getpid)
            info = client.scheduler_info(n_workers=-1)["workers"]
        return {str(info[address]["name"]): pid for address, pid in pids.items()}

    def _spawn(self, kind: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{kind}.log", "ab")  # noqa: SIM115
        with log:
            return subprocess.Popen(
                [_dask_cli(), kind, *args],
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def close(self) -> None:
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.workers.values(), self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.workdir.glob("*.log")))


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskCluster]:
    require_distributed()
    cluster = DaskCluster(tmp_path_factory.mktemp("dask"))
    try:
        cluster.start()
    except BaseException:
        cluster.close()
        raise
    yield cluster
    cluster.close()
