"""Executions, tasks, objects and stats as typed DataFrames from a real lab; reprs; cell provenance."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell

import spear_sdk
from spear_sdk import frames, function_stats


def assert_schema(frame: pd.DataFrame, schema: frames.Schema) -> None:
    assert list(frame.columns) == list(schema)
    assert {c: str(t) for c, t in frame.dtypes.items()} == {c: str(t) for c, t in schema.items()}


def test_every_table_has_its_published_schema(client: spear_sdk.Client) -> None:
    fail = client.function(lambda: 1 / 0, name="tables-fail")
    ok = client.function(lambda x: x, name="tables-ok")
    ok(1)
    with pytest.raises(spear_sdk.errors.RemoteFunctionError):
        fail()
    executions = client.executions()
    assert_schema(executions, frames.EXECUTION_SCHEMA)
    assert_schema(client.tasks(), frames.TASK_SCHEMA)
    assert_schema(client.objects(), frames.OBJECT_SCHEMA)
    stats = client.stats()
    assert_schema(stats.to_frame(), frames.STATS_SCHEMA)
    assert_schema(stats.by_function, function_stats.FUNCTION_COLUMNS)
    assert stats.tasks_by_type.set_index("artifact_type")["tasks"]["pickle"] >= 2

    mine = client.executions(task=fail)
    assert list(mine["status"]) == ["failed"] and list(mine["error_code"]) == ["EXCEPTION"]
    assert list(client.executions(task="tables-ok", status="completed")["task_name"]) == ["tables-ok"]
    row = client.executions(task=ok).iloc[0]
    assert row["completed_at"] >= row["started_at"] >= row["created_at"]
    assert str(row["created_at"].tz) == "UTC" and pd.isna(row["error_code"])


def test_listings_follow_pagination_past_a_thousand_rows(client: spear_sdk.Client) -> None:
    bulk = client.function(lambda i: i, name="tables-bulk")
    assert bulk.map(range(1200), progress=False) == list(range(1200))
    everything = client.executions(task=bulk)
    assert len(everything) == 1200 and everything["execution_id"].is_unique
    assert everything["execution_id"].is_monotonic_increasing  # creation order
    first = client.executions(task=bulk, limit=1050)
    assert list(first["execution_id"]) == list(everything["execution_id"][:1050])
    assert len(client.executions(limit=3)) == 3


def test_stats_follow_the_executions(client: spear_sdk.Client) -> None:
    before = client.stats()
    counted = client.function(lambda _: None, name="tables-counted")
    counted.map(range(5), progress=False)
    after = client.stats()
    assert after.completed == before.completed + 5
    assert after.by_function.set_index("function")["executions"]["tables-counted"] == 5
    assert client.stats(time_range_hours=1).total_executions >= 5


def test_each_invocation_records_the_notebook_cell_that_launched_it(client: spear_sdk.Client) -> None:
    shell = InteractiveShell.instance()
    try:
        shell.user_ns["client"] = client
        cells = [
            "tag = client.function(lambda *_: 'x', name='tables-cell')",
            "tag(); tag.submit().result()",
            "tag.map(range(2), progress=False)",
        ]
        counts = []
        for cell in cells:
            counts.append(shell.execution_count)
            shell.run_cell(cell, store_history=True).raise_error()
        frame = client.executions(task="tables-cell")
        assert list(frame["cell"]) == [counts[1], counts[1], counts[2], counts[2]]
        assert str(frame["cell"].dtype) == "Int64"
    finally:
        InteractiveShell.clear_instance()
    outside = client.function(lambda: 0, name="tables-nocell")
    outside()
    assert client.executions(task=outside)["cell"].isna().all()


VOLATILE = re.compile(r"[0-9a-f]{24}|127\.0\.0\.1|:\d{2,5}\b|\d{4}-\d\d-\d\d")


def test_plain_reprs_are_stable_and_html_shows_the_details(lab: spear_sdk.Lab) -> None:
    client = lab.client
    fn = client.function(lambda x: x, name="tables-repr")
    execution = fn.submit(1)
    execution.result()
    objects = [
        lab,
        client,
        fn,
        execution,
        client.stats(),
        client.health(),
        spear_sdk.AsyncClient(lab.address),
    ]
    for obj in objects:
        bundle = obj._repr_mimebundle_()
        assert bundle["text/plain"] == repr(obj)
        assert not VOLATILE.search(bundle["text/plain"]), bundle["text/plain"]
        assert bundle["text/html"].startswith('<div class="spear-repr')
    assert repr(lab) == "<Lab running: store=memory:// executor=process>"
    assert repr(fn) == "<Function tables-repr(x): pickle task, version 1>"
    assert repr(execution) == "<Execution tables-repr: completed>"
    assert repr(client.health()) == "<Health healthy>"
    assert lab.address in lab._repr_mimebundle_()["text/html"]
    assert execution.execution_id in execution._repr_mimebundle_()["text/html"]
