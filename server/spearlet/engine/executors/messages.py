"""The messages between the process pool (:mod:`.process_pool`) and a worker process (:mod:`.worker`).

Both sides import these definitions. Every message is one frame as
:meth:`multiprocessing.connection.Connection.send_bytes` writes it (a 4-byte big-endian length, or -1 and an
8-byte length past 2 GiB) holding one pickled value: a ``Job``, or a plain tuple whose first item names its
kind. Plain tuples, not classes: a class costs several microseconds more to pickle and unpickle, and a
stream sends one message per value.

pool → worker
    :data:`InitMessage`     first, once
    :data:`JobMessage`      a :class:`.base.Job` (:func:`job_message`), any number, at any time: the worker
                            runs them in order, one after another, so a batch sends a pipeline of jobs in
                            one write

worker → pool
    :data:`ReadyMessage`    after init: jobs are welcome
    :data:`StartedMessage`  a job with ``announce_start`` is starting (it waited behind others)
    :data:`LogMessage`      captured stdout/stderr, coalesced (see :mod:`.capture`)
    :data:`ChunkMessage`    one streamed value of the running job
    :data:`ResultMessage`   the running job ended (:func:`result_message`); the next one, if queued, starts
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from spearlet.engine.executors.base import Artifact, Job, Outcome

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

#: A :class:`.base.Job`'s fields in their order, its artifact's as a tuple of their own, in plain containers.
JobMessage = tuple[Any, ...]

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
    outcome = object.__new__(Outcome)  # (see job_of)
    outcome.__dict__.update(
        status=status,
        result=result,
        error_code=code,
        error_message=text,
        memory_used_bytes=memory,
        cpu_time_ms=cpu,
        instance_id=instance_id,
        remote_type=remote_type,
        remote_message=remote_message,
        remote_traceback=remote_traceback,
    )
    return outcome


_JOB_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_ARTIFACT_FIELDS = tuple(f.name for f in dataclasses.fields(Artifact))
_ARTIFACT_AT = _JOB_FIELDS.index("artifact")


def job_message(job: Job) -> JobMessage:
    """The job as plain tuples: a dataclass costs the worker a class lookup and a ``__dict__`` per
    instance to unpickle (about 20 µs a job, against a few for the tuples). Mappings and sequences of
    other types (the engine's) become dicts and lists, which pickle whatever they held."""
    artifact = job.artifact
    metadata = artifact.metadata if type(artifact.metadata) is dict else dict(artifact.metadata)
    state = job.__dict__
    values = [state[name] for name in _JOB_FIELDS]
    values[_ARTIFACT_AT] = (
        artifact.type,
        artifact.location,
        artifact.function_name,
        artifact.payload,
        metadata,
        artifact.cache_key,
    )
    for name in ("kwargs", "environment"):
        value = state[name]
        if type(value) is not dict:
            values[_JOB_FIELDS.index(name)] = dict(value)
    if type(job.args) not in (list, tuple):
        values[_JOB_FIELDS.index("args")] = list(job.args)
    return tuple(values)


def job_of(message: JobMessage) -> Job:
    """The :class:`.base.Job` :func:`job_message` made (frozen dataclasses filled without ``__init__``,
    which sets each field through ``object.__setattr__``)."""
    artifact = object.__new__(Artifact)
    artifact.__dict__.update(zip(_ARTIFACT_FIELDS, message[_ARTIFACT_AT], strict=True))
    job = object.__new__(Job)
    job.__dict__.update(zip(_JOB_FIELDS, message, strict=True))
    job.__dict__["artifact"] = artifact
    return job
