"""The messages between the process pool (:mod:`.process_pool`) and a worker process (:mod:`.worker`).

Both sides import these definitions. Every message is one frame as
:meth:`multiprocessing.connection.Connection.send_bytes` writes it (a 4-byte big-endian length, or -1 and an
8-byte length past 2 GiB) holding one pickled value.

pool → worker
    :class:`Init`      first, once
    ``Job``            (:class:`.base.Job`) any number, at any time: the worker runs them in order, one
                       after another, so a batch sends a pipeline of jobs in one write

worker → pool
    :class:`Ready`     after ``Init``: jobs are welcome
    :class:`Started`   a job with ``announce_start`` is starting (it waited behind others)
    :class:`Log`       captured stdout/stderr, coalesced (see :mod:`.capture`)
    :class:`Chunk`     one streamed value of the running job
    :class:`Result`    the running job ended; the next one, if queued, starts now
"""

from __future__ import annotations

from typing import NamedTuple


class Init(NamedTuple):
    #: The server's ``sys.path`` (the worker also starts in the server's working directory).
    sys_path: list[str]
    #: The worker exits when this process goes away.
    server_pid: int


class Ready(NamedTuple):
    pid: int


class Started(NamedTuple):
    pass


class Log(NamedTuple):
    text: str


class Chunk(NamedTuple):
    #: A serialized ``google.protobuf.Any``.
    data: bytes


class Result(NamedTuple):
    """An :class:`.base.Outcome` on the wire (the pool adds the worker's instance id)."""

    status: str
    result: bytes | None
    error_code: str
    error_message: str
    memory_used_bytes: int
    cpu_time_ms: float
    remote_type: str
    remote_message: str
    remote_traceback: str


WorkerMessage = Ready | Started | Log | Chunk | Result
