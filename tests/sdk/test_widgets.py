"""Live views against a real lab: the panel, watches and progress bars, with the comm messages ipywidgets
really sends recorded at the ``comm`` package level (where ipykernel plugs in its own comm)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import comm
import ipywidgets
import pytest
from comm.base_comm import BaseComm

import spear_sdk
from spear_sdk._progress import ProgressModel, await_showing, run_showing
from spear_sdk.widgets.budget import MESSAGES_PER_SECOND, Budget
from spear_sdk.widgets.progress_widget import WidgetView

#: The traffic test keeps invoking the fastest function there is, in maps of BATCH calls, until the panel
#: (refreshing ten times a second) has refreshed REFRESHES times.
BATCH = 500
REFRESHES = 30


@dataclass
class Message:
    at: float
    thread: int
    msg_type: str
    data: Any


@dataclass
class Traffic:
    messages: list[Message] = field(default_factory=list)

    def busiest_second(self, since: float = 0.0) -> int:
        """The most messages sent in any one-second span."""
        times = [m.at for m in self.messages if m.at >= since]
        return max((sum(1 for t in times if start <= t < start + 1.0) for start in times), default=0)

    def threads(self) -> set[int]:
        return {m.thread for m in self.messages}

    def values(self, css_class: str) -> list[int]:
        """The numbers sent for the element of class ``css_class``, in order."""
        found = []
        for m in self.messages:
            state = (m.data or {}).get("state", {})
            match = re.search(rf'class="{css_class}"[^>]*>(\d+)<', str(state.get("value", "")))
            if match:
                found.append(int(match.group(1)))
        return found


@pytest.fixture
def traffic(monkeypatch: pytest.MonkeyPatch) -> Traffic:
    """Every comm message of the widgets made during the test, with the thread that sent it."""
    recorded = Traffic()

    class RecordingComm(BaseComm):
        def publish_msg(self, msg_type: str, data: Any = None, *args: Any, **kwargs: Any) -> None:
            recorded.messages.append(Message(time.monotonic(), threading.get_ident(), msg_type, data))

    monkeypatch.setattr(comm, "create_comm", RecordingComm)
    return recorded


@pytest.fixture
def views() -> Iterator[list[ipywidgets.Widget]]:
    """Views a test made, closed at its end whatever happened."""
    made: list[ipywidgets.Widget] = []
    yield made
    for view in made:
        view.close()


async def until(check: Callable[[], object], timeout: float = 30, what: str = "condition") -> None:
    """Poll ``check`` while the test's loop keeps running (the views refresh on it)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def counter(view: Any, name: str) -> int:
    match = re.search(rf'class="spear-counter-{name}"[^>]*>(\d+)<', view.children[1].value)
    assert match, view.children[1].value
    return int(match.group(1))


