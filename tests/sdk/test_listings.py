"""Listings and views of a lab with a history: the newest rows, time windows, measured durations, names
of executions known by id, the panel's latest rows and its header once the lab stopped."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pandas as pd
import pytest
from sdk_support import LAB_OPTIONS
from test_widgets import Traffic, traffic, until, views  # noqa: F401 - fixtures shared with the widget tests

import spear_sdk
from spear_sdk.widgets.monitor import RECENT, ExecutionFeed


def test_last_and_since_give_the_newest_rows_in_creation_order(client: spear_sdk.Client) -> None:
    ident = client.function(lambda x: x, name="listing-last")
    ident.map(range(30), progress=False)
    marker = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.002)  # the executions below are created strictly after the marker
    for x in range(3):
        ident(100 + x)

    every = client.executions(task=ident)
    last = client.executions(task=ident, last=5)
    assert list(last["execution_id"]) == list(every["execution_id"].iloc[-5:])
    assert last["created_at"].is_monotonic_increasing
    since = client.executions(task=ident, since=marker)
    assert list(since["execution_id"]) == list(every["execution_id"].iloc[-3:])
    assert len(client.executions(task=ident, since=dt.timedelta(hours=1))) == len(every) == 33
    assert list(client.executions(task=ident, since=marker, last=2)["execution_id"]) == list(
        every["execution_id"].iloc[-2:]
    )
    assert client.executions(last=0).empty
    with pytest.raises(ValueError, match="last"):
        client.executions(last=-1)
    with pytest.raises(ValueError, match=r"limit.*last"):
        client.executions(limit=3, last=3)
    with pytest.raises(TypeError, match="since"):
        client.executions(since="yesterday")  # type: ignore[arg-type]


def test_duration_is_at_the_resolution_measured(client: spear_sdk.Client) -> None:
    quick = client.function(lambda: None, name="listing-quick")
    for _ in range(5):
        quick()
    frame = client.executions(task=quick)
    assert (frame["duration"] == frame["completed_at"] - frame["started_at"]).all()
    assert (frame["duration"] % pd.Timedelta(milliseconds=1) != pd.Timedelta(0)).any()
    execution = client.execution(frame["execution_id"].iloc[-1])
    state = execution.info()
    assert state.duration == state.completed_at - state.started_at  # type: ignore[operator]


def test_an_execution_known_by_id_has_its_name(client: spear_sdk.Client) -> None:
    named = client.function(lambda: 1, name="listing-named")
    done = named.submit()
    done.result()
    found = client.execution(done.execution_id)
    assert found.name == "listing-named"
    assert repr(found) == "<Execution listing-named: completed>"


def test_the_panels_latest_executions_are_the_newest_from_the_first_refresh(client: spear_sdk.Client) -> None:
    from spear_sdk.widgets.monitor import Monitor

    fill = client.function(lambda x: x, name="listing-history")
    fill.map(range(40), progress=False)
    newest = client.executions(last=RECENT)
    monitor = Monitor(client._core, ExecutionFeed(rows_per_refresh=10))  # a long history, in miniature
    state = client._runtime.run(monitor.fetch())
    assert [r.execution_id for r in state.recent] == list(newest["execution_id"])[::-1]


async def test_a_stopped_labs_panel_does_not_read_healthy(
    traffic: Traffic,  # noqa: F811
    views: list[Any],  # noqa: F811
) -> None:
    own = spear_sdk.start_lab(**LAB_OPTIONS, max_queued=7)
    panel = own.panel(interval=30)
    views.append(panel)
    assert "healthy" in panel.children[0].value
    own.stop()
    await until(lambda: "stopped" in panel.children[0].value, 10, "the stopped header")
    header = panel.children[0].value
    assert "healthy" not in header and "spear-health-stopped" in header
