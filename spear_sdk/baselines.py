"""Baselines: one run's figures per function kept in a readable JSON file, and the next run compared with
them within tolerances.

>>> from spear_sdk.testing import assert_baseline
>>> assert_baseline(client.stats(), "baselines/scoring.json")            # writes it the first time
>>> assert_baseline(client.stats(), "baselines/scoring.json", rel=0.3)   # later: compares

A figure regresses only when it got worse: latency up by more than ``rel`` of the baseline AND more than
``abs`` milliseconds (so 1.0 ms against 1.4 ms is noise, not a regression), success rate down by more than
``success_rate_drop`` percentage points, memory up by more than ``rel`` and 1 MiB. ``count`` is recorded and
compared only when asked for (``metrics=[..., "count"]``), exactly. A function of the baseline that did not
run fails; a new one is shown, not failed.

Updating: a missing file is written; ``SPEAR_UPDATE_BASELINES=1`` (or pytest's
``--spear-update-baselines``) rewrites every file asked about instead of comparing.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

__all__ = [
    "DEFAULT_METRICS",
    "FIGURES",
    "BaselineRegression",
    "BaselineResult",
    "Comparison",
    "assert_baseline",
    "compare",
    "figures_of",
    "read_baseline",
    "update_requested",
    "write_baseline",
]

#: What a baseline keeps of each function.
FIGURES = ("count", "success_rate", "p50_latency_ms", "p95_latency_ms", "mean_memory_bytes")
#: What is compared unless ``metrics`` says otherwise.
DEFAULT_METRICS = ("success_rate", "p50_latency_ms", "p95_latency_ms")
DEFAULT_REL = 0.5
DEFAULT_ABS_MS = 5.0
DEFAULT_SUCCESS_RATE_DROP = 1.0
MEMORY_FLOOR_BYTES = 1 << 20
UPDATE_ENV = "SPEAR_UPDATE_BASELINES"
FORMAT = "spear-baseline/1"

Figures = dict[str, dict[str, float | None]]
Verdict = Literal["ok", "improved", "REGRESSED", "new", "MISSING", "changed"]

#: Called with every baseline written or rewritten (the pytest plugin lists them in its summary).
written_listeners: list[Callable[[BaselineResult], None]] = []
#: Above 0 while a pytest run with ``--spear-update-baselines`` is on (set by the plugin).
forced_updates = 0


def update_requested() -> bool:
    """Whether baselines are to be rewritten rather than compared: ``SPEAR_UPDATE_BASELINES=1`` or pytest's
    ``--spear-update-baselines``."""
    return forced_updates > 0 or os.environ.get(UPDATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# -- figures of a run -----------------------------------------------------------------------------------


def figures_of(source: Any) -> Figures:
    """Each function's baseline figures from ``client.stats()``, its ``by_function`` frame, an executions
    frame (``client.executions()``) or a baseline already read (a mapping)."""
    from .models import Stats

    if isinstance(source, Stats):
        return _from_function_frame(source.by_function)
    if isinstance(source, Mapping):
        functions = source.get("functions", source)
        return {str(name): {k: _number(v) for k, v in row.items()} for name, row in functions.items()}
    if isinstance(source, pd.DataFrame):
        if {"function", "p95_latency_ms"} <= set(source.columns):
            return _from_function_frame(source)
        if {"task_name", "status", "duration"} <= set(source.columns):
            return _from_executions(source)
        raise ValueError(
            "the frame is neither client.stats().by_function nor client.executions(): "
            f"it has the columns {', '.join(map(str, source.columns))}"
        )
    raise TypeError(
        "expected client.stats(), stats.by_function, client.executions() or a baseline, "
        f"not {type(source).__name__}"
    )


def _from_function_frame(frame: pd.DataFrame) -> Figures:
    figures: Figures = {}
    for row in frame.to_dict("records"):
        finished = sum(int(row[name]) for name in ("completed", "failed", "cancelled", "timeout"))
        if not finished:
            continue  # nothing finished: no figure to keep
        figures[str(row["function"])] = {
            "count": float(finished),
            "success_rate": _number(row["success_rate"]),
            "p50_latency_ms": _number(row["p50_latency_ms"]),
            "p95_latency_ms": _number(row["p95_latency_ms"]),
            "mean_memory_bytes": _number(row["mean_memory_bytes"]),
        }
    return figures


def _from_executions(frame: pd.DataFrame) -> Figures:
    status = frame["status"].astype("string")
    finished = frame[status.isin(["completed", "failed", "cancelled", "timeout"]).fillna(False)]
    names = finished["task_name"].astype("string").fillna("")
    if "function_name" in finished.columns:
        entry = finished["function_name"].astype("string").fillna("")
        named = (entry != "") & (entry != names)
        names = names.where(~named, names + ":" + entry)
    figures: Figures = {}
    for name, rows in finished.groupby(names, sort=True):
        done = rows[rows["status"].astype("string") == "completed"]
        ms = done["duration"].dropna().dt.total_seconds() * 1000
        memory = done["memory_used_bytes"].dropna() if "memory_used_bytes" in done.columns else pd.Series()
        figures[str(name)] = {
            "count": float(len(rows)),
            "success_rate": 100.0 * len(done) / len(rows),
            "p50_latency_ms": float(ms.quantile(0.5)) if len(ms) else None,
            "p95_latency_ms": float(ms.quantile(0.95)) if len(ms) else None,
            "mean_memory_bytes": float(memory.mean()) if len(memory) else None,
        }
    return figures


def _number(value: Any) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)
    return None if math.isnan(number) else number


# -- the file -----------------------------------------------------------------------------------------


def write_baseline(path: str | os.PathLike[str], figures: Figures) -> Path:
    """Write ``figures`` as a baseline file (indented JSON, functions sorted); returns its path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "format": FORMAT,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "functions": {
            name: {figure: _rounded(figures[name].get(figure)) for figure in FIGURES}
            for name in sorted(figures)
        },
    }
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    temporary.replace(target)  # a reader never sees half a file
    return target


