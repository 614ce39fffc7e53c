"""The SDK's value objects: task references, call options, execution states, stats and health."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import _repr
from ._status import status_name

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from .wire import function_pb2


@dataclass(frozen=True)
class TaskRef:
    """A registered task, as the server answered when it was registered or looked up."""

    task_id: str
    name: str
    version: int
    artifact_type: str
    function_name: str = ""
    checksum: str = ""


@dataclass(frozen=True)
class CallOptions:
    """How one function handle calls: ``timeout`` is the server-side limit of each execution in seconds."""

    timeout: float | None = None
    retries: int | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Show what the function prints in the calling cell (``None``: as the client says).
    forward_output: bool | None = None

    def __post_init__(self) -> None:
        if self.forward_output is not None and not isinstance(self.forward_output, bool):
            raise ValueError(f"forward_output is True or False, not {self.forward_output!r}")
        if self.timeout is not None and not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ValueError(f"timeout is a number of seconds above 0, not {self.timeout!r}")
        if self.retries is not None and not (isinstance(self.retries, int) and self.retries >= 0):
            raise ValueError(f"retries is a whole number of at least 0, not {self.retries!r}")
        for name in ("metadata", "environment"):
            mapping = getattr(self, name)
            if not isinstance(mapping, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()
            ):
                raise ValueError(f"{name} maps strings to strings, not {mapping!r}")
            object.__setattr__(self, name, dict(mapping))

    def merged(self, **changes: Any) -> CallOptions:
        """These options with ``changes``; metadata and environment are merged key by key."""
        unknown = set(changes) - {"timeout", "retries", "metadata", "environment", "forward_output"}
        if unknown:
            raise TypeError(
                f"unknown option {sorted(unknown)[0]!r}; options are timeout, retries, metadata, "
                "environment, forward_output"
            )
        for name in ("metadata", "environment"):
            if changes.get(name) is not None:
                changes[name] = {**getattr(self, name), **changes[name]}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def timestamp(message: Any) -> dt.datetime | None:
    """A protobuf ``Timestamp`` as an aware UTC datetime; ``None`` when unset."""
    if not message.seconds and not message.nanos:
        return None
    return dt.datetime.fromtimestamp(message.seconds, dt.timezone.utc) + dt.timedelta(
        microseconds=message.nanos // 1000
    )


@dataclass
class ExecutionState:
    """Where an execution stands: its status, failure reason, times and metrics."""

    status: str
    error_code: str = ""
    error_message: str = ""
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    duration: dt.timedelta | None = None
    memory_used_bytes: int = 0
    metrics: dict[str, str] = field(default_factory=dict)
    raw_result: Any = field(default=None, repr=False)
    #: The task that ran it (when the server says; older servers do not).
    task_name: str = ""

    @classmethod
    def from_result(cls, result: function_pb2.ExecutionResult) -> ExecutionState:
        completed = timestamp(result.completed_at)
        started = timestamp(result.started_at)
        duration = None
        if completed is not None:  # at the resolution measured, not rounded to milliseconds
            duration = completed - started if started else dt.timedelta(milliseconds=result.execution_time_ms)
        return cls(
            status=status_name(result.status) or "unknown",
            error_code=result.error_code,
            error_message=result.error_message,
            started_at=started,
            completed_at=completed,
            duration=duration,
            memory_used_bytes=result.memory_used_bytes,
            metrics=dict(result.metrics),
        )


class Stats:
    """The server's figures (``client.stats()``): counts as attributes, tables as DataFrames."""

    def __init__(self, response: function_pb2.GetStatsResponse) -> None:
        self.response = response
        service, tasks, executions = response.service_stats, response.task_stats, response.execution_stats
        self.uptime = dt.timedelta(seconds=service.uptime_seconds)
        self.total_tasks = service.total_tasks
        self.total_executions = service.total_executions
        self.active_tasks = tasks.active_tasks
        self.idle_tasks = tasks.idle_tasks
        self.running = executions.running_executions
        self.pending = executions.pending_executions
        self.completed = executions.completed_executions
        self.failed = executions.failed_executions
        self.cancelled = executions.cancelled_executions
        self.timeout = executions.timeout_executions
        self.success_rate = executions.success_rate_percent
        self.average_execution_time = dt.timedelta(milliseconds=executions.average_execution_time_ms)
        #: Run-time percentiles of the completed executions in ms (0.0 without any).
        self.p50_latency_ms = executions.p50_execution_time_ms
        self.p95_latency_ms = executions.p95_execution_time_ms
        self.p99_latency_ms = executions.p99_execution_time_ms
        self.cpu_percent = service.cpu_usage_percent
        self.memory_percent = service.memory_usage_percent
        self.memory_bytes = service.total_memory_used

    @property
    def terminal(self) -> int:
        return self.completed + self.failed + self.cancelled + self.timeout

    def to_frame(self) -> pd.DataFrame:
        """One row of every figure (concatenate snapshots to follow them over time)."""
        from . import frames

        return frames.stats_frame(self.response)

    @property
    def by_function(self) -> pd.DataFrame:
        """Each function's figures over the window, most executions first: counts, ``success_rate`` (%),
        run times of the completed executions (``mean``/``p50``/``p95``/``p99``/``max_latency_ms``, NaN
        without any) and ``mean_memory_bytes``."""
        from .function_stats import function_frame

        return function_frame(self.response.execution_stats)

    @property
    def tasks_by_type(self) -> pd.DataFrame:
        """Registered tasks per artifact type, most first."""
        from . import frames

        return frames.counts_frame(self.response.task_stats.tasks_by_type, "artifact_type", "tasks")

    @property
    def most_active(self) -> pd.DataFrame:
        """The (up to five) tasks with the most executions in the window."""
        from . import frames

        return frames.tasks_frame(self.response.task_stats.most_active_tasks)

    def plot(self, ax: Axes | None = None) -> Axes:
        """Executions by status as a bar chart (matplotlib, from the ``lab`` extra); returns the Axes."""
        from . import plots

        return plots.stats_counts(self, ax)

    def _summary(self) -> str:
        return (
            f"{self.total_executions} executions: {self.completed} completed, {self.failed} failed, "
            f"{self.cancelled} cancelled, {self.timeout} timed out, {self.running} running, "
            f"{self.pending} pending"
        )

    def __repr__(self) -> str:
        return f"<Stats {self._summary()}; success rate {self.success_rate:.1f} %>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _repr.bundle(
            self,
            "stats.html",
            summary=self._summary(),
            success_rate=f"{self.success_rate:.1f} %",
            average=f"{self.average_execution_time.total_seconds() * 1000:.1f} ms",
            tasks=f"{self.total_tasks} ({self.active_tasks} active)",
            uptime=str(self.uptime),
            cpu=f"{self.cpu_percent:.1f} %",
            memory=_repr.size(self.memory_bytes),
            functions=_repr.rows(_function_rows(self.response.execution_stats)),
        )


