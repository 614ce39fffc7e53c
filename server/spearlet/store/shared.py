"""The interface of a store that several spearlets use at once (``postgresql://``).

Beyond :class:`KvStore` such a store answers what no single process can know alone: which servers are
alive (leases), which executions a dead one left unfinished, and the figures over every server's
executions; and it relays :mod:`.notices` between the servers. See docs/design.md, "PostgreSQL".

An execution's row names its owner, the server that wrote it last. A server writes the row only while it
is still the owner: once another server has taken the execution over (by :meth:`put_if_version`, after
the first one's lease lapsed) the first one's later writes of it are left out of its batches (the rest
of a batch is written) and reported to it as a :data:`.notices.TAKEN_OVER` notice.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..latency import FunctionFigures
from .base import KvStore
from .notices import Notices


@dataclass(frozen=True)
class ExecutionCount:
    """How many executions of one task and function are in one status, and their run time in total."""

    task_id: str
    label: str
    status: int
    count: int
    time_ms: int


@dataclass(frozen=True)
class Orphan:
    """An unfinished execution whose server holds no live lease: its key, record and version."""

    key: str
    value: bytes
    version: int


@dataclass(frozen=True)
class FunctionRuns:
    """Each function's figures over a window (by name), and the p50, p95 and p99 run time of every
    completed execution in it (zeros without any)."""

    functions: list[FunctionFigures]
    overall: tuple[float, float, float]


class SharedKvStore(KvStore):
    #: This process's id among the servers (the owner of the executions it writes, its lease's name).
    server_id: str
    #: Other servers' notices (executions ended, tasks changed, resyncs).
    notices: Notices

    @abc.abstractmethod
    async def renew_lease(self, ttl_s: float) -> None:
        """Promise to be alive for ``ttl_s`` more seconds (from the database's clock)."""

    @abc.abstractmethod
    async def release_lease(self) -> None:
        """Give the lease up (a clean shutdown; nothing of ours is left running)."""

    @abc.abstractmethod
    async def orphans(self, limit: int) -> list[Orphan]:
        """Up to ``limit`` PENDING or RUNNING executions whose owner's lease has expired (or never was)."""

    @abc.abstractmethod
    async def unfinished(self, task_id: str) -> list[str]:
        """The ids of the task's executions PENDING or RUNNING, on any server."""

    @abc.abstractmethod
    async def put_if_version(self, key: str, value: bytes, version: int) -> bool:
        """Replace ``key`` only if it is still at ``version`` (compare-and-set); whether it was."""

    @abc.abstractmethod
    async def send_notice(self, kind: str, key: str) -> None:
        """Tell the other servers now (outside any write), e.g. to cancel an execution one of them runs."""

    @abc.abstractmethod
    async def execution_counts(self, since_id: str = "") -> list[ExecutionCount]:
        """Counts of the executions (created after the id ``since_id``) by task, function and status."""

    @abc.abstractmethod
    async def function_figures(self, since_id: str = "") -> FunctionRuns:
        """Each function's figures over the finished executions created after the id ``since_id``, as
        :class:`..latency.FunctionLatencies` computes them from records."""

    @abc.abstractmethod
    async def recent_run_ms(self, runs: int) -> dict[str, float]:
        """Each function's mean run time (ms) over its ``runs`` newest completed executions."""

    @abc.abstractmethod
    async def newest_executions(self, task_ids: list[str]) -> dict[str, tuple[str, int]]:
        """Each task's newest execution: ``task_id -> (execution_id, status)``."""
