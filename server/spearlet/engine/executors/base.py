"""The contract between the engine and whatever runs a function.

The engine owns the lifecycle (records, queueing, deadlines, retries); an executor only runs one
:class:`Job` and reports an :class:`Outcome`. Values cross this boundary as serialized
``google.protobuf.Any`` bytes, so the server process never decodes (or unpickles) a user's objects:
workers decode arguments and encode results with :mod:`spear_sdk.wire.codec`.

docs/design.md ("Executors") describes this interface for whoever writes another executor.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: Outcome statuses an executor reports; deadlines and cancellation are the engine's to name.
COMPLETED = "completed"
FAILED = "failed"

# Error codes that executors produce (docs/protocol.md lists them all).
EXCEPTION = "EXCEPTION"
WORKER_CRASHED = "WORKER_CRASHED"
ARTIFACT_LOAD_FAILED = "ARTIFACT_LOAD_FAILED"
BAD_ARGUMENTS = "BAD_ARGUMENTS"
RESULT_NOT_SERIALIZABLE = "RESULT_NOT_SERIALIZABLE"
RESULT_TOO_LARGE = "RESULT_TOO_LARGE"
PROCESS_EXIT = "PROCESS_EXIT"
PROCESS_OUTPUT_INVALID = "PROCESS_OUTPUT_INVALID"
OUT_OF_MEMORY = "OUT_OF_MEMORY"
# Outcomes of a pipeline's jobs that are the engine's to resolve: stopped on request, or never started.
STOPPED = "STOPPED"
NOT_STARTED = "NOT_STARTED"

DEFAULT_LOG_LIMIT = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """What to run: a task's artifact, resolved by the engine."""

    type: str  # "python" | "pickle" | "process"
    location: str
    function_name: str = ""
    #: pickle: the cloudpickle bytes, already read from the object store and checksum-verified.
    payload: bytes | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Identifies this version of the artifact; workers may cache what they loaded under it.
    cache_key: str = ""


@dataclass(frozen=True)
class Job:
    """One attempt of one execution."""

    execution_id: str
    artifact: Artifact
    args: Sequence[bytes] = ()
    kwargs: Mapping[str, bytes] = field(default_factory=dict)
    stream: bool = False
    #: Environment variables set for this run only.
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Encode results for a Python caller (codec ``exact=True``) instead of plain JSON values.
    exact_results: bool = False
    #: Whether pickled argument values may be decoded.
    allow_pickle: bool = True
    log_limit_bytes: int = DEFAULT_LOG_LIMIT
    #: Run in a worker started for this call instead of a warm one.
    fresh_instance: bool = False
    #: MiB of address space the call may add to its worker process (0: no limit); see :mod:`.call`.
    memory_limit_mb: int = 0
    #: Have the worker say when it starts the job: it may wait behind others (a pipeline of a batch).
    #: A job sent alone starts on arrival, and the message would cost the server a wake-up.
    announce_start: bool = False
    #: The server's object directory (``spearlet.blobs``): arguments by reference are read from it, and
    #: results past ``inline_limit`` are written to it. Empty: no values by reference.
    object_dir: str = ""
    #: A result or chunk whose serialized size passes this travels by reference (0: never).
    inline_limit: int = 0
    #: Largest value that can travel inline, in one message (0: no limit).
    max_inline_bytes: int = 0
    #: Largest object (``--max-object-bytes``).
    max_object_bytes: int = 0
    #: Which attempt of the execution this is (1: the first; more after a lost worker). An executor that
    #: names its work after the execution (a Dask key) tells the attempts apart by it.
    attempt: int = 1
    #: The attempt's run-time limit in ms (0: none). The engine enforces it; an executor whose workers are
    #: on other machines also enforces it there, so that it holds while the two cannot talk.
    timeout_ms: int = 0


