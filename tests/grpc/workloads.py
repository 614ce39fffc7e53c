"""Functions the gRPC tests register as ``python`` artifacts (workers import this module by name)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator


def square(x: float) -> float:
    return x * x


def add(a: int, b: int = 0) -> int:
    return a + b


def echo(*args: object, **kwargs: object) -> dict[str, object]:
    return {"args": list(args), "kwargs": kwargs}


def identity(value: object) -> object:
    return value


def count(n: int) -> Iterator[int]:
    yield from range(n)


def fail(message: str = "boom") -> None:
    print("about to fail")
    raise ValueError(message)


def spin() -> None:
    while True:
        pass


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def pid() -> int:
    return os.getpid()


def crash(code: int = 3) -> None:
    sys.stdout.flush()
    os._exit(code)


def crash_once(marker: str) -> str:
    """Dies the first time (no marker file yet), succeeds on the retry."""
    if not os.path.exists(marker):
        with open(marker, "w") as handle:
            handle.write("crashed")
        os._exit(7)
    return "recovered"


def getenv(name: str) -> str | None:
    return os.environ.get(name)


def shout(text: str) -> str:
    print(text.upper())
    print("to stderr", file=sys.stderr)
    return text


def double(x: object) -> object:
    return x * 2  # type: ignore[operator]


def upto(n: int) -> Iterator[int]:
    yield from range(n)
