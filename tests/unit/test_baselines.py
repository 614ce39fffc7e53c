"""spear_sdk.baselines: the file, the comparison rules and assert_baseline's messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spear_sdk import baselines
from spear_sdk.baselines import assert_baseline, compare, read_baseline, write_baseline
from spear_sdk.models import Stats
from spear_sdk.wire import function_pb2 as pb


def figures(
    p50: float = 10.0, p95: float = 20.0, rate: float = 100.0, count: float = 50
) -> dict[str, float | None]:
    return {
        "count": count,
        "success_rate": rate,
        "p50_latency_ms": p50,
        "p95_latency_ms": p95,
        "mean_memory_bytes": 1e6,
    }


def stats(**functions: tuple[int, int, float]) -> Stats:
    """Stats whose functions have (completed, failed, p95 ms)."""
    rows = [
        pb.FunctionStats(
            function=name,
            executions=ok + bad,
            completed=ok,
            failed=bad,
            success_rate_percent=100 * ok / (ok + bad),
            p50_execution_time_ms=p95 / 2,
            p95_execution_time_ms=p95,
            p99_execution_time_ms=p95,
            average_memory_bytes=2e6,
        )
        for name, (ok, bad, p95) in functions.items()
    ]
    return Stats(pb.GetStatsResponse(execution_stats=pb.ExecutionStats(function_stats=rows)))


def test_latency_regresses_only_past_the_relative_and_the_absolute_margin() -> None:
    small = compare({"f": figures(1.0, 1.0)}, {"f": figures(1.4, 1.4)}, rel=0.2, abs=1.0)
    assert not small.regressed  # +40 % but +0.4 ms: noise
    big = compare({"f": figures(10.0, 20.0)}, {"f": figures(10.5, 30.0)}, rel=0.2, abs=1.0)
    assert [(r.metric, r.verdict) for r in big.regressions] == [("p95_latency_ms", "REGRESSED")]
    faster = compare({"f": figures(10.0, 20.0)}, {"f": figures(2.0, 4.0)}, rel=0.2, abs=1.0)
    assert not faster.regressed and {r.verdict for r in faster.rows} >= {"improved"}


def test_success_rate_regresses_when_it_drops_more_than_allowed() -> None:
    assert not compare({"f": figures(rate=100)}, {"f": figures(rate=99.5)}).regressed
    dropped = compare({"f": figures(rate=100)}, {"f": figures(rate=90)})
    assert [(r.metric, r.baseline, r.current) for r in dropped.regressions] == [("success_rate", 100, 90)]


def test_missing_functions_fail_new_ones_are_shown_and_counts_only_when_asked() -> None:
    result = compare({"f": figures(), "gone": figures()}, {"f": figures(count=7), "new": figures()})
    verdicts = {(r.function, r.verdict) for r in result.rows}
    assert ("gone", "MISSING") in verdicts and ("new", "new") in verdicts
    assert {r.function for r in result.regressions} == {"gone"}
    counted = compare({"f": figures()}, {"f": figures(count=7)}, metrics=["count"])
    assert [(r.verdict, r.baseline, r.current) for r in counted.rows] == [("changed", 50, 7)]
    with pytest.raises(ValueError, match="unknown metric 'p42'"):
        compare({}, {}, metrics=["p42"])


def test_the_file_is_readable_json_and_is_checked_when_read(tmp_path: Path) -> None:
    path = write_baseline(tmp_path / "sub" / "b.json", {"score": figures(p95=12.3456)})
    document = json.loads(path.read_text())
    assert document["format"] == "spear-baseline/1"
    assert document["functions"]["score"]["p95_latency_ms"] == 12.346
    assert path.read_text().count("\n") > 8  # indented, one figure a line
    assert read_baseline(path)["score"]["count"] == 50
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a baseline"):
        read_baseline(tmp_path / "other.json")


def test_assert_baseline_writes_then_compares_then_fails_with_the_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(baselines.UPDATE_ENV, raising=False)
    path = tmp_path / "b.json"
    first = assert_baseline(stats(score=(50, 0, 20.0), load=(10, 0, 5.0)), path)
    assert first.action == "written" and "baseline written" in first.message and path.exists()
    again = assert_baseline(stats(score=(50, 0, 21.0), load=(10, 0, 5.0)), path)
    assert again.action == "compared" and "no regression" in again.message
    with pytest.raises(AssertionError) as failure:
        assert_baseline(stats(score=(45, 5, 80.0), load=(10, 0, 5.0)), path, rel=0.5, abs=5)
    text = str(failure.value)
    assert text.startswith("assert_baseline: score regressed against")
    lines = text.splitlines()
    assert lines[1].split() == ["function", "metric", "baseline", "now", "change", "allowed"]
    rows = [line.split() for line in lines[2:8]]
    assert [(r[0], r[1], r[-1]) for r in rows] == [
        ("load", "success_rate", "ok"),
        ("load", "p50_latency_ms", "ok"),
        ("load", "p95_latency_ms", "ok"),
        ("score", "success_rate", "REGRESSED"),
        ("score", "p50_latency_ms", "REGRESSED"),
        ("score", "p95_latency_ms", "REGRESSED"),
    ]
    assert "20.0 ms" in lines[7] and "80.0 ms" in lines[7]
    # only one function, and only one metric, when asked
    assert_baseline(stats(score=(45, 5, 80.0), load=(10, 0, 5.0)), path, functions=["load"])
    assert_baseline(stats(score=(50, 0, 80.0), load=(10, 0, 5.0)), path, metrics=["success_rate"])


def test_updating_rewrites_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "b.json"
    assert_baseline(stats(score=(50, 0, 20.0)), path)
    monkeypatch.setenv(baselines.UPDATE_ENV, "1")
    assert assert_baseline(stats(score=(50, 0, 80.0)), path).action == "updated"
    monkeypatch.delenv(baselines.UPDATE_ENV)
    assert read_baseline(path)["score"]["p95_latency_ms"] == 80.0
    assert assert_baseline(stats(score=(50, 0, 80.0)), path).action == "compared"
    assert assert_baseline(stats(score=(50, 0, 10.0)), path, update=True).action == "updated"


def test_bad_sources_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"expected client\.stats"):
        assert_baseline(42, tmp_path / "b.json")
    import pandas as pd

    with pytest.raises(ValueError, match=r"neither client\.stats"):
        assert_baseline(pd.DataFrame({"x": [1]}), tmp_path / "b.json")