def read_baseline(path: str | os.PathLike[str]) -> Figures:
    """The figures of a baseline file; a clear error for a file that is not one."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a baseline: not JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f'{path} is not a baseline: no "format": "{FORMAT}"')
    return figures_of(document)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# -- comparing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    function: str
    metric: str
    baseline: float | None
    current: float | None
    allowed: str
    verdict: Verdict


@dataclass(frozen=True)
class Comparison:
    """Every compared figure, baseline against now."""

    rows: tuple[Row, ...]

    @property
    def regressions(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.verdict in ("REGRESSED", "MISSING", "changed"))

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def to_frame(self) -> pd.DataFrame:
        frame: pd.DataFrame = pd.DataFrame(
            [
                {
                    "function": r.function,
                    "metric": r.metric,
                    "baseline": r.baseline,
                    "current": r.current,
                    "change": _change(r.baseline, r.current),
                    "allowed": r.allowed,
                    "verdict": r.verdict,
                }
                for r in self.rows
            ],
            columns=["function", "metric", "baseline", "current", "change", "allowed", "verdict"],
        )
        return frame

    def table(self) -> str:
        """The rows as aligned text (for a failure message or a terminal)."""
        header = ("function", "metric", "baseline", "now", "change", "allowed", "")
        cells = [header] + [
            (
                r.function,
                r.metric,
                _show(r.metric, r.baseline),
                _show(r.metric, r.current),
                _change(r.baseline, r.current),
                r.allowed,
                r.verdict,
            )
            for r in self.rows
        ]
        widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
        )

    def markdown(self) -> str:
        lines = [
            "| function | metric | baseline | now | change | allowed | verdict |",
            "|---|---|---:|---:|---:|---|---|",
        ]
        lines += [
            f"| {r.function} | {r.metric} | {_show(r.metric, r.baseline)} | {_show(r.metric, r.current)} | "
            f"{_change(r.baseline, r.current)} | {r.allowed} | {r.verdict} |"
            for r in self.rows
        ]
        return "\n".join(lines)


def compare(
    baseline: Figures,
    current: Figures,
    *,
    rel: float = DEFAULT_REL,
    abs: float = DEFAULT_ABS_MS,  # pytest.approx's name
    success_rate_drop: float = DEFAULT_SUCCESS_RATE_DROP,
    metrics: Sequence[str] | None = None,
    functions: Iterable[str] | None = None,
) -> Comparison:
    """Compare each function's figures with the baseline's (see the module's doc for the rules)."""
    chosen = tuple(metrics) if metrics is not None else DEFAULT_METRICS
    unknown = [m for m in chosen if m not in FIGURES]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; metrics are {', '.join(FIGURES)}")
    if rel < 0 or abs < 0 or success_rate_drop < 0:
        raise ValueError("rel, abs and success_rate_drop must not be negative")
    names = sorted(set(baseline) | set(current)) if functions is None else list(functions)
    rows: list[Row] = []
    for name in names:
        before, now = baseline.get(name), current.get(name)
        if before is None and now is None:
            known = ", ".join(sorted(set(baseline) | set(current)))
            raise ValueError(f"no function {name!r} in the baseline or now; functions: {known}")
        for metric in chosen:
            old = before.get(metric) if before is not None else None
            new = now.get(metric) if now is not None else None
            if before is None:
                rows.append(Row(name, metric, None, new, "", "new"))
            elif now is None:
                rows.append(Row(name, metric, old, None, "", "MISSING"))
            else:
                rows.append(_judge(name, metric, old, new, rel, abs, success_rate_drop))
    return Comparison(tuple(rows))


def _judge(
    name: str, metric: str, old: float | None, new: float | None, rel: float, floor: float, drop: float
) -> Row:
    if old is None or new is None:  # no completed execution on one side: nothing to compare
        verdict: Verdict = "ok" if old is None else "MISSING"
        return Row(name, metric, old, new, "", verdict)
    if metric == "count":
        return Row(name, metric, old, new, "equal", "ok" if new == old else "changed")
    if metric == "success_rate":
        worse, better, allowed = old - new, new > old, drop
        text = f"-{drop:g} pts"
    else:
        margin = max(rel * old, floor if metric.endswith("_ms") else MEMORY_FLOOR_BYTES)
        worse, better, allowed = new - old, new < old, margin
        text = f"+{_show(metric, margin)}"
    if worse > allowed:
        verdict = "REGRESSED"
    elif better and math.fabs(new - old) > allowed:
        verdict = "improved"
    else:
        verdict = "ok"
    return Row(name, metric, old, new, text, verdict)


def _show(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    if metric == "success_rate":
        return f"{value:.1f} %"
    if metric.endswith("_bytes"):
        return f"{value / (1 << 20):.1f} MiB"
    return f"{value:g}"


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return ""
    if old == 0:
        return "+0 %" if new == 0 else "new > 0"
    return f"{100 * (new - old) / math.fabs(old):+.0f} %"


# -- the assertion ------------------------------------------------------------------------------------


class BaselineRegression(AssertionError):
    """:func:`assert_baseline` found a regression; ``comparison`` has every figure compared."""

    def __init__(self, message: str, comparison: Comparison) -> None:
        super().__init__(message)
        self.comparison = comparison


@dataclass(frozen=True)
class BaselineResult:
    """What :func:`assert_baseline` did: ``action`` is "written", "updated" or "compared"."""

    path: Path
    action: Literal["written", "updated", "compared"]
    comparison: Comparison | None = None

    @property
    def message(self) -> str:
        if self.action == "written":
            return f"baseline written: {self.path} (no baseline was there)"
        if self.action == "updated":
            return f"baseline updated: {self.path} (updating was asked)"
        assert self.comparison is not None
        return f"baseline {self.path}: no regression\n{self.comparison.table()}"

    def __repr__(self) -> str:
        return f"<BaselineResult {self.message}>"


def assert_baseline(
    stats_or_frame: Any,
    path: str | os.PathLike[str],
    *,
    rel: float = DEFAULT_REL,
    abs: float = DEFAULT_ABS_MS,  # pytest.approx's name
    success_rate_drop: float = DEFAULT_SUCCESS_RATE_DROP,
    metrics: Sequence[str] | None = None,
    functions: Iterable[str] | None = None,
    update: bool | None = None,
) -> BaselineResult:
    """Compare a run's figures per function (``client.stats()``, ``stats.by_function`` or
    ``client.executions()``) with the baseline file ``path``: raise :class:`AssertionError` with the table
    of every figure, baseline against now, when one regressed. Write the file instead when it is missing
    or updating was asked (``update=True``, ``SPEAR_UPDATE_BASELINES=1``, ``--spear-update-baselines``).

    ``functions`` limits both the comparison and what is written to those functions."""
    current = figures_of(stats_or_frame)
    chosen = list(functions) if functions is not None else None
    target = Path(path)
    if update is None:
        update = update_requested()
    if update or not target.exists():
        kept = current if chosen is None else {n: current[n] for n in chosen if n in current}
        if chosen is not None and (missing := [n for n in chosen if n not in current]):
            raise ValueError(f"no figures of {', '.join(map(repr, missing))} to write to {target}")
        action: Literal["written", "updated"] = "written" if not target.exists() else "updated"
        write_baseline(target, kept)
        result = BaselineResult(target, action)
        for listener in list(written_listeners):
            listener(result)
        return result
    comparison = compare(
        read_baseline(target),
        current,
        rel=rel,
        abs=abs,
        success_rate_drop=success_rate_drop,
        metrics=metrics,
        functions=chosen,
    )
    if comparison.regressed:
        names = sorted({r.function for r in comparison.regressions})
        raise BaselineRegression(
            f"assert_baseline: {', '.join(names)} regressed against {target} "
            f"(rel={rel:g}, abs={abs:g} ms, success_rate_drop={success_rate_drop:g})\n"
            f"{comparison.table()}\n"
            f"(to accept these figures: {UPDATE_ENV}=1 or pytest --spear-update-baselines)",
            comparison,
        )
    return BaselineResult(target, "compared", comparison)
