"""Regression tests for notebooks: assert on stats and execution DataFrames, with tolerances, and fail
with a small table of what was expected and what was found.

>>> from spear_sdk.testing import assert_stats, assert_executions
>>> assert_stats(client.stats(), completed=100, failed=0, success_rate=(99, None))
>>> df = client.executions()
>>> assert_executions(df, function="score", count=100, status="completed", p95_latency_ms=(None, 250))

An expected value is a number (equal within ``rel``/``abs``, as in ``pytest.approx``: the larger of the two
tolerances applies; with neither, counts must match exactly and other figures to a relative 1e-6) or a
``(low, high)`` range, inclusive, where ``None`` leaves a side open: ``(None, 250)`` is "at most 250".

Figures: ``total_executions``, ``completed``, ``failed``, ``cancelled``, ``timeout``, ``running``,
``pending`` (counts), ``success_rate`` (percent of finished executions that completed),
``average_latency_ms``, ``p50_latency_ms``, ``p95_latency_ms``, ``p99_latency_ms`` and ``max_latency_ms``
(run times of completed executions). ``assert_stats(stats, function="score", p95_latency_ms=(None, 250))``
checks one function's figures (a row of ``stats.by_function``).

Baselines (one run's figures kept in a JSON file, compared with the next run's): see
:func:`~spear_sdk.baselines.assert_baseline`, re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from ._status import STATUS_NAMES, TERMINAL
from .baselines import assert_baseline
from .function_stats import has_percentiles
from .models import Stats

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = ["Expected", "assert_baseline", "assert_executions", "assert_stats", "figures"]

Expected: TypeAlias = "float | tuple[float | None, float | None]"

_COUNTS = ("total_executions", "completed", "failed", "cancelled", "timeout", "running", "pending")
_PERCENTILES = ("p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms")
_UNITS = {"success_rate": " %"} | {name: " ms" for name in ("average_latency_ms", *_PERCENTILES)}
_DEFAULT_REL = 1e-6


def figures(source: Stats | pd.DataFrame, function: str | None = None) -> dict[str, float | None]:
    """The figures the assertions compare, from ``client.stats()`` or ``client.executions()`` (of one
    ``function`` only if given); ``None`` where there is nothing to compute one from (no completed
    execution has a latency, or stats have no running/pending count per function)."""
    if isinstance(source, Stats):
        return _stats_figures(source, function)
    if function is not None:
        if "task_name" not in source.columns:
            raise ValueError("the frame has no 'task_name' column; pass client.executions()")
        source = source[source["task_name"] == function]
    if not isinstance(source, pd.DataFrame):
        raise TypeError(f"expected client.stats() or client.executions(), not {type(source).__name__}")
    for column in ("status", "duration"):
        if column not in source.columns:
            raise ValueError(f"the frame has no {column!r} column; pass client.executions()")
    status = source["status"].astype("string")
    counts = {name: int((status == name).sum()) for name in STATUS_NAMES}
    finished = sum(counts[name] for name in TERMINAL)
    ms = (source.loc[status == "completed", "duration"].dropna().dt.total_seconds() * 1000).sort_values()
    latency = ms.to_numpy(dtype=float)
    return {
        "total_executions": len(source),
        **counts,
        "success_rate": 100 * counts["completed"] / finished if finished else 0.0,
        "average_latency_ms": float(latency.mean()) if len(latency) else None,
        "p50_latency_ms": float(ms.quantile(0.5)) if len(latency) else None,
        "p95_latency_ms": float(ms.quantile(0.95)) if len(latency) else None,
        "p99_latency_ms": float(ms.quantile(0.99)) if len(latency) else None,
        "max_latency_ms": float(latency[-1]) if len(latency) else None,
    }


def _stats_figures(stats: Stats, function: str | None) -> dict[str, float | None]:
    percentiles = has_percentiles(stats.response.execution_stats)
    if function is not None and not percentiles:
        raise TypeError(
            "the server's stats have no figures by function (it predates them); pass "
            "client.executions() instead"
        )
    table = stats.by_function
    if function is None:
        has_latency = stats.completed > 0 and percentiles
        return {
            **{name: getattr(stats, name) for name in _COUNTS},
            "success_rate": stats.success_rate,
            "average_latency_ms": stats.average_execution_time.total_seconds() * 1000,
            "p50_latency_ms": stats.p50_latency_ms if has_latency else None,
            "p95_latency_ms": stats.p95_latency_ms if has_latency else None,
            "p99_latency_ms": stats.p99_latency_ms if has_latency else None,
            "max_latency_ms": float(table["max_latency_ms"].max()) if has_latency else None,
        }
    rows = table[table["function"] == function]
    if rows.empty:
        known = ", ".join(table["function"].astype(str)) or "none"
        raise ValueError(f"no function {function!r} in these stats; functions: {known}")
    row = rows.iloc[0]

    def value(column: str) -> float | None:
        return None if pd.isna(row[column]) else float(row[column])

    return {
        "total_executions": int(row["executions"]),
        **{name: int(row[name]) for name in ("completed", "failed", "cancelled", "timeout")},
        "running": None,
        "pending": None,
        "success_rate": value("success_rate") or 0.0,
        "average_latency_ms": value("mean_latency_ms"),
        **{name: value(name) for name in _PERCENTILES},
    }


def assert_stats(
    stats: Stats | pd.DataFrame,
    *,
    total_executions: Expected | None = None,
    completed: Expected | None = None,
    failed: Expected | None = None,
    cancelled: Expected | None = None,
    timeout: Expected | None = None,
    running: Expected | None = None,
    pending: Expected | None = None,
    success_rate: Expected | None = None,
    average_latency_ms: Expected | None = None,
    p50_latency_ms: Expected | None = None,
    p95_latency_ms: Expected | None = None,
    p99_latency_ms: Expected | None = None,
    max_latency_ms: Expected | None = None,
    function: str | None = None,
    rel: float | None = None,
    abs: float | None = None,  # pytest.approx's name
) -> None:
    """Assert figures of ``stats`` (``client.stats()`` or an executions DataFrame), of one ``function``
    only if given; every figure given is checked and all failures are reported together."""
    expected = {
        name: value
        for name, value in {
            "total_executions": total_executions,
            "completed": completed,
            "failed": failed,
            "cancelled": cancelled,
            "timeout": timeout,
            "running": running,
            "pending": pending,
            "success_rate": success_rate,
            "average_latency_ms": average_latency_ms,
            "p50_latency_ms": p50_latency_ms,
            "p95_latency_ms": p95_latency_ms,
            "p99_latency_ms": p99_latency_ms,
            "max_latency_ms": max_latency_ms,
        }.items()
        if value is not None
    }
    if (
        isinstance(stats, Stats)
        and not has_percentiles(stats.response.execution_stats)
        and (asked := [n for n in _PERCENTILES if n in expected])
    ):
        raise TypeError(
            f"{', '.join(asked)}: the server's stats have no percentiles (it predates them); "
            "pass client.executions() instead"
        )
    what = "assert_stats" + (f"({function!r})" if function is not None else "")
    _verify(what, figures(stats, function), expected, rel, abs)


def assert_executions(
    executions: pd.DataFrame,
    *,
    function: str | None = None,
    count: Expected | None = None,
    status: str | Collection[str] | None = None,
    error_code: str | None = None,
    rel: float | None = None,
    abs: float | None = None,  # pytest.approx's name
    **figures_expected: Expected,
) -> None:
    """Assert on the executions of ``client.executions()``, those of ``function`` only if given.

    ``count``: how many there are; ``status``: the status (or statuses) every one of them has;
    ``error_code``: the code every failed one has; any other keyword is a figure of :func:`assert_stats`
    computed over them (``completed=10``, ``p95_latency_ms=(None, 250)``, ...).
    """
    frame = executions
    if function is not None:
        if "task_name" not in frame.columns:
            raise ValueError("the frame has no 'task_name' column; pass client.executions()")
        frame = frame[frame["task_name"] == function]
    unknown = sorted(set(figures_expected) - set(_COUNTS) - set(_UNITS))
    if unknown:
        raise TypeError(f"unknown figure {unknown[0]!r}; figures are {', '.join([*_COUNTS, *_UNITS])}")
    figured = figures(frame)
    found: dict[str, float | None] = {}
    expected: dict[str, Expected] = {}
    if count is not None:
        found["count"] = len(frame)
        expected["count"] = count
    if status is not None:
        allowed = {status} if isinstance(status, str) else set(status)
        label = f"not {'/'.join(sorted(allowed))}"
        found[label] = int((~frame["status"].astype("string").isin(allowed)).sum())
        expected[label] = 0
    if error_code is not None:
        failed = frame[frame["status"].astype("string") != "completed"]
        label = f"error_code other than {error_code}"
        found[label] = int((failed["error_code"].astype("string") != error_code).sum())
        expected[label] = 0
    for name, value in figures_expected.items():
        found[name] = figured[name]
        expected[name] = value
    what = "assert_executions" + (f"({function!r})" if function is not None else "")
    _verify(what, found, expected, rel, abs)


@dataclass(frozen=True)
class _Check:
    figure: str
    expected: str
    actual: str
    ok: bool


def _verify(
    what: str,
    found: dict[str, float | None],
    expected: dict[str, Expected],
    rel: float | None,
    tolerance: float | None,
) -> None:
    checks = [_check(name, found[name], value, rel, tolerance) for name, value in expected.items()]
    failures = [c for c in checks if not c.ok]
    if failures:
        raise AssertionError(_table(what, checks, len(failures), rel, tolerance))


def _check(
    name: str, actual: float | None, expected: Expected, rel: float | None, tolerance: float | None
) -> _Check:
    unit = _UNITS.get(name, "")
    shown = "n/a" if actual is None else _number(actual, unit)
    if isinstance(expected, tuple):
        low, high = expected
        ok = actual is not None and (low is None or actual >= low) and (high is None or actual <= high)
        return _Check(name, _range(low, high, unit), shown, ok)
    if rel is None and tolerance is None:
        allowed = 0.0 if name not in _UNITS else _DEFAULT_REL * math.fabs(expected)
    else:
        allowed = max((rel or 0.0) * math.fabs(expected), tolerance or 0.0)
    ok = actual is not None and math.fabs(actual - expected) <= allowed
    plus_minus = (
        f" ± {_number(allowed, unit)}" if allowed and (rel is not None or tolerance is not None) else ""
    )
    return _Check(name, _number(expected, "" if plus_minus else unit) + plus_minus, shown, ok)


def _range(low: float | None, high: float | None, unit: str) -> str:
    if low is None and high is None:
        return "anything"
    if low is None:
        return f"<= {_number(high, unit)}"
    if high is None:
        return f">= {_number(low, unit)}"
    return f"{_number(low, '')} to {_number(high, unit)}"


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    text = str(int(value)) if float(value).is_integer() else f"{value:.1f}" if unit else f"{value:.4g}"
    return text + unit


def _table(what: str, checks: list[_Check], failed: int, rel: float | None, tolerance: float | None) -> str:
    rows = [
        ("", "figure", "expected", "actual"),
        *(("ok" if c.ok else "FAILED", c.figure, c.expected, c.actual) for c in checks),
    ]
    # The actual values come last, so that their widths (which vary) shift nothing else.
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"{what}: {failed} of {len(checks)} checks failed"]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    ]
    if rel is not None or tolerance is not None:
        lines.append(f"  (tolerance: rel={rel}, abs={tolerance})")
    return "\n".join(line.rstrip() for line in lines)
