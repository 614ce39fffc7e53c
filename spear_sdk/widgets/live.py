"""A view that keeps itself current: HTML sections as ipywidgets, refreshed by a :class:`Ticker`, every
change on the kernel's loop and within the message :class:`Budget`; static HTML and stable text where no
widget frontend exists."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import ipywidgets  # type: ignore[import-untyped]

from .._runtime import Runtime
from ..wire.errors import SpearError
from .budget import Budget, opened
from .kernel import KernelLoop
from .ticker import Ticker

S = TypeVar("S")

#: A refresh more often than this is refused: it would only spend the message budget on waiting changes.
MIN_INTERVAL_S = 0.1
#: How long a stopping view waits for its last figures.
FINAL_FETCH_S = 2.0
#: When changes the budget put off are sent once the view no longer refreshes.
FLUSH_DELAY_S = 0.25


class LiveView(ipywidgets.VBox, Generic[S]):  # type: ignore[misc]
    """Subclasses say what to fetch (:meth:`_fetch`), how it looks (:meth:`_sections`, :meth:`_static`)
    and when it is over (:meth:`_finished`)."""

    css_class = "spear-live"

    def __init__(self, runtime: Runtime, interval: float, stoppers: list[Callable[[], None]]) -> None:
        """``stoppers``: the owner's list of callbacks to run when it closes (a client); this view adds
        its ``stop`` there and takes it out again when it stops."""
        if not interval >= MIN_INTERVAL_S:
            raise ValueError(f"interval is at least {MIN_INTERVAL_S} s, not {interval!r}")
        self._runtime = runtime
        self._kernel = KernelLoop.here()
        self._stoppers = stoppers
        self.state: S = runtime.run(self._fetch())
        #: States shown since the first one.
        self.refreshes = 0
        self._note = ""
        self._wanted = self._sections(self.state, self._note)
        self._parts = {name: ipywidgets.HTML(value=html) for name, html in self._wanted.items()}
        super().__init__(children=list(self._parts.values()), _dom_classes=(self.css_class,))
        self.budget = Budget()
        self.budget.charge(opened(self))  # the comm models just opened count as messages too
        self._ticker: Ticker[S] = Ticker(
            runtime, self._kernel, self._fetch, self._landed, self._refused, interval
        )
        if self._finished(self.state):
            self._ticker.stopped = True
        elif self._ticker.start():
            stoppers.append(self.stop)

    # -- what subclasses define ------------------------------------------------------------------

    def _fetch(self) -> Coroutine[Any, Any, S]:
        raise NotImplementedError

    def _sections(self, state: S, note: str) -> dict[str, str]:
        raise NotImplementedError

    def _static(self, sections: dict[str, str]) -> str:
        raise NotImplementedError

    def _finished(self, state: S) -> bool:
        return False

    # -- the public surface ----------------------------------------------------------------------

    @property
    def interval(self) -> float:
        return self._ticker.interval

    @property
    def running(self) -> bool:
        """Whether it still refreshes by itself."""
        return not self._ticker.stopped

    @property
    def messages_sent(self) -> int:
        """Comm messages this view has caused so far (opening its widgets included)."""
        return self.budget.sent

    def refresh(self) -> S:
        """Fetch now and show the result (where there is no loop to refresh on, this is the way)."""
        state = self._runtime.run(self._fetch())
        if not self._kernel.call(self._landed, state):
            self._landed(state)
        return state

    def stop(self, note: str = "stopped") -> None:
        """Stop refreshing (from any thread); the view shows the figures as they are now, and ``note``."""
        final = None
        if not self._ticker.stopped:
            self._ticker.stop()
            self._detach()
            final = self._last_fetch()
        self._kernel.call(self._show_final, final, note)

    def _last_fetch(self) -> S | None:
        """One more fetch, so that a view stopped with its client (or lab) ends on the final figures."""
        if self._runtime.in_loop_thread():
            return None
        try:
            return self._runtime.run(asyncio.wait_for(self._fetch(), FINAL_FETCH_S))
        except Exception:  # the server may be gone already: keep the last figures shown
            return None

    def close(self) -> None:
        """Stop refreshing and remove the view (its widgets are closed)."""
        ticker = getattr(self, "_ticker", None)
        if ticker is None:  # closed before it was built
            super().close()
            return
        ticker.stop()
        self._detach()
        if not self._kernel.call(self._close_widgets):
            self._close_widgets()

    def _detach(self) -> None:
        with contextlib.suppress(ValueError):  # not there: stopped before, or never started
            self._stoppers.remove(self.stop)

    def _close_widgets(self) -> None:
        for part in self._parts.values():
            part.close()
        super().close()

    # -- on the kernel's loop --------------------------------------------------------------------

    def _landed(self, state: S) -> bool:
        self.state = state
        self.refreshes += 1
        if not self._ticker.stopped:
            self._note = ""  # a refresh went through: the failure a note may tell of is over
        self._show(self._sections(state, self._note))
        if self._finished(state):
            self._ticker.stopped = True
            self._detach()
            return False
        return True

    def _refused(self, error: BaseException) -> bool:
        self._show_note(_failure(error))
        return True

    def _show_note(self, note: str) -> None:
        self._note = note
        self._show(self._sections(self.state, note))

    def _show_final(self, state: S | None, note: str) -> None:
        if state is not None:
            self.state = state
            self.refreshes += 1
        self._show_note(note)

    def _show(self, sections: dict[str, str]) -> None:
        # A section the budget cannot pay for now stays wanted: the next refresh sends its newest value,
        # or, once refreshing has stopped, a later flush does.
        self._wanted.update(sections)
        sent = [self.budget.set(self._parts[name], value=html) for name, html in self._wanted.items()]
        if not all(sent) and self._ticker.stopped:
            self._kernel.later(FLUSH_DELAY_S, lambda: self._show({}))

    # -- reprs -----------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle: dict[str, Any] = super()._repr_mimebundle_(**kwargs) or {}
        bundle["text/plain"] = repr(self)
        bundle["text/html"] = self._static(self._sections(self.state, self._note))
        return bundle


def _failure(error: BaseException) -> str:
    reason = str(error) if isinstance(error, SpearError) else type(error).__name__
    return f"not refreshed: {reason}"
