"""The generated protocol keeps the fixed Spearlet v1 contract (docs/protocol.md) and matches the .proto
files."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from spear_sdk.wire import function_pb2, object_pb2

ROOT = Path(__file__).resolve().parents[2]

# The Spearlet v1 protocol: (number, name, type) of every v1 field. Never edit to fit the code.
V1_FUNCTION_MESSAGES: dict[str, list[tuple[int, str, str]]] = {
    "ArtifactSpec": [
        (1, "artifact_id", "string"),
        (2, "artifact_type", "string"),
        (3, "location", "string"),
        (4, "version", "string"),
        (5, "checksum", "string"),
        (6, "metadata", "map<string,string>"),
    ],
    "FunctionParameter": [
        (1, "name", "string"),
        (2, "type", "string"),
        (3, "value", "google.protobuf.Any"),
        (4, "required", "bool"),
        (5, "description", "string"),
    ],
    "ExecutionContext": [
        (1, "execution_id", "string"),
        (2, "session_id", "string"),
        (3, "user_id", "string"),
        (4, "environment", "map<string,string>"),
        (5, "headers", "map<string,string>"),
        (6, "timeout_ms", "int64"),
        (7, "max_retries", "int32"),
    ],
    "ExecutionResult": [
        (1, "status", "ExecutionStatus"),
        (2, "result", "Any"),
        (3, "error_message", "string"),
        (4, "error_code", "string"),
        (5, "execution_time_ms", "int64"),
        (6, "memory_used_bytes", "int64"),
        (7, "metrics", "map<string,string>"),
        (8, "started_at", "Timestamp"),
        (9, "completed_at", "Timestamp"),
    ],
    "InvokeFunctionRequest": [
        (1, "invocation_type", "InvocationType"),
        (2, "task_name", "string"),
        (3, "task_description", "string"),
        (4, "artifact_spec", "ArtifactSpec"),
        (5, "task_id", "string"),
        (6, "function_name", "string"),
        (7, "parameters", "repeated FunctionParameter"),
        (8, "execution_mode", "ExecutionMode"),
        (9, "context", "ExecutionContext"),
        (10, "create_if_not_exists", "bool"),
        (11, "force_new_instance", "bool"),
        (12, "invocation_metadata", "map<string,string>"),
        (13, "wait", "bool"),
        (14, "execution_id", "optional string"),
    ],
    "InvokeFunctionResponse": [
        (1, "success", "bool"),
        (2, "message", "string"),
        (3, "execution_id", "string"),
        (4, "task_id", "string"),
        (5, "instance_id", "string"),
        (6, "result", "ExecutionResult"),
        (7, "status_endpoint", "string"),
        (8, "estimated_completion_ms", "int64"),
    ],
    "GetExecutionStatusRequest": [
        (1, "execution_id", "string"),
        (2, "include_result", "bool"),
        (3, "include_logs", "bool"),
    ],
    "GetExecutionStatusResponse": [
        (1, "found", "bool"),
        (2, "result", "ExecutionResult"),
        (3, "logs", "repeated string"),
        (4, "message", "string"),
    ],
    "CancelExecutionRequest": [
        (1, "execution_id", "string"),
        (2, "reason", "string"),
        (3, "force", "bool"),
    ],
    "CancelExecutionResponse": [
        (1, "success", "bool"),
        (2, "message", "string"),
        (3, "final_status", "ExecutionStatus"),
    ],
    "StreamExecutionResult": [
        (1, "execution_id", "string"),
        (2, "status", "ExecutionStatus"),
        (3, "chunk_data", "Any"),
        (4, "is_final", "bool"),
        (5, "error_message", "string"),
        (6, "metadata", "map<string,string>"),
    ],
    "ListTasksRequest": [
        (1, "prefix", "string"),
        (2, "limit", "int32"),
        (3, "start_after", "string"),
        (4, "include_details", "bool"),
    ],
    "ListTasksResponse": [
        (1, "tasks", "repeated TaskInfo"),
        (2, "has_more", "bool"),
        (3, "next_start_after", "string"),
    ],
    "TaskInfo": [
        (1, "task_id", "string"),
        (2, "task_name", "string"),
        (3, "artifact_spec", "ArtifactSpec"),
        (4, "created_at", "int64"),
        (5, "updated_at", "int64"),
        (6, "execution_count", "int32"),
        (7, "last_status", "ExecutionStatus"),
        (8, "metadata", "map<string,string>"),
    ],
    "GetTaskRequest": [
        (1, "task_id", "string"),
        (2, "include_executions", "bool"),
        (3, "execution_limit", "int32"),
    ],
    "GetTaskResponse": [
        (1, "found", "bool"),
        (2, "task", "TaskInfo"),
        (3, "executions", "repeated ExecutionInfo"),
        (4, "message", "string"),
    ],
    "DeleteTaskRequest": [
        (1, "task_id", "string"),
        (2, "force", "bool"),
        (3, "cleanup_executions", "bool"),
    ],
    "DeleteTaskResponse": [
        (1, "success", "bool"),
        (2, "message", "string"),
        (3, "deleted", "bool"),
        (4, "cleaned_executions", "int32"),
    ],
    "ListExecutionsRequest": [
        (1, "task_id", "string"),
        (2, "limit", "int32"),
        (3, "start_after", "string"),
        (4, "status_filter", "ExecutionStatus"),
    ],
    "ListExecutionsResponse": [
        (1, "executions", "repeated ExecutionInfo"),
        (2, "has_more", "bool"),
        (3, "next_start_after", "string"),
    ],
    "ExecutionInfo": [
        (1, "execution_id", "string"),
        (2, "task_id", "string"),
        (3, "function_name", "string"),
        (4, "execution_mode", "ExecutionMode"),
        (5, "status", "ExecutionStatus"),
        (6, "started_at", "Timestamp"),
        (7, "completed_at", "Timestamp"),
        (8, "execution_time_ms", "int64"),
        (9, "memory_used_bytes", "int64"),
        (10, "error_message", "string"),
        (11, "metadata", "map<string,string>"),
    ],
    "GetHealthRequest": [
        (1, "include_details", "bool"),
    ],
    "GetHealthResponse": [
        (1, "status", "string"),
        (2, "message", "string"),
        (3, "uptime_seconds", "int64"),
        (4, "details", "HealthDetails"),
    ],
    "HealthDetails": [
        (1, "active_tasks", "int32"),
        (2, "running_executions", "int32"),
        (3, "pending_executions", "int32"),
        (4, "total_memory_used", "int64"),
        (5, "total_executions", "int64"),
        (6, "system_info", "map<string,string>"),
    ],
    "GetStatsRequest": [
        (1, "include_task_stats", "bool"),
        (2, "include_execution_stats", "bool"),
        (3, "time_range_hours", "int32"),
    ],
    "GetStatsResponse": [
        (1, "service_stats", "ServiceStats"),
        (2, "task_stats", "TaskStats"),
        (3, "execution_stats", "ExecutionStats"),
    ],
    "ServiceStats": [
        (1, "uptime_seconds", "int64"),
        (2, "total_tasks", "int32"),
        (3, "total_executions", "int32"),
        (4, "total_memory_used", "int64"),
        (5, "cpu_usage_percent", "double"),
        (6, "memory_usage_percent", "double"),
    ],
    "TaskStats": [
        (1, "active_tasks", "int32"),
        (2, "idle_tasks", "int32"),
        (3, "tasks_by_type", "map<string,int32>"),
        (4, "most_active_tasks", "repeated TaskInfo"),
    ],
    "ExecutionStats": [
        (1, "running_executions", "int32"),
        (2, "pending_executions", "int32"),
        (3, "completed_executions", "int32"),
        (4, "failed_executions", "int32"),
        (5, "average_execution_time_ms", "double"),
        (6, "success_rate_percent", "double"),
        (7, "executions_by_function", "map<string,int32>"),
    ],
}

V1_OBJECT_MESSAGES = {
    "ObjectMeta": [
        (1, "key", "string"),
        (2, "size", "int64"),
        (3, "created_at", "int64"),
        (4, "updated_at", "int64"),
        (5, "ref_count", "int32"),
        (6, "pinned", "bool"),
        (7, "metadata", "map<string,string>"),
    ],
    "Object": [
        (1, "key", "string"),
        (2, "value", "bytes"),
        (3, "size", "int64"),
        (4, "created_at", "int64"),
        (5, "updated_at", "int64"),
        (6, "ref_count", "int32"),
        (7, "pinned", "bool"),
        (8, "metadata", "map<string,string>"),
    ],
    "PutObjectRequest": [
        (1, "key", "string"),
        (2, "value", "bytes"),
        (3, "metadata", "map<string,string>"),
        (4, "overwrite", "bool"),
    ],
    "PutObjectResponse": [(1, "success", "bool"), (2, "message", "string"), (3, "object_meta", "ObjectMeta")],
    "GetObjectRequest": [(1, "key", "string"), (2, "include_value", "bool")],
    "GetObjectResponse": [(1, "found", "bool"), (2, "object", "Object"), (3, "message", "string")],
    "ListObjectsRequest": [
        (1, "prefix", "string"),
        (2, "limit", "int32"),
        (3, "start_after", "string"),
        (4, "include_values", "bool"),
    ],
    "ListObjectsResponse": [
        (1, "objects", "repeated Object"),
        (2, "has_more", "bool"),
        (3, "next_start_after", "string"),
    ],
    "AddObjectRefRequest": [(1, "key", "string"), (2, "count", "int32")],
    "AddObjectRefResponse": [(1, "success", "bool"), (2, "message", "string"), (3, "new_ref_count", "int32")],
    "RemoveObjectRefRequest": [(1, "key", "string"), (2, "count", "int32")],
    "RemoveObjectRefResponse": [
        (1, "success", "bool"),
        (2, "message", "string"),
        (3, "new_ref_count", "int32"),
        (4, "deleted", "bool"),
    ],
    "PinObjectRequest": [(1, "key", "string")],
    "PinObjectResponse": [(1, "success", "bool"), (2, "message", "string")],
    "UnpinObjectRequest": [(1, "key", "string")],
    "UnpinObjectResponse": [(1, "success", "bool"), (2, "message", "string")],
    "DeleteObjectRequest": [(1, "key", "string"), (2, "force", "bool")],
    "DeleteObjectResponse": [(1, "success", "bool"), (2, "message", "string"), (3, "deleted", "bool")],
}

V1_ENUMS = {
    "InvocationType": [
        "INVOCATION_TYPE_UNKNOWN",
        "INVOCATION_TYPE_NEW_TASK",
        "INVOCATION_TYPE_EXISTING_TASK",
    ],
    "ExecutionMode": [
        "EXECUTION_MODE_UNKNOWN",
        "EXECUTION_MODE_SYNC",
        "EXECUTION_MODE_ASYNC",
        "EXECUTION_MODE_STREAM",
    ],
    "ExecutionStatus": [
        "EXECUTION_STATUS_UNKNOWN",
        "EXECUTION_STATUS_PENDING",
        "EXECUTION_STATUS_RUNNING",
        "EXECUTION_STATUS_COMPLETED",
        "EXECUTION_STATUS_FAILED",
        "EXECUTION_STATUS_CANCELLED",
        "EXECUTION_STATUS_TIMEOUT",
    ],
}

V1_RPCS = {
    "FunctionService": {
        "InvokeFunction": ("InvokeFunctionRequest", "InvokeFunctionResponse", False),
        "GetExecutionStatus": ("GetExecutionStatusRequest", "GetExecutionStatusResponse", False),
        "CancelExecution": ("CancelExecutionRequest", "CancelExecutionResponse", False),
        "StreamFunction": ("InvokeFunctionRequest", "StreamExecutionResult", True),
        "ListTasks": ("ListTasksRequest", "ListTasksResponse", False),
        "GetTask": ("GetTaskRequest", "GetTaskResponse", False),
        "DeleteTask": ("DeleteTaskRequest", "DeleteTaskResponse", False),
        "ListExecutions": ("ListExecutionsRequest", "ListExecutionsResponse", False),
        "GetHealth": ("GetHealthRequest", "GetHealthResponse", False),
        "GetStats": ("GetStatsRequest", "GetStatsResponse", False),
    },
    "ObjectService": {
        name: (f"{name}Request", f"{name}Response", False)
        for name in (
            "PutObject",
            "GetObject",
            "ListObjects",
            "AddObjectRef",
            "RemoveObjectRef",
            "PinObject",
            "UnpinObject",
            "DeleteObject",
        )
    },
}

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "string",
    FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_BOOL: "bool",
    FieldDescriptor.TYPE_INT32: "int32",
    FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_DOUBLE: "double",
}


def _type_name(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return field.message_type.name
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.name
    return _SCALARS[field.type]


def _describe(field: FieldDescriptor) -> str:
    """A field's type written the way this table writes it."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
        return f"map<{_type_name(key)},{_type_name(value)}>"
    if field.is_repeated:
        return f"repeated {_type_name(field)}"
    if field.has_presence and field.containing_oneof is not None:
        return f"optional {_type_name(field)}"
    return _type_name(field)


