"""One run's figures, read from a store: the summary, each function's figures, time buckets for the
charts, and the slowest and the failed executions."""

from __future__ import annotations

import datetime as dt
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from spear_sdk._status import status_name

from ..engine.executions import ExecutionStore
from ..engine.ids import id_floor
from ..engine.lifecycle import COMPLETED, TERMINAL
from ..latency import FunctionFigures, FunctionLatencies, function_label, run_time_ms
from ..store import open_store
from ..store.records import StoredExecution
from ..store.sqlite import path_from_url

#: Time buckets of the charts, about.
BUCKETS = 40
#: Rows of the slowest and of the failed executions.
LISTED = 10


@dataclass(frozen=True)
class Bucket:
    start: float
    seconds: float
    finished: int
    p50_ms: float | None
    p95_ms: float | None

    @property
    def throughput(self) -> float:
        return self.finished / self.seconds


@dataclass(frozen=True)
class Listed:
    """An execution as a report lists it."""

    execution_id: str
    function: str
    status: str
    created_at: float
    run_ms: float
    error_code: str = ""
    error_message: str = ""


@dataclass
class Run:
    source: str
    since: float = 0.0
    executions: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    first: float | None = None
    last: float | None = None
    functions: list[FunctionFigures] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # every execution, by function
    buckets: list[Bucket] = field(default_factory=list)
    slowest: list[Listed] = field(default_factory=list)
    failed: list[Listed] = field(default_factory=list)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0

    @property
    def finished(self) -> int:
        return sum(self.by_status[name] for name in ("completed", "failed", "cancelled", "timeout"))

    @property
    def success_rate(self) -> float:
        return 100.0 * self.by_status["completed"] / self.finished if self.finished else 0.0


def check_store_url(url: str) -> None:
    """A report reads an existing store: a SQLite file that is not there is an error, not a new file."""
    if url.lower().startswith("sqlite://"):
        path = path_from_url(url)
        if path != ":memory:" and not os.path.exists(path):
            raise ValueError(f"no store at {url}: {path} does not exist")


async def read_run(url: str, since: float = 0.0) -> Run:
    """Read the executions created at ``since`` (Unix seconds) or later from the store at ``url``."""
    check_store_url(url)
    store = open_store(url)
    try:
        records = [
            r async for r in ExecutionStore(store).iterate(start_after=id_floor(since) if since else "")
        ]
    finally:
        await store.close()
    return summarize(url, [r for r in records if r.created_at >= since], since)


def summarize(source: str, records: list[StoredExecution], since: float = 0.0) -> Run:
    run = Run(source=source, since=since, executions=len(records))
    run.by_status.update(status_name(r.status) or "unknown" for r in records)
    run.counts.update(function_label(r.task_name, r.function_name) for r in records)
    latencies = FunctionLatencies.of(records)
    run.functions = latencies.figures()
    run.p50_ms, run.p95_ms, run.p99_ms = latencies.overall()
    finished = [r for r in records if r.status in TERMINAL and r.completed_at]
    if records:
        run.first = min(r.created_at for r in records)
        run.last = max([r.completed_at or r.created_at for r in records])
    run.buckets = _buckets(finished, run.first, run.last)
    completed = [r for r in finished if r.status == COMPLETED]
    run.slowest = [_listed(r) for r in sorted(completed, key=run_time_ms, reverse=True)[:LISTED]]
    failures = [r for r in finished if r.status != COMPLETED]
    run.failed = [_listed(r) for r in sorted(failures, key=lambda r: r.execution_id, reverse=True)[:LISTED]]
    return run


def _listed(record: StoredExecution) -> Listed:
    return Listed(
        execution_id=record.execution_id,
        function=function_label(record.task_name, record.function_name),
        status=status_name(record.status) or "unknown",
        created_at=record.created_at,
        run_ms=run_time_ms(record),
        error_code=record.error_code,
        error_message=record.error_message,
    )


def _buckets(finished: list[StoredExecution], first: float | None, last: float | None) -> list[Bucket]:
    """Finished executions by when they finished, in about :data:`BUCKETS` equal spans (1 s at least)."""
    if not finished or first is None or last is None:
        return []
    width = max(1.0, _round_width((last - first) / BUCKETS))
    start = math.floor(first / width) * width
    count = int((last - start) // width) + 1
    ends = np.array([r.completed_at or 0.0 for r in finished])
    ms = np.array([run_time_ms(r) for r in finished])
    ok = np.array([r.status == COMPLETED for r in finished])
    index = np.minimum(((ends - start) // width).astype(int), count - 1)
    buckets = []
    for i in range(count):
        inside = index == i
        done = ms[inside & ok]
        p50, p95 = (float(v) for v in np.quantile(done, (0.5, 0.95))) if len(done) else (None, None)
        buckets.append(Bucket(start + i * width, width, int(inside.sum()), p50, p95))
    return buckets


def _round_width(seconds: float) -> float:
    """A bucket width people read easily: 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1 h, ..."""
    for nice in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400):
        if seconds <= nice:
            return float(nice)
    return math.ceil(seconds / 86400) * 86400.0


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: a duration back from now ("2h", "30min", "1d") or a time ("2026-01-31T12:00", UTC when
    no zone is given); Unix seconds."""
    import pandas as pd

    now = time.time() if now is None else now
    try:
        delta = pd.Timedelta(text)
    except ValueError:
        pass
    else:
        back = float(delta.total_seconds())
        if not back > 0:
            raise ValueError(f"--since {text!r}: a duration must be positive")
        return now - back
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (2h, 30min) nor a time (2026-01-31T12:00)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(dt.timezone.utc)
    seconds: float = stamp.timestamp()
    return seconds
