"""What runs a function: the executor contract and its implementations.

``create_executor`` builds the executor the configuration names: ``process`` (a warm pool of spawned
worker processes, the default), ``thread`` (threads of the server) or ``dask`` (tasks on a Dask cluster,
:mod:`.dask`). ``process`` artifacts run through :class:`SubprocessRunner` on this machine, unless the
executor runs them on its own workers (``Executor.runs_processes``: the Dask executor does).

The implementations are imported on first use, so that a worker process (which imports this package on
its way to :mod:`.worker`) does not pay for asyncio and the pool machinery at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from spearlet.engine.executors.base import (
    ARTIFACT_LOAD_FAILED,
    BAD_ARGUMENTS,
    COMPLETED,
    DEFAULT_LOG_LIMIT,
    EXCEPTION,
    FAILED,
    OUT_OF_MEMORY,
    PROCESS_EXIT,
    PROCESS_OUTPUT_INVALID,
    RESULT_NOT_SERIALIZABLE,
    WORKER_CRASHED,
    Artifact,
    Executor,
    Job,
    Outcome,
    Sink,
)

if TYPE_CHECKING:
    from spearlet.engine.executors.process_pool import ProcessExecutor
    from spearlet.engine.executors.subprocess_runner import SubprocessRunner
    from spearlet.engine.executors.thread import ThreadExecutor

_LAZY = {
    "ProcessExecutor": "process_pool",
    "SubprocessRunner": "subprocess_runner",
    "ThreadExecutor": "thread",
}

__all__ = [
    "ARTIFACT_LOAD_FAILED",
    "BAD_ARGUMENTS",
    "COMPLETED",
    "DEFAULT_LOG_LIMIT",
    "EXCEPTION",
    "FAILED",
    "OUT_OF_MEMORY",
    "PROCESS_EXIT",
    "PROCESS_OUTPUT_INVALID",
    "RESULT_NOT_SERIALIZABLE",
    "WORKER_CRASHED",
    "Artifact",
    "Executor",
    "Job",
    "Outcome",
    "ProcessExecutor",
    "Sink",
    "SubprocessRunner",
    "ThreadExecutor",
    "create_executor",
]


def create_executor(kind: str, size: int, **kw: Any) -> Executor:
    """``kind`` is "process", "thread" or "dask"; ``size`` warm workers (threads; for dask, the workers of a
    local cluster); ``kw`` go to the constructor."""
    if kind == "process":
        from spearlet.engine.executors.process_pool import ProcessExecutor

        return ProcessExecutor(size, **kw)
    if kind == "thread":
        from spearlet.engine.executors.thread import ThreadExecutor

        return ThreadExecutor(size, **kw)
    if kind == "dask":
        try:
            from spearlet.engine.executors.dask.executor import DaskExecutor
        except ImportError as exc:
            raise ValueError(
                f"the dask executor needs distributed ({exc}); install it with pip install 'spear-lab[dask]'"
            ) from None
        return DaskExecutor(size, **kw)
    raise ValueError(f"unknown executor {kind!r} (expected 'process', 'thread' or 'dask')")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
