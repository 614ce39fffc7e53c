"""Execution records: the ExecutionInfo layout round-trips, 0.1.0's JSON records still read, and a
ListExecutions page built from stored bytes is the message the protocol defines."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict

import pytest
from spearlet.pages import execution_page
from spearlet.store.records import StoredExecution, compact_json, execution_info_bytes

from spear_sdk.wire import function_pb2 as fpb


def record(**changes: object) -> StoredExecution:
    values: dict[str, object] = {
        "execution_id": "01a2000000000000000000aa",
        "task_id": "01a2000000000000000000bb",
        "task_name": "square",
        "function_name": "",
        "mode": fpb.EXECUTION_MODE_ASYNC,
        "status": fpb.EXECUTION_STATUS_COMPLETED,
        "created_at": 1_795_000_000.25,
        "started_at": 1_795_000_000.5,
        "completed_at": 1_795_000_001.75,
        "execution_time_ms": 1250,
        "memory_used_bytes": 4096,
        "cpu_time_ms": 12.5,
        "queue_time_ms": 0.25,
        "error_code": "",
        "error_message": "",
        "attempt": 1,
        "instance_id": "worker-1",
        "metadata": {"spear.cell": "7", "header.accept": "x"},
        "result": b"\x00\x01binary",
    }
    values.update(changes)
    return StoredExecution(**values)  # type: ignore[arg-type]


def test_a_record_round_trips_and_carries_its_execution_info() -> None:
    for original in (record(), record(started_at=None, completed_at=None, result=None, status=1)):
        decoded = StoredExecution.decode(original.encode())
        assert asdict(decoded) == asdict(original)
        assert fpb.ExecutionInfo.FromString(execution_info_bytes(original.encode())) == original.info()


@pytest.mark.parametrize(
    ("cpu", "queue", "result"),
    [
        (12.5, 0.25, b"\x00\x01binary"),
        (0, 3, None),
        (1e-7, 123456789.123, b""),
        (float("nan"), float("inf"), b"x"),
    ],
)
def test_the_fields_beside_the_execution_info_are_the_json_the_encoder_writes(
    cpu: float, queue: float, result: bytes | None
) -> None:
    original = record(cpu_time_ms=cpu, queue_time_ms=queue, result=result)
    data = original.encode()
    extra = data[data.rindex(b'{"cpu_time_ms"') :]
    value = None if result is None else base64.b64encode(result).decode()
    assert extra == compact_json({"cpu_time_ms": cpu, "queue_time_ms": queue, "result": value})
    decoded = StoredExecution.decode(data)
    assert decoded.result == result
    assert repr(decoded.cpu_time_ms) == repr(cpu) and repr(decoded.queue_time_ms) == repr(queue)


def test_records_written_as_json_by_0_1_0_still_read() -> None:
    original = record()
    raw = asdict(original)
    raw["result"] = base64.b64encode(original.result or b"").decode()
    legacy = json.dumps(raw).encode()
    assert asdict(StoredExecution.decode(legacy)) == asdict(original)
    assert fpb.ExecutionInfo.FromString(execution_info_bytes(legacy)) == original.info()


def test_a_page_built_from_bytes_is_the_protocol_message() -> None:
    infos = [record(execution_id=f"{i:024x}").info() for i in range(3)]
    infos.append(record(error_message="x" * 20_000).info())  # a length past the precomputed ones
    page = execution_page([i.SerializeToString() for i in infos], True, "000000000000000000000003")
    expected = fpb.ListExecutionsResponse(
        executions=infos, has_more=True, next_start_after="000000000000000000000003"
    )
    assert fpb.ListExecutionsResponse.FromString(page.data) == expected
    assert (
        fpb.ListExecutionsResponse.FromString(execution_page([], False, "").data)
        == fpb.ListExecutionsResponse()
    )
