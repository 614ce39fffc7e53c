"""Functions the benchmark registers as ``python`` artifacts; spearlet's workers import them by name."""

from __future__ import annotations

from collections.abc import Iterator

#: The module path the server's workers import (the spearlet child gets the repository on PYTHONPATH).
MODULE = "bench.workloads"


def count(n: int) -> Iterator[int]:
    """Yield ``0 .. n-1``: one stream chunk each."""
    yield from range(n)
