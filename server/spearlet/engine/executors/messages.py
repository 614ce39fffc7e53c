"""The messages between the process pool (:mod:`.process_pool`) and a worker process (:mod:`.worker`).

Both sides import these definitions. Every message is one frame as
:meth:`multiprocessing.connection.Connection.send_bytes` writes it (a 4-byte big-endian length, or -1 and an
8-byte length past 2 GiB) holding one pickled value: a ``Job``, or a plain tuple whose first item names its
kind. Plain tuples, not classes: a class costs several microseconds more to pickle and unpickle, and a
stream sends one message per value.

pool → worker
    :data:`InitMessage`     first, once
    ``Job``                 (:class:`.base.Job`) any number, at any time: the worker runs them in order, one
                            after another, so a batch sends a pipeline of jobs in one write

worker → pool
    :data:`ReadyMessage`    after init: jobs are welcome
    :data:`StartedMessage`  a job with ``announce_start`` is starting (it waited behind others)
    :data:`LogMessage`      captured stdout/stderr, coalesced (see :mod:`.capture`)
    :data:`ChunkMessage`    one streamed value of the running job
    :data:`ResultMessage`   the running job ended (:func:`result_message`); the next one, if queued, starts
"""

from __future__ import annotations

from typing import Literal

from spearlet.engine.executors.base import Outcome

INIT: Literal["init"] = "init"
READY: Literal["ready"] = "ready"
STARTED: Literal["started"] = "started"
LOG: Literal["log"] = "log"
CHUNK: Literal["chunk"] = "chunk"
RESULT: Literal["result"] = "result"

#: ``(INIT, the server's sys.path, the server's pid)``: the worker takes the path (it also starts in the
#: server's working directory) and exits when that process goes away.
InitMessage = tuple[Literal["init"], list[str], int]
#: ``(READY, pid)``
ReadyMessage = tuple[Literal["ready"], int]
#: ``(STARTED,)``
StartedMessage = tuple[Literal["started"]]
#: ``(LOG, text)``
LogMessage = tuple[Literal["log"], str]
#: ``(CHUNK, serialized google.protobuf.Any)``
ChunkMessage = tuple[Literal["chunk"], bytes]
#: ``(RESULT, status, result, error_code, error_message, memory_used_bytes, cpu_time_ms, remote_type,
#: remote_message, remote_traceback)``: an :class:`.base.Outcome` without the instance id.
ResultMessage = tuple[Literal["result"], str, "bytes | None", str, str, int, float, str, str, str]

WorkerMessage = ReadyMessage | StartedMessage | LogMessage | ChunkMessage | ResultMessage


def result_message(outcome: Outcome) -> ResultMessage:
    return (
        RESULT,
        outcome.status,
        outcome.result,
        outcome.error_code,
        outcome.error_message,
        outcome.memory_used_bytes,
        outcome.cpu_time_ms,
        outcome.remote_type,
        outcome.remote_message,
        outcome.remote_traceback,
    )


def outcome_of(message: ResultMessage, instance_id: str) -> Outcome:
    _, status, result, code, text, memory, cpu, remote_type, remote_message, remote_traceback = message
    return Outcome(
        status, result, code, text, memory, cpu, instance_id, remote_type, remote_message, remote_traceback
    )
