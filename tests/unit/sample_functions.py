"""Functions the executor tests run as ``python`` artifacts (``sample_functions:<name>``).

Worker processes import this module through the test process's ``sys.path`` (pytest puts this directory
on it), so keep it free of test-only imports.
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


def add(a: int, b: int) -> int:
    return a + b


def countdown(n: int) -> Iterator[int]:
    yield from range(n, 0, -1)


def fail(message: str) -> None:
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


def identity(value: object) -> object:
    return value


def env_value(name: str) -> str | None:
    return os.environ.get(name)


def crash(code: int) -> None:
    os._exit(code)


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