def test_a_panel_without_an_event_loop_refreshes_when_asked(
    client: spear_sdk.Client, traffic: Traffic, views: list[Any]
) -> None:
    panel = client.panel()
    views.append(panel)
    assert not panel.running  # no loop runs here: nothing refreshes by itself
    add_one = client.function(lambda x: x + 1, name="panel-static")
    add_one.map(range(7), progress=False)
    picky = client.function(lambda x: 1 // x, name="panel-picky")
    for x in (0, 0, 1):
        with contextlib.suppress(spear_sdk.errors.RemoteFunctionError):
            picky(x)

    before, state = panel.state, panel.refresh()
    assert state.completed >= before.completed + 8 and state.failed >= before.failed + 2
    assert counter(panel, "completed") == state.completed and counter(panel, "failed") == state.failed
    rates = {f.name: (f.completed, f.finished) for f in state.functions}
    assert rates["panel-static"] == (7, 7) and rates["panel-picky"] == (1, 3)
    assert [r.name for r in state.recent[:3]] == ["panel-picky"] * 3
    assert state.health == "healthy"

    bundle = panel._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"}
    html = bundle["text/html"]
    assert html.startswith('<div class="spear-panel')
    assert re.search(rf'class="spear-counter-completed"[^>]*>{state.completed}<', html)
    assert re.search(rf'class="spear-counter-failed"[^>]*>{state.failed}<', html)
    assert "panel-picky" in html and "33.3 %" in html and "spear-status-failed" in html
    assert bundle["text/plain"] == "<Panel: spearlet monitor, refreshed every 1 s>"
    assert client.panel()._repr_mimebundle_()["text/plain"] == bundle["text/plain"]
    assert traffic.threads() == {threading.get_ident()}
    assert "spear-panel" in panel._dom_classes


def test_refresh_intervals_below_a_tenth_of_a_second_are_refused(client: spear_sdk.Client) -> None:
    with pytest.raises(ValueError, match="interval"):
        client.panel(interval=0.01)
    with pytest.raises(ValueError, match="at least one execution"):
        client.watch([])


async def test_panel_traffic_stays_within_the_budget_under_heavy_load(
    client: spear_sdk.Client, traffic: Traffic, views: list[Any]
) -> None:
    fast = client.function(lambda x: x, name="panel-load")
    fast(0)
    enough = threading.Event()

    def load() -> int:
        """Batches of the fastest calls there are, back to back, until the panel has seen enough."""
        done = 0
        while not enough.is_set():
            done += len(fast.map(range(BATCH), progress=False))
        return done

    opened_at = time.monotonic()
    panel = client.panel(interval=0.1)  # ten refreshes a second: more changes than the budget allows
    views.append(panel)
    first = panel.state.completed
    running = asyncio.ensure_future(asyncio.to_thread(load))
    await until(lambda: panel.refreshes >= REFRESHES, 120, f"{REFRESHES} refreshes under load")
    enough.set()
    await until(running.done, 120, "the load")
    target = first + running.result()
    await until(lambda: counter(panel, "completed") >= target, 10, "the final count on the panel")
    seconds = time.monotonic() - opened_at

    busiest = traffic.busiest_second(opened_at)
    updates = sum(m.msg_type == "comm_msg" for m in traffic.messages)
    print(
        f"\npanel traffic: {len(traffic.messages)} comm messages ({updates} updates) in {seconds:.1f} s, "
        f"busiest second {busiest}, {panel.refreshes} refreshes, {panel.budget.deferred} changes put off"
    )
    assert busiest <= MESSAGES_PER_SECOND
    assert panel.messages_sent == len(traffic.messages)  # its own count is the real traffic
    completed = traffic.values("spear-counter-completed")
    assert len(set(completed)) >= 3 and completed == sorted(completed)  # counted up while it ran
    assert traffic.threads() == {threading.get_ident()}  # every change on this (the kernel's) loop
    assert panel.state.throughput and max(panel.state.throughput) > 0 and panel.state.p95


async def test_panel_stops_when_closed_and_when_its_client_closes(
    lab: spear_sdk.Lab, traffic: Traffic, views: list[Any]
) -> None:
    other = spear_sdk.Client(lab.address)
    followed = other.panel(interval=0.1)
    control = lab.client.panel(interval=0.1)
    views += [followed, control]
    assert followed.running and control.running

    await asyncio.to_thread(other.close)  # closed from another thread
    assert not followed.running
    await until(lambda: "stopped" in followed.children[0].value, 10, "the stopped note")
    frozen, start = followed.refreshes, control.refreshes
    await until(lambda: control.refreshes >= start + 3, 10, "three refreshes of the control panel")
    assert followed.refreshes == frozen

    control.close()
    assert not control.running
    assert sum(m.msg_type == "comm_close" for m in traffic.messages) >= len(control.children) + 1
    assert traffic.threads() == {threading.get_ident()}


async def test_watch_follows_executions_until_all_have_finished(
    client: spear_sdk.Client, traffic: Traffic, views: list[Any]
) -> None:
    square = client.function(lambda x: x * x, name="watch-square")
    nap = client.register_module("workloads:sleep")
    fail = client.register_module("workloads:fail")
    executions = [square.submit(3), nap.submit(0.3), fail.submit("watched failure")]
    watch = client.watch(executions, interval=0.1)
    views.append(watch)
    assert repr(watch) == "<Watch of 3 executions>"

    await until(lambda: not watch.running, 30, "every watched execution to finish")
    rows = watch.state.rows
    assert [r.status for r in rows] == ["completed", "completed", "failed"]
    assert [r.name for r in rows] == ["watch-square", "sleep", "fail"]
    assert watch.state.outcomes[:2] == ("9", "0.3")
    assert "watched failure" in watch.state.outcomes[2] and rows[1].duration_ms is not None
    bundle = watch._repr_mimebundle_()
    assert bundle["text/plain"] == "<Watch of 3 executions>"
    assert "3 of 3 finished" in bundle["text/html"] and "spear-status-failed" in bundle["text/html"]
    assert "3 of 3 finished" in watch.children[0].value
    assert traffic.threads() == {threading.get_ident()}


def test_map_progress_is_drawn_by_the_waiting_thread(
    client: spear_sdk.Client, traffic: Traffic, views: list[Any]
) -> None:
    counted = client.function(lambda x: x, name="progress-sync")
    model = ProgressModel("progress-sync", 2000)
    adders: set[int] = set()

    def add(n: int) -> None:
        adders.add(threading.get_ident())
        model.add(n)

    shown = WidgetView(model)
    views.append(shown.widget)
    started = time.monotonic()
    work = counted._core.map(counted._target, [((x,), {}) for x in range(2000)], counted.call_options, add)
    assert run_showing(counted._runtime, work, model, shown) == list(range(2000))
    assert threading.get_ident() not in adders  # counted on the runtime loop ...
    assert traffic.threads() == {threading.get_ident()}  # ... drawn here
    assert shown.widget.bar.value == 2000 and shown.widget.bar.bar_style == "success"
    assert traffic.busiest_second(started) <= MESSAGES_PER_SECOND
    assert shown.widget._repr_mimebundle_()["text/plain"] == "<Progress progress-sync of 2000 calls>"


async def test_async_map_progress_is_drawn_on_the_awaiting_loop(
    lab: spear_sdk.Lab, traffic: Traffic, views: list[Any]
) -> None:
    async with spear_sdk.AsyncClient(lab.address) as aclient:
        counted = aclient.function(lambda x: -x, name="progress-async")
        model = ProgressModel("progress-async", 1500)
        shown = WidgetView(model)
        views.append(shown.widget)
        work = counted._runtime.hop(counted._core.map(counted._target, [((x,), {}) for x in range(1500)],
                                                      counted.call_options, model.add))  # fmt: skip
        assert await await_showing(work, model, shown) == [-x for x in range(1500)]
    assert traffic.threads() == {threading.get_ident()}
    assert shown.widget.bar.value == 1500 and "1500/1500 calls" in shown.widget.text.value


def test_the_budget_sends_only_changes_and_caps_the_rate(traffic: Traffic, views: list[Any]) -> None:
    now = [0.0]
    budget = Budget(limit=20, window=1.0, clock=lambda: now[0])
    label = ipywidgets.HTML(value="0")
    views.append(label)
    opened = len(traffic.messages)
    assert budget.set(label, value="0") and budget.sent == 0  # unchanged: nothing sent
    sent = [budget.set(label, value=str(i), description=f"d{i}") for i in range(1, 31)]
    assert sent == [True] * 20 + [False] * 10 and budget.deferred == 10
    updates = traffic.messages[opened:]
    assert len(updates) == 20 and {m.msg_type for m in updates} == {"comm_msg"}
    assert updates[-1].data["state"] == {"value": "20", "description": "d20"}  # both traits, one message
    now[0] = 1.0
    assert budget.set(label, value="later") and label.value == "later"


async def test_panel_stops_when_the_lab_stops(lab: spear_sdk.Lab, traffic: Traffic, views: list[Any]) -> None:
    panel = lab.panel(interval=30)  # no refresh of its own in this test: only the stop brings it up to date
    elsewhere = spear_sdk.Client(lab.address)
    outlived = elsewhere.panel(interval=0.1)  # another client's panel: it outlives the server
    views += [panel, outlived]
    assert panel.running
    lab.client.function(lambda x: x, name="panel-last").map(range(5), progress=False)
    final = lab.client.stats().completed
    lab.stop()
    assert not panel.running
    await until(lambda: "stopped" in panel.children[0].value, 10, "the stopped note")
    assert counter(panel, "completed") == final  # it ends on the figures of the moment it stopped

    await until(lambda: "not refreshed" in outlived.children[0].value, 30, "the failed refresh")
    assert outlived.running  # the server may come back
    elsewhere.close()
    assert not outlived.running
    assert traffic.threads() == {threading.get_ident()}
