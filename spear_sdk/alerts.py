"""Alert rules on each function's figures: ``Alert("p95_latency_ms", ">", 250, function="score",
window="5min")`` is breached while score's p95 run time over the last five minutes is above 250 ms.

``client.alerts(rules)`` evaluates rules now and returns the breaches as a DataFrame; ``lab.panel(alerts=
rules, on_alert=callback)`` shows them live and calls ``callback(breach)`` once per new breach. A breach's
``since`` is when the evaluator (the client, or the panel) first saw it: a breach that clears and comes back
is a new one.
"""

from __future__ import annotations

import datetime as dt
import math
import operator
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from .function_stats import function_frame
from .wire import function_pb2

if TYPE_CHECKING:
    from ._core import Core

__all__ = ["METRICS", "OPERATORS", "Alert", "AlertTracker", "Breach", "breaches_frame", "check"]

#: What a rule can watch: the columns of ``Stats.by_function``, and ``error_rate`` (100 - success rate).
METRICS = (
    "executions",
    "completed",
    "failed",
    "cancelled",
    "timeout",
    "success_rate",
    "error_rate",
    "mean_latency_ms",
    "p50_latency_ms",
    "p95_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
    "mean_memory_bytes",
)
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
BREACH_COLUMNS = ["function", "metric", "op", "value", "threshold", "window", "since"]


@dataclass(frozen=True)
class Alert:
    """A rule: ``metric op threshold`` for ``function`` (every function when None), over the executions
    created in the last ``window`` (a timedelta, seconds, or a pandas string like "5min"; None: all)."""

    metric: str
    op: str
    threshold: float
    function: str | None = None
    window: dt.timedelta | float | str | None = None

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; metrics are {', '.join(METRICS)}")
        if self.op not in OPERATORS:
            raise ValueError(f"unknown operator {self.op!r}; operators are {' '.join(OPERATORS)}")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)):
            raise TypeError(f"threshold must be a number, not {type(self.threshold).__name__}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, not {self.threshold}")
        self.window_s  # noqa: B018 (validates the window now rather than at the first evaluation)

    @property
    def window_s(self) -> float:
        """The window in seconds; 0 for all executions."""
        window = self.window
        if window is None:
            return 0.0
        if isinstance(window, str):
            try:
                window = pd.Timedelta(window).to_pytimedelta()
            except ValueError:
                raise ValueError(f"window {window!r} is not a duration (try '5min', '1h')") from None
        seconds = window.total_seconds() if isinstance(window, dt.timedelta) else float(window)
        if not (math.isfinite(seconds) and seconds > 0):
            raise ValueError(f"window must be a positive duration, not {self.window!r}")
        return seconds

    def __str__(self) -> str:
        where = self.function or "any function"
        over = f" over {dt.timedelta(seconds=self.window_s)}" if self.window is not None else ""
        return f"{where}: {self.metric} {self.op} {self.threshold:g}{over}"


@dataclass(frozen=True)
class Breach:
    """A rule found true for one function."""

    rule: Alert
    function: str
    value: float
    since: pd.Timestamp

    @property
    def metric(self) -> str:
        return self.rule.metric

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def __str__(self) -> str:
        value = _show(self.metric, self.value)
        return f"{self.function}: {self.metric} = {value} {self.rule.op} {self.threshold:g}"


@dataclass
class AlertTracker:
    """Remembers which breaches are on, and since when; one per evaluator (a client, a panel)."""

    _since: dict[tuple[Alert, str], pd.Timestamp] = field(default_factory=dict)

    def update(self, found: Iterable[tuple[Alert, str, float]]) -> tuple[list[Breach], list[Breach]]:
        """The breaches on now, and those among them that are new."""
        now = pd.Timestamp.now(tz="UTC")
        active: list[Breach] = []
        new: list[Breach] = []
        seen: set[tuple[Alert, str]] = set()
        for rule, function, value in found:
            key = (rule, function)
            seen.add(key)
            if key not in self._since:
                self._since[key] = now
                new.append(Breach(rule, function, value, now))
                active.append(new[-1])
            else:
                active.append(Breach(rule, function, value, self._since[key]))
        for cleared in set(self._since) - seen:
            del self._since[cleared]
        return active, new


async def check(
    core: Core, rules: Sequence[Alert], tracker: AlertTracker
) -> tuple[list[Breach], list[Breach]]:
    """Evaluate ``rules`` on the server's figures now (one GetStats per distinct window)."""
    for rule in rules:
        if not isinstance(rule, Alert):
            raise TypeError(f"rules are spear_sdk.Alert objects, not {type(rule).__name__}")
    tables: dict[float, pd.DataFrame] = {}
    for window in sorted({rule.window_s for rule in rules}):
        response = await core.connection.call(
            core.connection.functions.GetStats,
            function_pb2.GetStatsRequest(
                include_execution_stats=True, time_range_seconds=window, only_function_stats=True
            ),
        )
        tables[window] = function_frame(response.execution_stats)
    return tracker.update(_breached(rules, tables))


def _breached(rules: Sequence[Alert], tables: dict[float, pd.DataFrame]) -> list[tuple[Alert, str, float]]:
    found = []
    for rule in rules:
        table = tables[rule.window_s]
        if rule.function is not None:
            table = table[table["function"] == rule.function]
        test = OPERATORS[rule.op]
        for row in table.to_dict("records"):
            value = _value(row, rule.metric)
            if value is not None and test(value, rule.threshold):
                found.append((rule, str(row["function"]), value))
    return found


def _value(row: Mapping[Any, Any], metric: str) -> float | None:
    if metric == "error_rate":
        rate = row["success_rate"]
        return None if pd.isna(rate) else 100.0 - float(rate)
    value = row[metric]
    return None if pd.isna(value) else float(value)


def breaches_frame(breaches: Sequence[Breach]) -> pd.DataFrame:
    """One row per breach: function, metric, op, value, threshold, window (seconds, 0 = all), since."""
    frame = pd.DataFrame(
        [
            {
                "function": b.function,
                "metric": b.metric,
                "op": b.rule.op,
                "value": b.value,
                "threshold": float(b.threshold),
                "window": pd.Timedelta(seconds=b.rule.window_s),
                "since": b.since,
            }
            for b in breaches
        ],
        columns=BREACH_COLUMNS,
    )
    frame = frame.astype({"function": "string", "metric": "string", "op": "string", "value": "float64"})
    result: pd.DataFrame = frame.astype({"threshold": "float64"})
    return result


_trackers: weakref.WeakKeyDictionary[Any, AlertTracker] = weakref.WeakKeyDictionary()


def tracker_for(owner: Any) -> AlertTracker:
    """The tracker of a client, so that repeated ``client.alerts(rules)`` keep each breach's ``since``."""
    tracker = _trackers.get(owner)
    if tracker is None:
        tracker = _trackers[owner] = AlertTracker()
    return tracker


def _show(metric: str, value: float) -> str:
    if metric.endswith("_ms"):
        return f"{value:.1f} ms"
    if metric.endswith("_rate"):
        return f"{value:.1f} %"
    return f"{value:g}"
