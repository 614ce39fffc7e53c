"""``client.watch(executions)``: a live table of chosen executions (status, duration, result or error),
refreshed until every one has finished or the view is closed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _repr
from .._core import Core
from .._runtime import Runtime
from .._status import TERMINAL
from ..models import ExecutionState
from ..wire import codec
from . import snapshot
from .live import LiveView
from .monitor import Row

#: Rows shown at most; the summary line counts them all.
SHOWN = 100
_SUMMARY_CHARS = 60


@dataclass(frozen=True)
class WatchState:
    rows: tuple[Row, ...]
    outcomes: tuple[str, ...]

    @property
    def finished(self) -> int:
        return sum(r.status in TERMINAL for r in self.rows)

    @property
    def done(self) -> bool:
        return self.finished == len(self.rows)


class Watcher:
    """The watch's data side, used only on the runtime loop: awaits the executions' pushed ends, and asks
    about the unfinished ones only."""

    def __init__(self, core: Core, executions: Sequence[tuple[str, str]]) -> None:
        self._core = core
        self._names = dict(executions)
        self._rows: dict[str, tuple[Row, str]] = {}

    async def fetch(self) -> WatchState:
        open_ids = [i for i in self._names if i not in self._rows or self._rows[i][0].status not in TERMINAL]
        for execution_id, seen in zip(
            open_ids, await asyncio.gather(*(self._look(i) for i in open_ids)), strict=True
        ):
            self._rows[execution_id] = seen
        rows = [self._rows[i] for i in self._names]
        return WatchState(tuple(r for r, _ in rows), tuple(o for _, o in rows))

    async def _look(self, execution_id: str) -> tuple[Row, str]:
        """An end the server pushed (no request); else where the execution stands now (pending or
        running: only ends are pushed)."""
        watched = self._core.completions.watch(execution_id)
        if watched is not None and watched.ended.done() and watched.ended.exception() is None:
            result = watched.ended.result()
        else:
            result = (await self._core.status(execution_id, result=True)).result
        state = _status_row(execution_id, self._names[execution_id], result)
        if state.status == "completed":
            try:
                outcome = summary(codec.decode(result.result))
            except codec.CodecError:
                outcome = "(a value this client cannot read)"
        else:
            outcome = state.error
        return state, outcome


def _status_row(execution_id: str, name: str, result: Any) -> Row:
    state = ExecutionState.from_result(result)
    error = f"{state.error_code}: {state.error_message}" if state.error_code else state.error_message
    duration = None if state.duration is None else state.duration.total_seconds() * 1000
    return Row(execution_id, name, state.status, duration, error)


def summary(value: object) -> str:
    """A value in one short line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= _SUMMARY_CHARS else text[: _SUMMARY_CHARS - 3] + "..."


class Watch(LiveView[WatchState]):
    """A live table of executions; stops by itself once all have finished. Root class ``spear-watch``."""

    css_class = "spear-watch"

    def __init__(
        self,
        core: Core,
        runtime: Runtime,
        executions: Sequence[tuple[str, str]],
        interval: float,
        stoppers: list[Callable[[], None]],
    ) -> None:
        if not executions:
            raise ValueError("watch needs at least one execution")
        self._watcher = Watcher(core, executions)
        super().__init__(runtime, interval, stoppers)

    def _fetch(self) -> Coroutine[Any, Any, WatchState]:
        return self._watcher.fetch()

    def _finished(self, state: WatchState) -> bool:
        return state.done

    def _sections(self, state: WatchState, note: str) -> dict[str, str]:
        rows = state.rows[:SHOWN]
        more = len(state.rows) - len(rows)
        body = _repr.render(
            "watch_body.html",
            finished=state.finished,
            total=len(state.rows),
            note=note,
            rows=snapshot.execution_rows(rows, state.outcomes[:SHOWN]),
            more=f"... and {more} more" if more else "",
        )
        return {"body": body}

    def _static(self, sections: dict[str, str]) -> str:
        return _repr.render("watch.html", body=_repr.Safe(sections["body"]))

    def __repr__(self) -> str:
        count = len(self.state.rows)
        return f"<Watch of {count} execution{'s' if count != 1 else ''}>"
