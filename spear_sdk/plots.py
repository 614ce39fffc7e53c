"""Plots of stats and execution DataFrames (matplotlib, from the ``lab`` extra, imported when first used).

Each helper draws on ``ax`` when given, else on a new figure, and returns the Axes, like pandas' ``plot``.
The frames are those of ``client.executions()`` (``frames.EXECUTION_SCHEMA``); a frame without the needed
columns, or without rows to show, raises ``ValueError`` saying so.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

import pandas as pd

from ._status import STATUS_COLOURS, STATUS_NAMES, TERMINAL

if TYPE_CHECKING:
    from matplotlib.axes import Axes

#: Bins of ``executions_over_time`` when no ``freq`` is given.
TIME_BINS = 30


class StatusCounts(Protocol):
    """What ``stats_counts`` reads: a count per status name, as ``models.Stats`` has them."""

    total_executions: int
    success_rate: float
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    timeout: int


def stats_counts(stats: StatusCounts, ax: Axes | None = None) -> Axes:
    """Executions by status as bars, the success rate in the title (``stats.plot()``)."""
    ax = _axes(ax)
    counts = {name: getattr(stats, name) for name in STATUS_NAMES}
    bars = ax.bar(list(counts), list(counts.values()), color=[STATUS_COLOURS[n] for n in counts])
    ax.bar_label(bars)
    ax.margins(y=0.15)  # room for the labels above the bars
    ax.set_ylabel("executions")
    ax.set_title(f"{stats.total_executions} executions, success rate {stats.success_rate:.1f} %")
    return ax


def latency_by_function(executions: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """The distribution of run times (ms) of completed executions, one box per function."""
    frame = _completed(_check(executions, ("task_name", "status", "duration")))
    if frame.empty:
        raise ValueError("no completed executions with a duration to plot")
    ms = frame["duration"].dt.total_seconds() * 1000
    groups = {str(name): ms[frame["task_name"] == name].to_numpy() for name in _names(frame["task_name"])}
    ax = _axes(ax)
    ax.boxplot(list(groups.values()), tick_labels=list(groups))
    ax.set_ylabel("duration (ms)")
    ax.set_title("latency by function")
    return ax


def executions_over_time(executions: pd.DataFrame, freq: str | None = None, ax: Axes | None = None) -> Axes:
    """How many executions finished per time bin (``freq``, e.g. ``"1s"``; by default a round step that
    cuts the span into about :data:`TIME_BINS`), stacked by status; unfinished ones count when created."""
    frame = _check(executions, ("created_at", "completed_at", "status"))
    when = frame["completed_at"].fillna(frame["created_at"]).dropna()
    if when.empty:
        raise ValueError("no executions with a creation time to plot")
    step = pd.Timedelta(freq) if freq is not None else _round_step((when.max() - when.min()) / TIME_BINS)
    table = pd.crosstab(when.dt.floor(step), frame.loc[when.index, "status"])
    present = [s for s in STATUS_NAMES if s in table.columns and table[s].sum() > 0]
    ax = _axes(ax)
    bottom = pd.Series(0, index=table.index)
    for status in present:
        days = step / pd.Timedelta(days=1)  # the unit of matplotlib's date axis
        ax.bar(table.index, table[status], bottom=bottom, width=days, align="edge",
               color=STATUS_COLOURS[status], label=status)  # fmt: skip
        bottom = bottom + table[status]
    from matplotlib import dates

    formatter = dates.ConciseDateFormatter(ax.xaxis.get_major_locator())  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_ylabel(f"executions per {_duration(step)}")
    ax.set_title("executions over time")
    ax.legend()
    return ax


#: Bin widths ``executions_over_time`` picks from.
_STEP_NAMES = "1ms 2ms 5ms 10ms 20ms 50ms 100ms 200ms 500ms 1s 2s 5s 10s 30s 1min 5min 10min 30min 1h 6h 1D"
_STEPS: list[pd.Timedelta] = [pd.Timedelta(s) for s in _STEP_NAMES.split()]


def _round_step(rough: pd.Timedelta) -> pd.Timedelta:
    return next((step for step in _STEPS if step >= rough), _STEPS[-1])


def _duration(step: pd.Timedelta) -> str:
    ms = step / pd.Timedelta(milliseconds=1)
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def success_rate_by_function(executions: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Completed / finished executions per function, in percent, as horizontal bars."""
    frame = _check(executions, ("task_name", "status"))
    finished = frame[frame["status"].isin(TERMINAL)]
    if finished.empty:
        raise ValueError("no finished executions to plot")
    names = _names(finished["task_name"])
    rates = [
        100 * float((finished.loc[finished["task_name"] == n, "status"] == "completed").mean()) for n in names
    ]
    ax = _axes(ax)
    bars = ax.barh(names, rates, color=STATUS_COLOURS["completed"])
    ax.bar_label(bars, labels=[f"{r:.1f} %" for r in rates], label_type="center", color="white")
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%)")
    ax.set_title("success rate by function")
    return ax


def _check(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected the DataFrame of client.executions(), not {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the frame has no column {', '.join(map(repr, missing))}; pass client.executions() "
            "(columns as in spear_sdk.frames.EXECUTION_SCHEMA)"
        )
    if frame.empty:
        raise ValueError("the frame has no executions to plot")
    return frame


def _completed(frame: pd.DataFrame) -> pd.DataFrame:
    completed: pd.DataFrame = frame[(frame["status"] == "completed") & frame["duration"].notna()]
    return completed


def _names(column: pd.Series) -> list[str]:
    return sorted(str(n) for n in column.dropna().unique())


def _axes(ax: Axes | None) -> Axes:
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new = plt.subplots(figsize=(6.4, 3.6), layout="constrained")
    return new
