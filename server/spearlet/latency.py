"""Figures of each function over a time window: finished counts, success rate, run-time percentiles and
memory, from the finished executions kept in memory column-wise.

Every finished execution costs 8 bytes in each of five arrays (no record is kept), appended as it finishes
and rebuilt from the store at start with the other figures, so a GetStats call never reads the store for
them: a window is a mask over the creation times, and percentiles are taken over the masked run times
(numpy, linear interpolation, as pandas' ``quantile``). The same code computes a report's figures straight
from the records of a store (:meth:`FunctionLatencies.of`).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .engine.lifecycle import CANCELLED, COMPLETED, FAILED, TERMINAL, TIMEOUT
from .store.records import StoredExecution

QUANTILES = (0.5, 0.95, 0.99)


def function_label(task_name: str, function_name: str) -> str:
    """How a function is named in figures: the task, or ``task:function`` for a named entry point."""
    return f"{task_name}:{function_name}" if function_name and function_name != task_name else task_name


def run_time_ms(record: StoredExecution) -> float:
    """From start to end at the clock's resolution (``execution_time_ms`` is rounded to whole ms)."""
    if record.started_at and record.completed_at:
        return max(0.0, (record.completed_at - record.started_at) * 1000)
    return float(record.execution_time_ms)


@dataclass(frozen=True)
class FunctionFigures:
    """One function's finished executions in a window; run-time figures are of the completed ones."""

    function: str
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    timeout: int = 0
    average_ms: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    average_memory_bytes: float = 0.0

    @property
    def finished(self) -> int:
        return self.completed + self.failed + self.cancelled + self.timeout

    @property
    def success_rate_percent(self) -> float:
        return 100.0 * self.completed / self.finished if self.finished else 0.0


@dataclass
class _Series:
    """One function's finished executions, in the order they finished."""

    #: Each one's id by its ``hash``, which is all a deletion needs to find it: 8 bytes where the id
    #: string cost about 80, and a long-lived server keeps one per execution it ever ran. (Two ids of
    #: one 64-bit hash would leave the figures together: about one chance in 10^19 for a pair.)
    ids: array[int] = field(default_factory=lambda: array("q"))
    created: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("q"))
    ms: array[float] = field(default_factory=lambda: array("d"))
    memory: array[float] = field(default_factory=lambda: array("d"))

    def append(self, record: StoredExecution) -> None:
        self.ids.append(hash(record.execution_id))
        self.created.append(record.created_at)
        self.status.append(record.status)
        self.ms.append(run_time_ms(record))
        self.memory.append(float(record.memory_used_bytes))

    def without(self, removed: set[int]) -> _Series:
        kept = _Series()
        for i, key in enumerate(self.ids):
            if key not in removed:
                kept.ids.append(key)
                kept.created.append(self.created[i])
                kept.status.append(self.status[i])
                kept.ms.append(self.ms[i])
                kept.memory.append(self.memory[i])
        return kept

    def columns(self, since: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Status, run time and memory of those created at ``since`` or later (views, no copy without a
        window)."""
        status = np.frombuffer(self.status, dtype=np.int64) if self.status else np.empty(0, np.int64)
        ms = np.frombuffer(self.ms, dtype=np.float64) if self.ms else np.empty(0)
        memory = np.frombuffer(self.memory, dtype=np.float64) if self.memory else np.empty(0)
        if since > 0 and len(status):
            inside = np.frombuffer(self.created, dtype=np.float64) >= since
            return status[inside], ms[inside], memory[inside]
        return status, ms, memory


class FunctionLatencies:
    """Finished executions by function, kept current by :class:`~spearlet.stats.StatsTracker`."""

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}
        self._removed: set[int] = set()  # deleted since the series were last compacted (id hashes)

    @classmethod
    def of(cls, records: Iterable[StoredExecution]) -> FunctionLatencies:
        latencies = cls()
        for record in records:
            latencies.finished(record)
        return latencies

    def finished(self, record: StoredExecution) -> None:
        """``record`` has reached its final status (call once per execution)."""
        if record.status in TERMINAL:
            label = function_label(record.task_name, record.function_name)
            series = self._series.get(label)
            if series is None:  # (not setdefault: that would build a series on every call)
                series = self._series[label] = _Series()
            series.append(record)

    def deleted(self, record: StoredExecution) -> None:
        # Compacted on the next read: deleting a task's executions one by one stays linear.
        if record.status in TERMINAL:
            self._removed.add(hash(record.execution_id))

    def figures(self, since: float = 0.0) -> list[FunctionFigures]:
        """Each function's figures over the executions created at ``since`` (Unix seconds) or later; all
        of them when ``since`` is 0. Functions with nothing finished in the window are left out."""
        self._compact()
        rows = []
        for label in sorted(self._series):
            status, ms, memory = self._series[label].columns(since)
            if len(status):
                rows.append(_figures(label, status, ms, memory))
        return rows

    def overall(self, since: float = 0.0) -> tuple[float, float, float]:
        """p50, p95 and p99 run time of every completed execution in the window (0 without any)."""
        self._compact()
        parts = []
        for series in self._series.values():
            status, ms, _ = series.columns(since)
            parts.append(ms[status == COMPLETED])
        completed = np.concatenate(parts) if parts else np.empty(0)
        if not len(completed):
            return 0.0, 0.0, 0.0
        p50, p95, p99 = np.quantile(completed, QUANTILES)
        return float(p50), float(p95), float(p99)

    def _compact(self) -> None:
        if not self._removed:
            return
        for label, series in list(self._series.items()):
            kept = series.without(self._removed)
            if kept.ids:
                self._series[label] = kept
            else:
                del self._series[label]
        self._removed.clear()


def _figures(label: str, status: np.ndarray, ms: np.ndarray, memory: np.ndarray) -> FunctionFigures:
    done = status == COMPLETED
    counts = {
        "completed": int(done.sum()),
        "failed": int((status == FAILED).sum()),
        "cancelled": int((status == CANCELLED).sum()),
        "timeout": int((status == TIMEOUT).sum()),
    }
    if not counts["completed"]:
        return FunctionFigures(label, **counts)
    run = ms[done]
    p50, p95, p99 = np.quantile(run, QUANTILES)
    return FunctionFigures(
        label,
        **counts,
        average_ms=float(run.mean()),
        p50_ms=float(p50),
        p95_ms=float(p95),
        p99_ms=float(p99),
        max_ms=float(run.max()),
        average_memory_bytes=float(memory[done].mean()),
    )