def _spec_type(text: str) -> str:
    return (
        text.replace("google.protobuf.", "")
        .replace(" ", "")
        .replace("repeated", "repeated ")
        .replace("optional", "optional ")
    )


def _messages() -> list[tuple[Descriptor, list[tuple[int, str, str]]]]:
    cases = [(function_pb2.DESCRIPTOR.message_types_by_name[n], f) for n, f in V1_FUNCTION_MESSAGES.items()]
    cases += [(object_pb2.DESCRIPTOR.message_types_by_name[n], f) for n, f in V1_OBJECT_MESSAGES.items()]
    return cases


@pytest.mark.parametrize(("message", "fields"), _messages(), ids=lambda v: getattr(v, "name", ""))
def test_every_v1_field_keeps_its_name_number_and_type(
    message: Descriptor, fields: list[tuple[int, str, str]]
) -> None:
    for number, name, spec_type in fields:
        field = message.fields_by_number.get(number)
        assert field is not None, f"{message.name}.{number} is missing"
        assert field.name == name, f"{message.name}.{number} is {field.name}, v1 says {name}"
        assert _describe(field) == _spec_type(spec_type), f"{message.name}.{name}"


@pytest.mark.parametrize(("message", "fields"), _messages(), ids=lambda v: getattr(v, "name", ""))
def test_extension_fields_only_take_higher_numbers(
    message: Descriptor, fields: list[tuple[int, str, str]]
) -> None:
    highest_v1 = max(number for number, _, _ in fields)
    extras = [f for f in message.fields if f.number not in {number for number, _, _ in fields}]
    assert all(f.number > highest_v1 for f in extras), [f.name for f in extras]


