"""The cluster side of the Dask executor: a local cluster to start, and what the scheduler says of its
workers.

``--executor dask`` without an address starts :func:`start_local_cluster`: worker processes on 127.0.0.1,
one thread and one ``spear_slot`` each, with the scheduler settings the executor relies on
(:data:`SCHEDULER_CONFIG`). A cluster of one's own is started the same way from the command line::

    DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 dask scheduler --host HOST --port PORT
    dask worker tcp://HOST:PORT --nthreads 1 --resources spear_slot=1
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

#: The resource each call holds while it runs: a worker with ``spear_slot=N`` runs N calls at once.
SLOT_RESOURCE = "spear_slot"
#: A dead worker fails its task at once (``KilledWorker``) instead of Dask re-running it elsewhere: the
#: spearlet counts attempts and retries by itself (``max_retries``).
SCHEDULER_CONFIG: dict[str, Any] = {"distributed.scheduler.allowed-failures": 0}


@dataclass(frozen=True)
class ClusterInfo:
    """The workers the scheduler knows, summed."""

    scheduler: str = ""
    workers: int = 0
    threads: int = 0
    #: Sum of the workers' ``spear_slot`` resources (0: they advertise none; threads bound the calls).
    slot_resources: int = 0
    memory_limit_bytes: int = 0
    memory_used_bytes: int = 0
    names: tuple[str, ...] = ()

    @property
    def slots(self) -> int:
        """Calls the cluster runs at once."""
        return self.slot_resources or self.threads

    @classmethod
    def of(cls, identity: dict[str, Any]) -> ClusterInfo:
        """From ``Client.scheduler_info()``."""
        workers = identity.get("workers", {}) or {}
        threads = slots = limit = used = 0
        names = []
        for address, worker in workers.items():
            threads += int(worker.get("nthreads", 0) or 0)
            slots += int((worker.get("resources") or {}).get(SLOT_RESOURCE, 0) or 0)
            limit += int(worker.get("memory_limit", 0) or 0)
            used += int((worker.get("metrics") or {}).get("memory", 0) or 0)
            names.append(str(worker.get("name", address)))
        return cls(
            scheduler=str(identity.get("address", "")),
            workers=len(workers),
            threads=threads,
            slot_resources=slots,
            memory_limit_bytes=limit,
            memory_used_bytes=used,
            names=tuple(sorted(names)),
        )


async def start_local_cluster(n_workers: int) -> Any:
    """A ``LocalCluster`` of ``n_workers`` processes on 127.0.0.1, on the running loop."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(SCHEDULER_CONFIG):
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            # Without a dashboard, the scheduler still serves HTTP (8787 by default, which may be taken):
            # any free port on loopback.
            dashboard_address="127.0.0.1:0",
            resources={SLOT_RESOURCE: 1},
            asynchronous=True,
            silence_logs=40,
        )
        await cluster
    return cluster


def default_workers() -> int:
    return os.cpu_count() or 1
