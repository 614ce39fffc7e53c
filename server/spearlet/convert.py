"""Records <-> protocol messages (an execution record carries its own ``ExecutionInfo``: see
``store.records``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any

from google.protobuf import any_pb2

from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

from .engine.core import Invocation
from .stats import TaskFigures
from .store.records import StoredArtifact, StoredExecution, StoredObject, StoredTask

STATUS_ENDPOINT = "/spearlet.FunctionService/GetExecutionStatus?execution_id={}"


def artifact_from_proto(spec: fpb.ArtifactSpec) -> StoredArtifact:
    # StoredArtifact's fields are named after ArtifactSpec's.
    stored = StoredArtifact(**{f.name: getattr(spec, f.name) for f in fields(StoredArtifact)})
    stored.metadata = dict(spec.metadata)
    return stored


def artifact_to_proto(artifact: StoredArtifact) -> fpb.ArtifactSpec:
    return fpb.ArtifactSpec(**asdict(artifact))


def invocation(request: fpb.InvokeFunctionRequest, *, stream: bool) -> Invocation:
    ctx = request.context
    existing = request.invocation_type == fpb.INVOCATION_TYPE_EXISTING_TASK or (
        request.invocation_type == fpb.INVOCATION_TYPE_UNKNOWN and bool(request.task_id)
    )
    return Invocation(
        task_id=request.task_id,
        task_name=request.task_name,
        task_description=request.task_description,
        artifact=artifact_from_proto(request.artifact_spec) if request.HasField("artifact_spec") else None,
        existing_task=existing,
        create_if_not_exists=request.create_if_not_exists,
        function_name=request.function_name,
        params=[(p.name, p.value) for p in request.parameters],
        mode=fpb.EXECUTION_MODE_STREAM if stream else request.execution_mode or fpb.EXECUTION_MODE_SYNC,
        stream=stream,
        execution_id=request.execution_id if request.HasField("execution_id") else ctx.execution_id,
        environment=_copy(ctx.environment),
        headers=_copy(ctx.headers),
        session_id=ctx.session_id,
        user_id=ctx.user_id,
        metadata=_copy(request.invocation_metadata),
        timeout_ms=ctx.timeout_ms,
        max_retries=ctx.max_retries,
        force_new_instance=request.force_new_instance,
        object_refs=list(request.object_refs),
    )


def _copy(entries: Mapping[str, str]) -> dict[str, str]:
    # A protobuf map copies through the Mapping interface, a call per key: most are empty.
    return dict(entries) if entries else {}


def result_value(record: StoredExecution) -> any_pb2.Any | None:
    return any_pb2.Any.FromString(record.result) if record.result is not None else None


def execution_result(record: StoredExecution, *, include_value: bool = True) -> fpb.ExecutionResult:
    result = fpb.ExecutionResult()
    fill_execution_result(result, record, include_value=include_value)
    return result


def fill_execution_result(
    result: fpb.ExecutionResult, record: StoredExecution, *, include_value: bool = True
) -> None:
    """:func:`execution_result` into a response's field, in place (a message handed to a constructor is
    copied)."""
    result.status = record.status  # type: ignore[assignment]
    result.error_message = record.error_message
    result.error_code = record.error_code
    result.execution_time_ms = record.execution_time_ms
    result.memory_used_bytes = record.memory_used_bytes
    metrics = result.metrics
    metrics["queue_time_ms"] = f"{record.queue_time_ms:.3f}"
    metrics["cpu_time_ms"] = f"{record.cpu_time_ms:.3f}"
    metrics["attempts"] = str(record.attempt)
    if include_value and record.result is not None:
        result.result.ParseFromString(record.result)  # in place, not parsed apart and then copied
    record.fill_times_and_error(result)


def task_info(task: StoredTask, figures: TaskFigures, *, details: bool = True) -> fpb.TaskInfo:
    info = fpb.TaskInfo(
        task_id=task.task_id,
        task_name=task.name,
        created_at=int(task.created_at),
        updated_at=int(task.updated_at),
        execution_count=figures.executions,
        last_status=figures.newest_status,  # type: ignore[arg-type]
        description=task.description,
    )
    if details:
        info.artifact_spec.CopyFrom(artifact_to_proto(task.artifact))
        info.metadata.update(task.metadata)
        info.metadata["version"] = str(task.version)
    return info


def _object_fields(obj: StoredObject) -> dict[str, Any]:
    """What ObjectMeta and Object share."""
    return {
        "key": obj.key,
        "size": obj.size,
        "created_at": int(obj.created_at),
        "updated_at": int(obj.updated_at),
        "ref_count": obj.ref_count,
        "pinned": obj.pinned,
        "metadata": obj.metadata,
    }


def object_meta(obj: StoredObject) -> opb.ObjectMeta:
    return opb.ObjectMeta(**_object_fields(obj))


def object_message(obj: StoredObject, *, include_value: bool) -> opb.Object:
    return opb.Object(value=obj.value if include_value else b"", **_object_fields(obj))
