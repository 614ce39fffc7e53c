"""Alert rules against a real lab: client.alerts (sync and async), and the panel's alert section."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

import spear_sdk
from spear_sdk import Alert
from spear_sdk.alerts import BREACH_COLUMNS


def slow(x: int) -> int:
    import time

    time.sleep(0.03)
    return x


@pytest.fixture
def views() -> Iterator[list[Any]]:
    made: list[Any] = []
    yield made
    for view in made:
        view.close()


@pytest.fixture
def workload(client: spear_sdk.Client) -> None:
    client.function(slow, name="alerts-slow").map(range(6), progress=False)
    picky = client.function(lambda x: 1 // x, name="alerts-picky")
    for x in (0, 1, 1, 1):
        with contextlib.suppress(spear_sdk.errors.RemoteFunctionError):
            picky(x)


def test_rules_are_checked_when_made() -> None:
    with pytest.raises(ValueError, match="unknown metric 'p96_latency_ms'"):
        Alert("p96_latency_ms", ">", 1)
    with pytest.raises(ValueError, match="unknown operator '=>'"):
        Alert("failed", "=>", 1)
    with pytest.raises(ValueError, match="not a duration"):
        Alert("failed", ">", 1, window="five minutes")
    with pytest.raises(ValueError, match="positive duration"):
        Alert("failed", ">", 1, window=dt.timedelta(0))
    with pytest.raises(TypeError, match="threshold must be a number"):
        Alert("failed", ">", "1")  # type: ignore[arg-type]
    assert Alert("p95_latency_ms", ">", 250, window="5min").window_s == 300
    assert str(Alert("failed", ">=", 1, function="f")) == "f: failed >= 1"


@pytest.mark.usefixtures("workload")
def test_client_alerts_lists_breaches_and_keeps_their_since(client: spear_sdk.Client) -> None:
    rules = [
        Alert("p50_latency_ms", ">", 20, function="alerts-slow", window="10min"),
        Alert("error_rate", ">", 10, function="alerts-picky"),
        Alert("success_rate", "<", 50, function="alerts-picky"),  # 75 %: no breach
        Alert("p95_latency_ms", ">", 60_000, window=dt.timedelta(hours=1)),  # nothing is that slow
    ]
    breaches = client.alerts(rules)
    assert list(breaches.columns) == BREACH_COLUMNS
    found = {(row.function, row.metric): row for row in breaches.itertuples()}
    assert set(found) == {("alerts-slow", "p50_latency_ms"), ("alerts-picky", "error_rate")}
    assert found["alerts-slow", "p50_latency_ms"].value >= 30
    assert found["alerts-picky", "error_rate"].value == pytest.approx(25.0)
    assert found["alerts-slow", "p50_latency_ms"].window == pd.Timedelta(minutes=10)
    again = client.alerts(rules)
    assert list(again["since"]) == list(breaches["since"])  # still on: the same breach
    assert client.alerts([Alert("failed", ">", 1000)]).empty
    with pytest.raises(TypeError, match=r"spear_sdk\.Alert"):
        client.alerts(["p95 > 3"])  # type: ignore[list-item]


@pytest.mark.usefixtures("workload")
async def test_async_client_alerts_the_same(lab: spear_sdk.Lab) -> None:
    async with spear_sdk.AsyncClient(lab.address) as client:
        breaches = await client.alerts([Alert("failed", ">=", 1, function="alerts-picky")])
    assert list(breaches["function"]) == ["alerts-picky"] and breaches["value"].iloc[0] >= 1


@pytest.mark.usefixtures("workload")
def test_the_panel_shows_breaches_and_calls_on_alert_once_per_new_breach(
    client: spear_sdk.Client, views: list[Any]
) -> None:
    told: list[spear_sdk.Breach] = []
    rules = [Alert("failed", ">=", 2, function="alerts-panel")]
    flaky = client.function(lambda x: 1 // x, name="alerts-panel")
    panel = client.panel(alerts=rules, on_alert=told.append)
    views.append(panel)
    html = panel._repr_mimebundle_()["text/html"]
    assert 'class="spear-alert-badge"' in html and ">no alerts<" in html and told == []

    for x in (0, 0, 1):
        with contextlib.suppress(spear_sdk.errors.RemoteFunctionError):
            flaky(x)
    state = panel.refresh()
    assert [(b.function, b.metric, b.value) for b in state.alerts or ()] == [("alerts-panel", "failed", 2.0)]
    assert [(b.function, b.value) for b in told] == [("alerts-panel", 2.0)]
    html = panel._repr_mimebundle_()["text/html"]
    assert re.search(r'class="spear-alerts" data-count="1"', html) and ">1 alert<" in html
    assert re.search(
        r'<li class="spear-alert" data-function="alerts-panel"[^>]*>alerts-panel: failed = 2 &gt;= 2', html
    )
    assert list(panel.alerts["function"]) == ["alerts-panel"]

    panel.refresh()
    assert len(told) == 1  # the same breach: told once
    plain = client.panel()
    views.append(plain)
    assert "spear-alerts" not in plain._repr_mimebundle_()["text/html"]
    with pytest.raises(TypeError, match=r"spear_sdk\.Alert"):
        client.panel(alerts=[("failed", ">", 1)])  # type: ignore[list-item]


@pytest.mark.usefixtures("workload")
def test_the_panel_shows_each_functions_percentiles(client: spear_sdk.Client, views: list[Any]) -> None:
    panel = client.panel()
    views.append(panel)
    p50, p95, p99 = panel.state.latency["alerts-slow"]
    assert 30 <= p50 <= p95 <= p99
    assert re.search(
        r'class="spear-latency"[^>]*>p50 \d+\.\d / p95 \d+\.\d / p99 \d+\.\d ms<',
        panel._repr_mimebundle_()["text/html"],
    )
