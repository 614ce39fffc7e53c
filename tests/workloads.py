"""Functions the tests run as ``python`` artifacts (``workloads:<name>``).

Worker processes import this module by name through the test process's ``sys.path`` (pytest's
``pythonpath`` setting puts ``tests/`` on it), so it imports nothing test-only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

not_callable = 42
#: Opened by the thread executor's tests (they share this module with the threads that run it).
gate = threading.Event()


def add(a: int, b: int = 0) -> int:
    return a + b


def square(x: float) -> float:
    return x * x


def double(x: object) -> object:
    return x * 2  # type: ignore[operator]


def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


def identity(value: object) -> object:
    return value


def count(n: int) -> Iterator[int]:
    yield from range(n)


def upto(n: int) -> Iterator[int]:
    yield from range(n)


def countdown(n: int) -> Iterator[int]:
    yield from range(n, 0, -1)


def fail(message: str = "boom") -> None:
    print("about to fail")
    raise ValueError(message)


def fail_midway(n: int) -> Iterator[int]:
    yield n
    raise RuntimeError("stopped midway")


def make_lock() -> object:
    return threading.Lock()


def print_lines(count: int, width: int = 10, stream: str = "stdout") -> int:
    out = sys.stdout if stream == "stdout" else sys.stderr
    for i in range(count):
        print(str(i).rjust(width, "."), file=out)
    return count


def shout(text: str) -> str:
    print(text.upper())
    print("to stderr", file=sys.stderr)
    return text


def getenv(name: str) -> str | None:
    return os.environ.get(name)


def spin() -> None:
    while True:
        pass


def sleep(seconds: float, then_print: str = "") -> float:
    time.sleep(seconds)
    if then_print:
        print(then_print)
    return seconds


def wait_for_gate(text: str) -> str:
    gate.wait(10)
    print(text)
    return text


def pid() -> int:
    return os.getpid()


def crash(code: int = 3) -> None:
    sys.stdout.flush()
    os._exit(code)


def crash_once(marker: str) -> str:
    """Dies the first time (no marker file yet), succeeds on the retry.

    The marker is claimed with an exclusive create, so of several calls racing on one marker in
    parallel workers exactly one dies.
    """
    try:
        with open(marker, "x") as handle:
            handle.write("crashed")
    except FileExistsError:
        return "recovered"
    os._exit(7)


def segfault() -> None:
    """Dereference NULL: the worker dies by SIGSEGV, as with a crashing C extension."""
    import ctypes

    ctypes.string_at(0)


def spawn_then_segfault(pid_file: str) -> None:
    """Start a grandchild (in the worker's process group), note its pid, then crash."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(pid_file, "w") as handle:
        handle.write(str(child.pid))
    segfault()


def flood(megabytes: int, stream: str = "stdout") -> int:
    """Print ``megabytes`` MiB of lines, as fast as print goes."""
    out = sys.stdout if stream == "stdout" else sys.stderr
    line = "x" * 1023
    for _ in range(megabytes * 1024):
        print(line, file=out)
    return megabytes


def allocate(megabytes: int) -> int:
    block = bytearray(megabytes << 20)
    for i in range(0, len(block), 4096):  # touch every page so that it is resident
        block[i] = 1
    return len(block)


def spawn_sleeper() -> int:
    """Start a grandchild (in the worker's process group) and return its pid."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    return child.pid


async def async_double(x: int) -> int:
    return 2 * x


class Tools:
    @staticmethod
    def double(x: int) -> int:
        return 2 * x


def blobs(count: int, size: int, progress: str) -> Iterator[bytes]:
    """Yield ``count`` chunks of ``size`` bytes as fast as the reader lets it; each starts with its number,
    and the file ``progress`` says how many have been handed over."""
    for i in range(count):
        yield i.to_bytes(4, "big") * (size // 4)
        with open(progress, "w") as handle:
            handle.write(str(i + 1))


def kill_host_once(marker: str) -> str:
    """The first time (no marker file yet), SIGKILL the process that started this one (a Dask worker,
    say) and wait to die with it; succeeds on the retry."""
    if not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write(str(os.getppid()))
        os.kill(os.getppid(), 9)
        time.sleep(60)
    return "recovered"


def print_pid_then_sleep(seconds: float) -> None:
    print(os.getpid(), flush=True)
    time.sleep(seconds)


def yield_then_wait(path: str) -> Iterator[str]:
    """Yield, then wait (30 s at most) for ``path`` to exist before yielding again: a reader that gets
    the first value before it creates the file sees the values as they are yielded."""
    yield "first"
    deadline = time.monotonic() + 30
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    yield "second"
