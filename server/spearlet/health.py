"""Health of the server from real state (docs/protocol.md, GetHealth), and the process figures GetStats
reports."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import sys
from dataclasses import dataclass
from typing import Any

import grpc
import psutil
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2

from spear_sdk.wire import function_pb2 as fpb

from . import __version__
from .engine.core import Engine
from .store import StoreError

HEALTHY, DEGRADED, UNHEALTHY = "healthy", "degraded", "unhealthy"
_DEGRADED_QUEUE_FILL = 0.8
#: grpc.health.v1 names: the whole server ("") and each service.
SERVICE_NAMES = ("", "spearlet.FunctionService", "spearlet.ObjectService")


@dataclass(frozen=True)
class Verdict:
    status: str
    message: str


class ResourceMeter:
    """CPU and memory of the server process and its workers, via psutil.

    ``psutil.Process.cpu_percent`` measures since its previous call on the same object, so the objects
    are kept between calls.
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {os.getpid(): psutil.Process()}
        for proc in self._procs.values():
            proc.cpu_percent(None)

    def _track(self, pids: list[int]) -> list[psutil.Process]:
        wanted = {os.getpid(), *pids}
        for pid in list(self._procs):
            if pid not in wanted:
                del self._procs[pid]
        for pid in wanted - self._procs.keys():
            with contextlib.suppress(psutil.Error):
                self._procs[pid] = psutil.Process(pid)
                self._procs[pid].cpu_percent(None)
        return list(self._procs.values())

    def memory_bytes(self, worker_pids: list[int]) -> int:
        total = 0
        for proc in self._track(worker_pids):
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_percent(self, worker_pids: list[int]) -> float:
        """Share of the machine's CPU time used since the last call, 0-100."""
        total = 0.0
        for proc in self._track(worker_pids):
            with contextlib.suppress(psutil.Error):
                total += proc.cpu_percent(None)
        return total / (os.cpu_count() or 1)

    @staticmethod
    def memory_percent(used: int) -> float:
        return used * 100.0 / psutil.virtual_memory().total


class StandardHealth(health_aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 with a message for an unknown service, and the ``List`` the library leaves out."""

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthCheckResponse:
        if request.service not in SERVICE_NAMES:
            known = ", ".join(repr(name) for name in SERVICE_NAMES)
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no health status for service {request.service!r} (known: {known})",
            )
        return await super().Check(request, context)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        statuses = {}
        for name in SERVICE_NAMES:
            statuses[name] = await super().Check(health_pb2.HealthCheckRequest(service=name), context)
        return health_pb2.HealthListResponse(statuses=statuses)


class HealthMonitor:
    def __init__(self, engine: Engine, meter: ResourceMeter) -> None:
        self.engine = engine
        self.meter = meter
        self.grpc_servicer = StandardHealth()
        self._serving: bool | None = None
        self._watch: asyncio.Task[None] | None = None

    async def verdict(self) -> Verdict:
        engine = self.engine
        try:
            await engine.store.ping()
        except StoreError as exc:
            return Verdict(UNHEALTHY, f"the store does not answer: {exc}")
        if not engine.executor.healthy:
            cluster = engine.executor.cluster()
            if cluster is not None:
                return Verdict(
                    UNHEALTHY,
                    f"the {engine.executor.name} executor cannot reach its cluster at {cluster.address}",
                )
            return Verdict(UNHEALTHY, f"the {engine.executor.name} executor cannot start workers")
        scheduler = engine.scheduler
        if scheduler.queue_fill > _DEGRADED_QUEUE_FILL:
            return Verdict(DEGRADED, f"the queue is {scheduler.queue_fill:.0%} full")
        if scheduler.running >= scheduler.max_running and scheduler.pending:
            return Verdict(
                DEGRADED,
                f"all {scheduler.max_running} slots are busy and {scheduler.pending} executions wait",
            )
        return Verdict(HEALTHY, "serving")

    def cluster_details(self) -> fpb.ClusterDetails | None:
        """The executor's cluster (GetHealth and GetStats show it), if it runs calls on one."""
        cluster = self.engine.executor.cluster()
        if cluster is None:
            return None
        return fpb.ClusterDetails(
            address=cluster.address,
            reachable=cluster.reachable,
            workers=cluster.workers,
            threads=cluster.threads,
            slots=cluster.slots,
            memory_limit_bytes=cluster.memory_limit_bytes,
            memory_used_bytes=cluster.memory_used_bytes,
            worker_names=cluster.worker_names,
        )

    def system_info(self) -> dict[str, str]:
        engine = self.engine
        return {
            "version": __version__,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "pid": str(os.getpid()),
            "executor": engine.executor.name,
            "store": engine.store.url,
            "cpu_count": str(os.cpu_count() or 1),
            "max_concurrent_executions": str(engine.config.max_concurrent),
            "max_queued_executions": str(engine.config.max_queued),
            "implementation": sys.implementation.name,
        }

    async def set_serving(self, serving: bool) -> None:
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICE_NAMES:
            await self.grpc_servicer.set(name, status)

    async def refresh(self) -> Verdict:
        """Compute the verdict and keep grpc.health.v1 consistent with it."""
        verdict = await self.verdict()
        await self.set_serving(verdict.status != UNHEALTHY)
        return verdict

    def start_watching(self, interval_s: float = 1.0) -> None:
        async def watch() -> None:
            while True:
                await self.refresh()
                await asyncio.sleep(interval_s)

        self._watch = asyncio.create_task(watch())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        await self.grpc_servicer.enter_graceful_shutdown()
