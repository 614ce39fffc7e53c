"""Plots of stats and execution frames from a real lab, drawn with matplotlib's Agg backend."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # no display here: draw to memory, whatever MPLBACKEND says

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from sdk_support import LAB_OPTIONS

import spear_sdk
from spear_sdk import plots
from spear_sdk.frames import EXECUTION_SCHEMA

NAMES = ["plot-flaky", "plot-ok"]


@pytest.fixture(scope="module")
def executions() -> pd.DataFrame:
    """Ten completed runs of ``plot-ok``; ``plot-flaky`` completes three of six."""
    client = spear_sdk.start_lab(**LAB_OPTIONS).client
    client.function(lambda x: x, name="plot-ok").map(range(10), progress=False)
    flaky = client.function(lambda x: 1 // (x % 2), name="plot-flaky")
    spear_sdk.wait([flaky.submit(x) for x in range(6)])
    frame = client.executions()
    return frame[frame["task_name"].isin(NAMES)].reset_index(drop=True)


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_stats_plot_shows_executions_by_status(client: spear_sdk.Client, executions: pd.DataFrame) -> None:
    stats = client.stats()
    ax = stats.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        "pending", "running", "completed", "failed", "cancelled", "timeout",
    ]  # fmt: skip
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == [
        stats.pending,
        stats.running,
        stats.completed,
        stats.failed,
        stats.cancelled,
        stats.timeout,
    ]
    assert ax.get_title() == f"{stats.total_executions} executions, success rate {stats.success_rate:.1f} %"
    assert [t.get_text() for t in ax.texts] == [str(int(h)) for h in heights]


def test_plots_draw_on_a_given_axes(client: spear_sdk.Client, executions: pd.DataFrame) -> None:
    _, axes = plt.subplots(1, 2)
    assert client.stats().plot(ax=axes[0]) is axes[0]
    assert plots.success_rate_by_function(executions, ax=axes[1]) is axes[1]


def test_latency_by_function_has_one_box_per_function(executions: pd.DataFrame) -> None:
    ax = plots.latency_by_function(executions)
    assert [t.get_text() for t in ax.get_xticklabels()] == NAMES
    assert ax.get_ylabel() == "duration (ms)" and ax.get_title() == "latency by function"
    medians = [line for line in ax.get_lines() if line.get_color() == "C1"]  # boxplot's median lines
    assert len(medians) == len(NAMES)


def test_executions_over_time_stacks_statuses(executions: pd.DataFrame) -> None:
    ax = plots.executions_over_time(executions, freq="1s")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["completed", "failed"]
    assert sum(bar.get_height() for bar in ax.patches) == len(executions) == 16
    assert ax.get_ylabel() == "executions per 1 s"
    assert plots.executions_over_time(executions).get_ylabel().startswith("executions per ")


def test_success_rate_by_function(executions: pd.DataFrame) -> None:
    ax = plots.success_rate_by_function(executions)
    assert [t.get_text() for t in ax.get_yticklabels()] == NAMES
    assert [bar.get_width() for bar in ax.patches] == [50.0, 100.0]
    assert [t.get_text() for t in ax.texts] == ["50.0 %", "100.0 %"]
    assert ax.get_xlim() == (0, 100)


def test_frames_without_what_a_plot_needs_are_refused(executions: pd.DataFrame) -> None:
    empty = pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in EXECUTION_SCHEMA.items()})
    for plot in (plots.latency_by_function, plots.executions_over_time, plots.success_rate_by_function):
        with pytest.raises(ValueError, match="no executions to plot"):
            plot(empty)
    with pytest.raises(ValueError, match="no column 'task_name'"):
        plots.latency_by_function(executions.drop(columns=["task_name"]))
    with pytest.raises(ValueError, match="no completed executions"):
        plots.latency_by_function(executions[executions["status"] == "failed"])
    with pytest.raises(TypeError, match="DataFrame"):
        plots.success_rate_by_function(executions.to_dict())  # type: ignore[arg-type]