def _function_rows(stats: function_pb2.ExecutionStats) -> list[tuple[str, str]]:
    if not stats.function_stats:
        return [(name, str(n)) for name, n in sorted(stats.executions_by_function.items())]
    return [
        (
            f.function,
            f"{f.executions} ({f.success_rate_percent:.1f} % ok)"
            + (
                f", p50 {f.p50_execution_time_ms:.1f} ms, p95 {f.p95_execution_time_ms:.1f} ms"
                if f.completed
                else ""
            ),
        )
        for f in stats.function_stats
    ]


class Health:
    """The server's health (``client.health()``): ``status`` is healthy, degraded or unhealthy."""

    def __init__(self, response: function_pb2.GetHealthResponse) -> None:
        self.response = response
        details = response.details
        self.status = response.status
        self.message = response.message
        self.uptime = dt.timedelta(seconds=response.uptime_seconds)
        self.running = details.running_executions
        self.pending = details.pending_executions
        self.active_tasks = details.active_tasks
        self.task_count = details.task_count
        self.object_count = details.object_count
        self.total_executions = details.total_executions
        self.memory_bytes = details.total_memory_used
        self.system_info = dict(details.system_info)
        #: The cluster the server runs calls on (``--executor dask``): workers, threads, slots, memory,
        #: worker names; None for a server whose workers are its own processes.
        self.cluster: dict[str, Any] | None = (
            {
                "address": details.cluster.address,
                "reachable": details.cluster.reachable,
                "workers": details.cluster.workers,
                "threads": details.cluster.threads,
                "slots": details.cluster.slots,
                "memory_limit_bytes": details.cluster.memory_limit_bytes,
                "memory_used_bytes": details.cluster.memory_used_bytes,
                "worker_names": list(details.cluster.worker_names),
            }
            if details.HasField("cluster")
            else None
        )

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"

    def __repr__(self) -> str:
        return f"<Health {self.status}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return _repr.bundle(
            self,
            "health.html",
            status=self.status,
            message=self.message,
            running=self.running,
            pending=self.pending,
            tasks=f"{self.task_count} ({self.active_tasks} active)",
            executions=self.total_executions,
            memory=_repr.size(self.memory_bytes),
            uptime=str(self.uptime),
            system=_repr.rows(sorted(self.system_info.items())),
        )