def test_spec_extensions_are_present() -> None:
    messages = function_pb2.DESCRIPTOR.message_types_by_name
    assert {"created_at", "attempt"} <= set(messages["ExecutionInfo"].fields_by_name)
    assert {"task_count", "object_count", "total_object_size"} <= set(
        messages["HealthDetails"].fields_by_name
    )
    assert {"cancelled_executions", "timeout_executions"} <= set(messages["ExecutionStats"].fields_by_name)
    assert "RegisterTask" in function_pb2.DESCRIPTOR.services_by_name["FunctionService"].methods_by_name


def test_enums_keep_their_values() -> None:
    for enum_name, names in V1_ENUMS.items():
        enum = function_pb2.DESCRIPTOR.enum_types_by_name[enum_name]
        assert [(v.name, v.number) for v in enum.values] == [(n, i) for i, n in enumerate(names)]


def test_rpcs_keep_their_signatures() -> None:
    for module in (function_pb2, object_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for name, (request, response, streaming) in V1_RPCS[service.name].items():
                method = service.methods_by_name[name]
                assert method.input_type.name == request
                assert method.output_type.name == response
                assert method.server_streaming is streaming and not method.client_streaming


def test_package_and_files() -> None:
    assert function_pb2.DESCRIPTOR.package == object_pb2.DESCRIPTOR.package == "spearlet"
    assert function_pb2.DESCRIPTOR.name == "spearlet/function.proto"
    assert object_pb2.DESCRIPTOR.name == "spearlet/object.proto"
    assert {d.name for d in function_pb2.DESCRIPTOR.dependencies} == {
        "google/protobuf/any.proto",
        "google/protobuf/timestamp.proto",
    }


def test_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    out = tmp_path / "_gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(out)], check=True, capture_output=True
    )
    checked_in = ROOT / "spear_sdk" / "wire" / "_gen"
    names = sorted(p.name for p in checked_in.iterdir() if p.suffix in (".py", ".pyi"))
    assert names == sorted(p.name for p in out.iterdir())
    _, mismatch, errors = filecmp.cmpfiles(checked_in, out, names, shallow=False)
    assert not mismatch and not errors, f"regenerate with scripts/gen_proto.py: {mismatch + errors} differ"
