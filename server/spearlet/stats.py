"""Execution figures: kept current on every transition, rebuilt from the store at start."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from .engine.lifecycle import COMPLETED, TERMINAL
from .latency import FunctionLatencies, function_label
from .store.records import StoredExecution

__all__ = ["ExecutionFigures", "StatsTracker", "TaskFigures", "function_label"]

#: How many of a function's newest completed runs its estimate averages.
RECENT_RUNS = 20


@dataclass
class TaskFigures:
    executions: int = 0
    newest_id: str = ""
    newest_status: int = 0


@dataclass
class ExecutionFigures:
    """Counts over a set of executions, updated incrementally."""

    by_status: Counter[int] = field(default_factory=Counter)
    by_function: Counter[str] = field(default_factory=Counter)
    terminal_time_ms: int = 0
    tasks: dict[str, TaskFigures] = field(default_factory=dict)

    @classmethod
    def of(cls, records: Iterable[StoredExecution]) -> ExecutionFigures:
        figures = cls()
        for record in records:
            figures.add(record)
        return figures

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def terminal(self) -> int:
        return sum(self.by_status[s] for s in TERMINAL)

    @property
    def average_time_ms(self) -> float:
        return self.terminal_time_ms / self.terminal if self.terminal else 0.0

    @property
    def success_rate_percent(self) -> float:
        return self.by_status[COMPLETED] * 100.0 / self.terminal if self.terminal else 0.0

    def add(self, record: StoredExecution) -> None:
        self._count(record, +1)
        task = self.tasks.get(record.task_id)
        if task is None:
            task = self.tasks[record.task_id] = TaskFigures()
        task.executions += 1
        if record.execution_id >= task.newest_id:
            task.newest_id, task.newest_status = record.execution_id, record.status

    def remove(self, record: StoredExecution) -> None:
        self._count(record, -1)
        task = self.tasks.get(record.task_id)
        if task is not None:
            task.executions -= 1
            if task.executions <= 0:
                del self.tasks[record.task_id]

    def transition(self, old_status: int, record: StoredExecution) -> None:
        """``record`` moved from ``old_status`` to its current status."""
        self.by_status[old_status] -= 1
        self.by_status[record.status] += 1
        if record.status in TERMINAL:
            self.terminal_time_ms += record.execution_time_ms
        task = self.tasks.get(record.task_id)
        if task is not None and task.newest_id == record.execution_id:
            task.newest_status = record.status

    def _count(self, record: StoredExecution, sign: int) -> None:
        self.by_status[record.status] += sign
        self.by_function[function_label(record.task_name, record.function_name)] += sign
        if record.status in TERMINAL:
            self.terminal_time_ms += sign * record.execution_time_ms


class StatsTracker:
    """All-time figures, each function's finished executions (for percentiles over a window) and its recent
    run times (for ``estimated_completion_ms``)."""

    def __init__(self) -> None:
        self.figures = ExecutionFigures()
        self.latencies = FunctionLatencies()
        self._recent: dict[str, deque[int]] = {}
        #: On a shared store: each function's mean recent run time over every server's runs, as last
        #: read from the store (see :meth:`use_estimates`); None: this process's own runs decide.
        self._shared_estimates: dict[str, float] | None = None

    def use_estimates(self, mean_run_ms: dict[str, float]) -> None:
        """Estimate from these means (each function's, over its newest runs on every server) from now on."""
        self._shared_estimates = mean_run_ms

    def rebuild(self, records: Iterable[StoredExecution]) -> None:
        records = list(records)
        self.figures = ExecutionFigures.of(records)
        self.latencies = FunctionLatencies.of(records)

    def created(self, record: StoredExecution) -> None:
        self.figures.add(record)

    def transitioned(self, old_status: int, record: StoredExecution) -> None:
        self.figures.transition(old_status, record)
        if old_status not in TERMINAL:
            self.latencies.finished(record)
        if record.status == COMPLETED:
            label = function_label(record.task_name, record.function_name)
            recent = self._recent.get(label)
            if recent is None:
                recent = self._recent[label] = deque(maxlen=RECENT_RUNS)
            recent.append(record.execution_time_ms)

    def deleted(self, record: StoredExecution) -> None:
        self.figures.remove(record)
        self.latencies.deleted(record)

    def estimate_ms(self, task_name: str, function_name: str) -> int:
        label = function_label(task_name, function_name)
        if self._shared_estimates is not None:
            return round(self._shared_estimates.get(label, 0.0))
        runs = self._recent.get(label)
        return round(sum(runs) / len(runs)) if runs else 0

    def task(self, task_id: str) -> TaskFigures:
        return self.figures.tasks.get(task_id) or TaskFigures()
