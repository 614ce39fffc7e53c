"""The figures an RPC reports (health details, stats, a task's counts), from wherever they are true.

On a store of its own a server keeps them current in memory (:mod:`..stats`). On a shared store every
server's executions count, so they are one SQL aggregate over the executions' rows (the store fills a
row's status, task, function and run time when it writes the record): one index scan per call, rather
than counters updated in each write's transaction, which concurrent batches of several servers would
contend (and deadlock) on.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..stats import RECENT_RUNS, ExecutionFigures, StatsTracker, TaskFigures
from ..store import StoreError
from ..store.shared import ExecutionCount, SharedKvStore
from . import lifecycle as lc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Figures:
    figures: ExecutionFigures
    running: int
    pending: int
    #: Ids of the tasks with executions PENDING or RUNNING.
    active_tasks: frozenset[str]

    def task(self, task_id: str) -> TaskFigures:
        return self.figures.tasks.get(task_id) or TaskFigures()


def of_counts(counts: list[ExecutionCount], newest: dict[str, tuple[str, int]]) -> Figures:
    """Figures from the store's counts by task, function and status, and each task's newest execution."""
    figures = ExecutionFigures()
    active: set[str] = set()
    for row in counts:
        figures.by_status[row.status] += row.count
        figures.by_function[row.label] += row.count
        if row.status in lc.TERMINAL:
            figures.terminal_time_ms += row.time_ms
        elif row.count:
            active.add(row.task_id)
        figures.tasks.setdefault(row.task_id, TaskFigures()).executions += row.count
    for task_id, (execution_id, status) in newest.items():
        task = figures.tasks.setdefault(task_id, TaskFigures())
        task.newest_id, task.newest_status = execution_id, status
    return Figures(figures, figures.by_status[lc.RUNNING], figures.by_status[lc.PENDING], frozenset(active))


class SharedEstimates:
    """On a shared store, each function's run-time estimate (``estimated_completion_ms``, and the order
    the scheduler admits calls in) is its mean over its newest runs on every server, read from the store
    now and every ``period_s``, so that every server estimates alike."""

    def __init__(self, store: SharedKvStore, stats: StatsTracker, period_s: float) -> None:
        self._store = store
        self._stats = stats
        self._period_s = period_s
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._keep())

    async def refresh(self) -> None:
        try:
            self._stats.use_estimates(await self._store.recent_run_ms(RECENT_RUNS))
        except StoreError as exc:  # the database is away: keep the last estimates until it is back
            log.warning("could not read the functions' recent run times: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self._period_s)
            await self.refresh()
