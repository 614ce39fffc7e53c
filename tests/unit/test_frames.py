"""Protocol rows → typed DataFrames: the published schemas, missing values and exact values."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from spear_sdk import frames
from spear_sdk.frames import (
    EXECUTION_SCHEMA,
    MODE_DTYPE,
    OBJECT_SCHEMA,
    STATS_SCHEMA,
    STATUS_DTYPE,
    STATUS_NAMES,
    TASK_SCHEMA,
)
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import object_pb2 as opb

NS = 1_000_000_000
UTC = pd.DatetimeTZDtype("ns", "UTC")


def utc_ns(seconds: int, nanos: int = 0) -> pd.Timestamp:
    time: pd.Timestamp = pd.Timestamp(seconds * NS + nanos, unit="ns", tz="UTC")
    return time


def full_execution() -> fpb.ExecutionInfo:
    info = fpb.ExecutionInfo(
        execution_id="ex-1",
        task_id="task-1",
        task_name="squares",
        function_name="square",
        execution_mode=fpb.EXECUTION_MODE_ASYNC,
        status=fpb.EXECUTION_STATUS_COMPLETED,
        execution_time_ms=1_500,
        memory_used_bytes=4096,
        error_message="",
        metadata={"spear.cell": "12", "owner": "ada"},
        attempt=2,
        error_code="",
        instance_id="worker-3",
    )
    info.created_at.seconds, info.created_at.nanos = 1_750_000_000, 123_456_789
    info.started_at.seconds, info.started_at.nanos = 1_750_000_002, 1
    info.completed_at.seconds, info.completed_at.nanos = 1_750_000_003, 500_000_001
    return info


def full_task() -> fpb.TaskInfo:
    return fpb.TaskInfo(
        task_id="task-1",
        task_name="squares",
        artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="workloads:square"),
        created_at=1_700_000_000,
        updated_at=1_700_000_060,
        execution_count=7,
        last_status=fpb.EXECUTION_STATUS_FAILED,
        metadata={"version": "3", "team": "ml"},
        description="squares numbers",
    )


def full_stats() -> fpb.GetStatsResponse:
    return fpb.GetStatsResponse(
        service_stats=fpb.ServiceStats(
            uptime_seconds=3_661,
            total_tasks=4,
            total_executions=30,
            total_memory_used=1 << 30,
            cpu_usage_percent=12.5,
            memory_usage_percent=3.25,
        ),
        task_stats=fpb.TaskStats(active_tasks=1, idle_tasks=3, tasks_by_type={"python": 3, "pickle": 1}),
        execution_stats=fpb.ExecutionStats(
            running_executions=1,
            pending_executions=2,
            completed_executions=20,
            failed_executions=4,
            cancelled_executions=2,
            timeout_executions=1,
            average_execution_time_ms=12.345678,
            success_rate_percent=74.07,
            executions_by_function={"square": 20, "cube": 10},
        ),
    )


def assert_schema(frame: pd.DataFrame, schema: Mapping[str, Any]) -> None:
    assert list(frame.columns) == list(schema)
    assert frame.dtypes.to_dict() == dict(schema)
    # The schema's own dtype objects, not merely equal-looking ones (e.g. "string" vs pandas 3's "str").
    for name, dtype in schema.items():
        assert repr(frame[name].dtype) == repr(dtype), name
    assert isinstance(frame.index, pd.RangeIndex)
    assert frame.index.start == 0 and frame.index.step == 1


# --- the published schemas ------------------------------------------------------------------------------


def test_schemas_are_the_published_columns_and_dtypes() -> None:
    string, integer = pd.StringDtype(), pd.Int64Dtype()
    duration, obj = np.dtype("m8[ns]"), np.dtype(object)
    assert dict(EXECUTION_SCHEMA) == {
        "execution_id": string,
        "task_name": string,
        "function_name": string,
        "status": STATUS_DTYPE,
        "mode": MODE_DTYPE,
        "created_at": UTC,
        "started_at": UTC,
        "completed_at": UTC,
        "duration": duration,
        "queue_time": duration,
        "attempt": integer,
        "error_code": string,
        "error_message": string,
        "memory_used_bytes": integer,
        "instance_id": string,
        "cell": integer,
        "task_id": string,
        "metadata": obj,
    }
    assert list(EXECUTION_SCHEMA) == list(frames.EXECUTION_SCHEMA.keys())
    assert dict(TASK_SCHEMA) == {
        "task_id": string,
        "task_name": string,
        "description": string,
        "artifact_type": string,
        "location": string,
        "version": integer,
        "created_at": UTC,
        "updated_at": UTC,
        "execution_count": integer,
        "last_status": STATUS_DTYPE,
        "metadata": obj,
    }
    assert dict(OBJECT_SCHEMA) == {
        "key": string,
        "size": integer,
        "created_at": UTC,
        "updated_at": UTC,
        "ref_count": integer,
        "pinned": pd.BooleanDtype(),
        "metadata": obj,
    }
    counts = ["running", "pending", "completed", "failed", "cancelled", "timeout"]
    assert dict(STATS_SCHEMA) == {
        "uptime": duration,
        "total_tasks": integer,
        "total_executions": integer,
        "active_tasks": integer,
        "idle_tasks": integer,
        **dict.fromkeys(counts, integer),
        "success_rate_percent": np.dtype("float64"),
        "average_execution_time": duration,
        "cpu_usage_percent": np.dtype("float64"),
        "memory_usage_percent": np.dtype("float64"),
        "memory_used_bytes": integer,
    }
    # Missing text is pd.NA (StringDtype), not NaN as in pandas 3's default "str" dtype.
    assert EXECUTION_SCHEMA["execution_id"].na_value is pd.NA  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        EXECUTION_SCHEMA["extra"] = string  # type: ignore[index]


def test_categoricals_follow_the_protocol_enums() -> None:
    assert STATUS_NAMES == ("pending", "running", "completed", "failed", "cancelled", "timeout")
    assert list(STATUS_DTYPE.categories) == list(STATUS_NAMES)
    assert not STATUS_DTYPE.ordered
    for code, name in enumerate(STATUS_NAMES, start=1):
        assert fpb.ExecutionStatus.Name(code) == f"EXECUTION_STATUS_{name.upper()}"
    assert list(MODE_DTYPE.categories) == ["sync", "async", "stream"]
    for code, name in enumerate(MODE_DTYPE.categories, start=1):
        assert fpb.ExecutionMode.Name(code) == f"EXECUTION_MODE_{name.upper()}"


def test_status_names_and_codes_round_trip() -> None:
    for code in range(1, 7):
        name = frames.status_name(code)
        assert name is not None
        assert frames.status_code(name) == code
        assert frames.status_code(name.upper()) == code
    assert frames.status_code("Completed") == fpb.EXECUTION_STATUS_COMPLETED
    assert frames.status_name(0) is None  # EXECUTION_STATUS_UNKNOWN
    assert frames.status_name(7) is None  # a status newer than this SDK
    assert frames.status_name(-1) is None


def test_status_code_names_the_allowed_statuses() -> None:
    with pytest.raises(ValueError) as raised:
        frames.status_code("done")
    message = str(raised.value)
    assert "'done'" in message
    assert "pending, running, completed, failed, cancelled, timeout" in message


# --- every builder: schema, order, index, empty input ---------------------------------------------------

BUILDERS: list[tuple[str, Callable[[list[Any]], pd.DataFrame], Mapping[str, Any], Callable[[], Any]]] = [
    ("executions", frames.executions_frame, EXECUTION_SCHEMA, full_execution),
    ("tasks", frames.tasks_frame, TASK_SCHEMA, full_task),
    ("objects", frames.objects_frame, OBJECT_SCHEMA, lambda: opb.Object(key="k", size=3)),
    ("object metas", frames.objects_frame, OBJECT_SCHEMA, lambda: opb.ObjectMeta(key="k", size=3)),
]


@pytest.mark.parametrize(
    ("builder", "schema", "make"), [b[1:] for b in BUILDERS], ids=[b[0] for b in BUILDERS]
)
def test_builders_follow_their_schema(
    builder: Callable[[Any], pd.DataFrame], schema: Mapping[str, Any], make: Callable[[], Any]
) -> None:
    rows = [make(), type(make())(), make()]  # a full row, an all-default row, a full row
    assert_schema(builder(rows), schema)
    assert_schema(builder(iter(rows)), schema)  # any iterable, read once
    frame = builder([])
    assert frame.empty and len(frame) == 0
    assert_schema(frame, schema)


def test_stats_frame_follows_its_schema() -> None:
    assert_schema(frames.stats_frame(full_stats()), STATS_SCHEMA)
    assert_schema(frames.stats_frame(fpb.GetStatsResponse()), STATS_SCHEMA)


# --- executions ----------------------------------------------------------------------------------------


def test_executions_frame_values() -> None:
    frame = frames.executions_frame([full_execution()])
    row = frame.iloc[0]
    assert row["execution_id"] == "ex-1"
    assert row["task_id"] == "task-1"
    assert row["task_name"] == "squares"
    assert row["function_name"] == "square"
    assert row["status"] == "completed"
    assert row["mode"] == "async"
    # Times to the nanosecond.
    assert row["created_at"] == utc_ns(1_750_000_000, 123_456_789)
    assert row["started_at"] == utc_ns(1_750_000_002, 1)
    assert row["completed_at"] == utc_ns(1_750_000_003, 500_000_001)
    assert frame["created_at"].array.asi8[0] == 1_750_000_000 * NS + 123_456_789
    assert row["created_at"].tz is not None and str(row["created_at"].tz) == "UTC"
    assert row["duration"] == pd.Timedelta(milliseconds=1_500)
    assert row["queue_time"] == pd.Timedelta(nanoseconds=2 * NS + 1 - 123_456_789)  # 1.876543212 s
    assert row["attempt"] == 2
    assert row["memory_used_bytes"] == 4096
    assert row["instance_id"] == "worker-3"
    assert row["cell"] == 12
    assert row["error_code"] is pd.NA
    assert row["error_message"] is pd.NA
    assert type(row["metadata"]) is dict
    assert row["metadata"] == {"spear.cell": "12", "owner": "ada"}


def test_executions_frame_unset_fields_are_missing() -> None:
    frame = frames.executions_frame([fpb.ExecutionInfo(execution_id="ex-0")])
    row = frame.iloc[0]
    assert row["execution_id"] == "ex-0"
    for text in ("task_id", "task_name", "function_name", "error_code", "error_message", "instance_id"):
        assert row[text] is pd.NA, text
    assert pd.isna(row["status"]) and pd.isna(row["mode"])  # UNKNOWN (0)
    for time in ("created_at", "started_at", "completed_at", "duration", "queue_time"):
        assert row[time] is pd.NaT, time
    assert row["cell"] is pd.NA
    assert row["metadata"] == {}
    # Plain numbers keep their wire value.
    assert row["attempt"] == 0 and row["memory_used_bytes"] == 0


def test_executions_frame_failed_run() -> None:
    info = full_execution()
    info.status = fpb.EXECUTION_STATUS_FAILED
    info.error_code, info.error_message = "EXCEPTION", "ValueError: boom"
    row = frames.executions_frame([info]).iloc[0]
    assert row["status"] == "failed"
    assert (row["error_code"], row["error_message"]) == ("EXCEPTION", "ValueError: boom")


def test_duration_needs_completed_at_and_queue_time_needs_both_ends() -> None:
    pending = fpb.ExecutionInfo(execution_id="p", status=fpb.EXECUTION_STATUS_PENDING)
    pending.created_at.seconds = 100
    running = fpb.ExecutionInfo(execution_id="r", status=fpb.EXECUTION_STATUS_RUNNING, execution_time_ms=5)
    running.started_at.seconds = 101  # created_at unset (an old server)
    instant = fpb.ExecutionInfo(execution_id="i", status=fpb.EXECUTION_STATUS_COMPLETED, execution_time_ms=0)
    instant.created_at.seconds = instant.started_at.seconds = instant.completed_at.seconds = 102
    frame = frames.executions_frame([pending, running, instant])
    assert frame["duration"].isna().tolist() == [True, True, False]
    assert frame["duration"].iloc[2] == pd.Timedelta(0)
    assert frame["queue_time"].isna().tolist() == [True, True, False]
    assert frame["queue_time"].iloc[2] == pd.Timedelta(0)


def test_every_status_and_mode_name() -> None:
    infos = [fpb.ExecutionInfo(status=code, execution_mode=code % 4) for code in range(7)]  # type: ignore[arg-type]
    frame = frames.executions_frame(infos)
    assert frame["status"].astype(object).where(frame["status"].notna(), None).tolist() == [
        None,
        *STATUS_NAMES,
    ]
    assert frame["mode"].astype(object).where(frame["mode"].notna(), None).tolist() == [
        None,
        "sync",
        "async",
        "stream",
        None,
        "sync",
        "async",
    ]
    # Categories stay the full fixed set, whatever the rows hold.
    assert list(frames.executions_frame(infos[:2])["status"].cat.categories) == list(STATUS_NAMES)


def test_a_status_newer_than_the_sdk_is_missing() -> None:
    info = fpb.ExecutionInfo()
    info.status = 9  # type: ignore[assignment]  # open enum: an unknown value survives the wire
    assert pd.isna(frames.executions_frame([info])["status"].iloc[0])


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("12", 12),
        ("0", 0),
        ("", None),
        ("abc", None),
        ("-3", None),
        ("1.5", None),
        (" 7", None),
        ("²", None),
        ("9" * 30, None),
    ],
)
def test_cell_is_parsed_from_metadata(cell: str, expected: int | None) -> None:
    info = fpb.ExecutionInfo(metadata={frames.CELL_KEY: cell})
    value = frames.executions_frame([info])["cell"].iloc[0]
    assert (value is pd.NA) if expected is None else (value == expected)


def test_unset_timestamp_reads_nat_but_a_set_one_keeps_nanoseconds() -> None:
    info = fpb.ExecutionInfo()
    info.created_at.nanos = 1  # 1 ns after the epoch is a real time
    frame = frames.executions_frame([info, fpb.ExecutionInfo()])
    assert frame["created_at"].iloc[0] == utc_ns(0, 1)
    assert frame["created_at"].iloc[1] is pd.NaT


def test_times_outside_the_nanosecond_range_read_nat() -> None:
    # datetime64[ns] spans 1677..2262; a protobuf time outside it must not wrap around silently.
    metas = [opb.ObjectMeta(created_at=s) for s in (-1, 9_223_372_035, 9_223_372_036, 10**12, -(10**12))]
    created = frames.objects_frame(metas)["created_at"]
    assert created.iloc[0] == pd.Timestamp("1969-12-31 23:59:59", tz="UTC")
    assert created.iloc[1] == utc_ns(9_223_372_035)  # 2262-04-11
    assert created.iloc[2:].isna().all()
    late = fpb.ExecutionInfo()
    late.created_at.seconds, late.created_at.nanos = 9_223_372_036, 999_999_999
    assert frames.executions_frame([late])["created_at"].iloc[0] is pd.NaT


# --- tasks and objects ---------------------------------------------------------------------------------


def test_tasks_frame_values() -> None:
    bare = fpb.TaskInfo(task_id="task-2", task_name="bare")  # listed without details
    odd = fpb.TaskInfo(task_id="task-3", metadata={"version": "v2"})
    frame = frames.tasks_frame([full_task(), bare, odd])
    row = frame.iloc[0]
    assert (row["task_id"], row["task_name"], row["description"]) == ("task-1", "squares", "squares numbers")
    assert (row["artifact_type"], row["location"]) == ("python", "workloads:square")
    assert row["version"] == 3
    assert row["created_at"] == utc_ns(1_700_000_000)
    assert row["updated_at"] == utc_ns(1_700_000_060)
    assert row["execution_count"] == 7
    assert row["last_status"] == "failed"
    assert row["metadata"] == {"version": "3", "team": "ml"}
    bare_row = frame.iloc[1]
    for text in ("description", "artifact_type", "location"):
        assert bare_row[text] is pd.NA
    assert bare_row["version"] is pd.NA
    assert bare_row["created_at"] is pd.NaT and bare_row["updated_at"] is pd.NaT
    assert pd.isna(bare_row["last_status"])
    assert bare_row["execution_count"] == 0
    assert frame["version"].iloc[2] is pd.NA


@pytest.mark.parametrize("message", [opb.Object, opb.ObjectMeta])
def test_objects_frame_values(message: Any) -> None:
    pinned = message(
        key="data/x",
        size=1024,
        created_at=1_700_000_000,
        updated_at=1_700_000_100,
        ref_count=2,
        pinned=True,
        metadata={"kind": "array"},
    )
    frame = frames.objects_frame([pinned, message(key="data/y")])
    assert frame["key"].tolist() == ["data/x", "data/y"]
    assert frame["size"].tolist() == [1024, 0]
    assert frame["created_at"].iloc[0] == utc_ns(1_700_000_000)
    assert frame["updated_at"].iloc[0] == utc_ns(1_700_000_100)
    assert frame["created_at"].iloc[1] is pd.NaT
    assert frame["ref_count"].tolist() == [2, 0]
    assert frame["pinned"].tolist() == [True, False]
    assert frame["metadata"].tolist() == [{"kind": "array"}, {}]


# --- stats and counts ----------------------------------------------------------------------------------


def test_stats_frame_values() -> None:
    frame = frames.stats_frame(full_stats())
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["uptime"] == pd.Timedelta(hours=1, minutes=1, seconds=1)
    assert (row["total_tasks"], row["total_executions"]) == (4, 30)
    assert (row["active_tasks"], row["idle_tasks"]) == (1, 3)
    counts = [row[c] for c in ("running", "pending", "completed", "failed", "cancelled", "timeout")]
    assert counts == [1, 2, 20, 4, 2, 1]
    assert row["success_rate_percent"] == 74.07
    assert row["average_execution_time"] == pd.Timedelta(nanoseconds=12_345_678)
    assert (row["cpu_usage_percent"], row["memory_usage_percent"]) == (12.5, 3.25)
    assert row["memory_used_bytes"] == 1 << 30


def test_stats_sections_not_sent_are_missing_not_zero() -> None:
    response = full_stats()
    response.ClearField("task_stats")
    response.ClearField("execution_stats")
    row = frames.stats_frame(response).iloc[0]
    assert row["total_tasks"] == 4
    for column in ("active_tasks", "idle_tasks", "running", "completed", "timeout"):
        assert row[column] is pd.NA, column
    assert np.isnan(row["success_rate_percent"])
    assert row["average_execution_time"] is pd.NaT
    # A sent section with zeros is zeros.
    response.execution_stats.SetInParent()
    assert frames.stats_frame(response)["running"].iloc[0] == 0


def test_counts_frame_orders_by_count_then_name() -> None:
    frame = frames.counts_frame({"b": 2, "a": 2, "c": 9, "d": 1}, "function_name", "executions")
    assert list(frame.columns) == ["function_name", "executions"]
    assert frame.dtypes.to_dict() == {"function_name": pd.StringDtype(), "executions": pd.Int64Dtype()}
    assert frame["function_name"].tolist() == ["c", "a", "b", "d"]
    assert frame["executions"].tolist() == [9, 2, 2, 1]
    assert isinstance(frame.index, pd.RangeIndex)


def test_counts_frame_takes_protobuf_maps_and_empty_input() -> None:
    stats = full_stats()
    frame = frames.counts_frame(stats.task_stats.tasks_by_type, "artifact_type", "tasks")
    assert frame.to_dict("list") == {"artifact_type": ["python", "pickle"], "tasks": [3, 1]}
    empty = frames.counts_frame({}, "function_name", "executions")
    assert len(empty) == 0
    assert empty.dtypes.to_dict() == {"function_name": pd.StringDtype(), "executions": pd.Int64Dtype()}