def job_for_call(template: Job, execution_id: str, args: Sequence[bytes], kwargs: Mapping[str, bytes]) -> Job:
    """``template`` with one call's id and arguments: a batch makes one per call, and this costs a
    fraction of ``dataclasses.replace``."""
    job = object.__new__(Job)  # (``copy.copy`` goes through ``__reduce_ex__``: several times slower)
    job.__dict__.update(template.__dict__, execution_id=execution_id, args=args, kwargs=kwargs)
    return job


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended, when it ended on its own."""

    status: str  # COMPLETED | FAILED
    result: bytes | None = None  # serialized Any; None for streams and failures
    error_code: str = ""
    error_message: str = ""
    memory_used_bytes: int = 0
    cpu_time_ms: float = 0.0
    instance_id: str = ""
    #: What the function raised (error_code EXCEPTION or OUT_OF_MEMORY): its class name, ``str()`` and
    #: formatted traceback; empty otherwise.
    remote_type: str = ""
    remote_message: str = ""
    remote_traceback: str = ""

    @property
    def worker_lost(self) -> bool:
        """The run was lost to a system failure and may be retried."""
        return self.error_code == WORKER_CRASHED


@dataclass(frozen=True)
class Pipeline:
    """Jobs queued on one worker (see ``ProcessExecutor.start_pipeline``): an outcome each, in order."""

    outcomes: list[asyncio.Future[Outcome]]
    #: Kill the worker: the running job ends STOPPED, the rest NOT_STARTED.
    stop: Callable[[], None]


@dataclass(frozen=True)
class ClusterFigures:
    """What an executor that runs jobs on a cluster says of it (health and stats show it)."""

    #: Where the cluster is reached (a scheduler's address).
    address: str = ""
    #: Whether it can be reached now; while it cannot, jobs fail at once.
    reachable: bool = False
    workers: int = 0
    threads: int = 0
    #: Jobs it runs at once.
    slots: int = 0
    memory_limit_bytes: int = 0
    memory_used_bytes: int = 0
    #: The workers' names, as ``Outcome.instance_id`` shows them.
    worker_names: tuple[str, ...] = ()


class Sink(Protocol):
    """Where an executor reports a running job's progress. Called on the event loop."""

    def started(self, instance_id: str) -> None:
        """The job reached the worker named ``instance_id``."""

    def chunk(self, data: bytes) -> bool:
        """One streamed value (serialized Any).

        False when the reader has fallen behind: send no more chunks until :meth:`writable` returns.
        """

    async def writable(self) -> None:
        """Return once chunks are welcome again (or the execution has ended)."""

    def log(self, text: str) -> None:
        """Captured stdout/stderr text (already bounded by ``Job.log_limit_bytes``)."""


class Executor(abc.ABC):
    """Runs jobs. ``run`` is cancelled by the engine on timeout or cancel.

    An executor may also offer ``async start_pipeline(jobs, sinks) -> Pipeline`` to run a batch's jobs back
    to back on one worker; without it, the engine runs them one after another through :meth:`run`."""

    #: "process", "thread" or "dask", shown in health details.
    name: str
    #: Whether cancelling ``run`` really stops the work (a thread can only be abandoned).
    stops_work: bool
    #: Whether ``Job.memory_limit_mb`` can be enforced (it needs a process of the job's own).
    limits_memory: bool
    #: Whether it runs ``process`` artifacts too (on its own workers); if not, the engine runs them on
    #: this machine (``SubprocessRunner``).
    runs_processes: bool = False

    @abc.abstractmethod
    async def start(self) -> None:
        """Get ready (warm the pool); raise if no worker can be started."""

    @abc.abstractmethod
    async def run(self, job: Job, sink: Sink) -> Outcome:
        """Run ``job`` to its end.

        Cancelling this coroutine stops the work before the ``CancelledError`` propagates: a process
        worker is killed (and replaced in the background), a thread is abandoned.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop every worker; no process is left behind."""

    @abc.abstractmethod
    def worker_pids(self) -> list[int]:
        """Pids of the live worker processes (for memory and CPU figures)."""

    @property
    @abc.abstractmethod
    def healthy(self) -> bool:
        """False when workers cannot be started."""

    def cluster(self) -> ClusterFigures | None:
        """The cluster the jobs run on; None for an executor whose workers are this server's own
        (``worker_pids`` then covers them). Known after :meth:`start`; its ``slots`` are what
        ``max_concurrent`` defaults to."""
        return None
