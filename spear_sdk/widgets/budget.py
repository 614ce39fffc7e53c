"""The comm traffic of a live view: at most 20 messages a second, whatever the invocation rate, so that a
busy server never floods the notebook's frontend.

Every change a view makes goes through :class:`Budget`: a widget's changed traits are sent together in one
message (``hold_sync``), unchanged ones not at all, and a change that would go over the budget waits for
the next refresh (the newest value wins).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

#: The most comm messages a live view sends in any one second.
MESSAGES_PER_SECOND = 20


class Budget:
    """At most ``limit`` messages in any ``window``-second span; ``sent`` counts them all."""

    def __init__(
        self,
        limit: int = MESSAGES_PER_SECOND,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()
        self.sent = 0
        #: Changes put off because the budget was spent (each is sent later, if still wanted).
        self.deferred = 0

    def available(self) -> int:
        now = self._clock()
        while self._times and now - self._times[0] >= self.window:
            self._times.popleft()
        return self.limit - len(self._times)

    def charge(self, count: int = 1) -> None:
        """Record messages that are sent anyway (a view opening its widgets)."""
        now = self._clock()
        self._times.extend([now] * count)
        self.sent += count

    def set(self, widget: Any, **values: Any) -> bool:
        """Give ``widget`` these trait values in one message; ``False`` (nothing sent) when the budget is
        spent. Values it already has cost nothing."""
        changed = {name: value for name, value in values.items() if getattr(widget, name) != value}
        if not changed:
            return True
        if self.available() < 1:
            self.deferred += 1
            return False
        with widget.hold_sync():
            for name, value in changed.items():
                setattr(widget, name, value)
        self.charge()
        return True


def opened(widget: Any) -> int:
    """How many comm models showing ``widget`` opened: itself, its layout and style, and its children's."""
    count = 1
    for name in ("layout", "style"):
        if getattr(widget, name, None) is not None:
            count += 1
    return count + sum(opened(child) for child in getattr(widget, "children", ()))
