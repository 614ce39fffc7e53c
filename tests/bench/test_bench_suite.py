"""The benchmark suite runs end to end in its smallest form and reports every selected row.

Only structure is checked (rows present, figures positive, the skipped systems named), never a time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("P1", "P3", "P4", "P5", "P6", "P7", "P8", "MEM")


def test_quickest_run_reports_every_selected_row(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--scale",
            "0.1",
            "--without",
            "ray,dask",
            "--only",
            ",".join(GROUPS),
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    header = done.stdout.splitlines()[0].split()
    assert header == ["metric", "ours", "baseline", "ratio", "target", "met"]

    report = json.loads(out.read_text())
    assert report["machine"]["cpu_count"] >= 1
    assert report["machine"]["versions"]["grpcio"]
    rows = report["rows"]
    assert {row["group"] for row in rows} == set(GROUPS)
    for row in rows:
        if "Ray" in row["metric"] or "ray" in row["metric"]:
            # Skipped: our side is measured only where Ray's is (P2, P3) or shown without it (P4, P7).
            assert row["baseline"] is None and row["met"] is None and "skipped" in row["note"], row
            assert row["ours"] is None or row["ours"] > 0, row
            continue
        assert row["ours"] is not None and row["ours"] > 0, row
        if row["target"] != "-" and row["metric"] != "P6 executions() DataFrame, seconds":
            assert row["baseline"] is not None and row["baseline"] > 0, row
            assert row["ratio"] == row["ours"] / row["baseline"], row
            assert isinstance(row["met"], bool), row
    samples = report["samples"]
    for name in ("echo.latency_ms", "ours.invoke_latency_ms", "ours.map_per_s", "sqlite.commit_us"):
        assert samples[name] and min(samples[name]) > 0, name
    planned = report["options"]["sizes"]["executions"]
    figures = report["figures"]
    assert figures["mem.executions_end"] - figures["mem.executions_warm"] >= planned
    assert figures["frame.rows"] == planned
