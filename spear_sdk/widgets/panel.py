"""``client.panel()``: a live monitoring panel of a spearlet (health, counters, throughput and latency,
success rate by function, the most recent executions)."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from .._core import Core
from .._runtime import Runtime
from ..alerts import Alert, AlertTracker, Breach, check
from . import snapshot
from .live import LiveView
from .monitor import Monitor, PanelState

#: How often a panel refreshes unless told otherwise, in seconds.
DEFAULT_INTERVAL_S = 1.0


class Panel(LiveView[PanelState]):
    """A live view of a spearlet, refreshed every ``interval`` seconds until closed or the client closes.

    The DOM has stable classes for tests and styling: the root is ``spear-panel``, the counters are
    ``spear-counter-running``, ``-pending``, ``-completed`` and ``-failed`` (their text is the number).
    ``state`` is the latest :class:`~spear_sdk.widgets.monitor.PanelState` shown. Without a running event
    loop (a plain script) it does not refresh by itself: call ``refresh()``.

    Counters and health come from the server's stats. Throughput, latency, success rates and the recent
    executions come from reading the executions in creation order, from the oldest, at most a few thousand
    a refresh: on a server with a long history they catch up over the first refreshes.
    """

    css_class = "spear-panel"

    def __init__(
        self,
        core: Core,
        runtime: Runtime,
        interval: float,
        stoppers: list[Callable[[], None]],
        alerts: Sequence[Alert] | None = None,
        on_alert: Callable[[Breach], Any] | None = None,
    ) -> None:
        self._monitor = Monitor(core)
        self._rules = tuple(alerts) if alerts is not None else None
        for rule in self._rules or ():
            if not isinstance(rule, Alert):
                raise TypeError(f"alerts are spear_sdk.Alert objects, not {type(rule).__name__}")
        self._tracker = AlertTracker()
        self._on_alert = on_alert
        # Breaches found on the runtime loop, not yet told on the kernel's (a deque: appended on one thread,
        # popped on the other, without a lock).
        self._new: deque[Breach] = deque()
        super().__init__(runtime, interval, stoppers)
        self._tell()

    async def _fetch_with_alerts(self) -> PanelState:
        state = await self._monitor.fetch()
        if self._rules is None:
            return state
        active, new = await check(self._monitor.core, self._rules, self._tracker)
        self._new.extend(new)
        return dataclasses.replace(state, alerts=tuple(active))

    def _fetch(self) -> Coroutine[Any, Any, PanelState]:
        return self._fetch_with_alerts()

    def _landed(self, state: PanelState) -> bool:
        more = super()._landed(state)
        self._tell()
        return more

    def _tell(self) -> None:
        """Call ``on_alert`` once per new breach, on the kernel's loop (where a notebook's code runs)."""
        while self._new:
            breach = self._new.popleft()
            if self._on_alert is not None:
                self._on_alert(breach)

    @property
    def alerts(self) -> Any:
        """The breaches shown now, as a DataFrame (empty without rules)."""
        from ..alerts import breaches_frame

        return breaches_frame(self.state.alerts or ())

    def _sections(self, state: PanelState, note: str) -> dict[str, str]:
        ticker = getattr(self, "_ticker", None)  # absent while the first state is drawn
        if ticker is not None and ticker.stopped:
            # A panel that no longer refreshes cannot vouch for the server's health: say it stopped.
            state = dataclasses.replace(state, health="stopped", message="this panel no longer refreshes")
            note = "" if note == "stopped" else note
        return snapshot.panel_sections(state, note)

    def _static(self, sections: dict[str, str]) -> str:
        return snapshot.panel_html(sections)

    def __repr__(self) -> str:
        return f"<Panel: spearlet monitor, refreshed every {self.interval:g} s>"
