"""``spearlet report`` and ``spearlet diff`` on SQLite stores a real server wrote, run as the commands
they are (subprocesses, no server running): the HTML parsed, the Markdown, the exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
from html.parser import HTMLParser
from pathlib import Path

from harness import start_harness, stop_harness


class Page(HTMLParser):
    """The parts of a report a reader looks at: table rows by table class, SVG charts and their lines."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.charts: dict[str, int] = {}  # chart class -> lines (or single points) in it
        self.ids: dict[str, str] = {}
        self._table = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._chart = ""
        self._id = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "table":
            self._table = attributes.get("class") or ""
            self.tables[self._table] = []
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "svg":
            self._chart = attributes.get("class") or ""
            self.charts[self._chart] = 0
        elif tag in ("polyline", "circle") and self._chart:
            self.charts[self._chart] += 1
        if attributes.get("id"):
            self._id = attributes["id"] or ""
            self.ids[self._id] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "svg":
            self._chart = ""
        self._id = ""

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._id:
            self.ids[self._id] += data.strip()


async def make_store(path: Path, sleep_s: float, failures: int) -> str:
    url = f"sqlite:///{path}"
    harness = await start_harness(executor="thread", store=url)
    try:
        slow = await harness.register("workloads:sleep", name="slow")
        quick = await harness.register("workloads:square", name="quick")
        failing = await harness.register("workloads:fail", name="failing")
        for _ in range(8):
            await harness.invoke(slow, sleep_s)
            await harness.invoke(quick, 3)
        for i in range(failures):
            await harness.invoke(failing, f"broken <input> {i}")
    finally:
        await stop_harness(harness)
    return url


async def spearlet(*args: str, cwd: Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spearlet",
        *args,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_report_renders_a_store_as_html_and_markdown(tmp_path: Path) -> None:
    url = await make_store(tmp_path / "run.db", sleep_s=0.02, failures=2)
    code, out, err = await spearlet("report", "--store", url, "-o", "report.html", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("wrote report.html: 18 executions, 3 functions")
    html = (tmp_path / "report.html").read_text()
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    page = Page()
    page.feed(html)
    assert (
        page.ids["executions"] == "18" and page.ids["completed"] == "16" and page.ids["not-completed"] == "2"
    )
    assert page.ids["success-rate"] == "88.9 %"
    header, *functions = page.tables["functions"]
    assert header == [
        "function",
        "executions",
        "completed",
        "failed",
        "success rate",
        "p50",
        "p95",
        "p99",
        "max",
        "memory",
    ]
    by_name = {row[0]: row for row in functions}
    assert set(by_name) == {"slow", "quick", "failing"}
    assert by_name["slow"][1:5] == ["8", "8", "0", "100.0 %"]
    assert by_name["failing"][1:5] == ["2", "0", "2", "0.0 %"] and by_name["failing"][5] == "-"
    assert float(by_name["slow"][6].removesuffix(" ms")) >= 20  # p95 of 20 ms sleeps
    assert page.charts["chart-throughput"] >= 1 and page.charts["chart-latency"] >= 2  # p50 and p95
    slowest = page.tables["slowest"][1:]
    assert len(slowest) == 10 and [row[0] for row in slowest[:8]] == ["slow"] * 8
    failed = page.tables["failed"][1:]
    assert [row[0] for row in failed] == ["failing", "failing"]
    assert [row[4] for row in failed] == ["failed", "failed"]
    assert sorted(row[-1] for row in failed) == [f"EXCEPTION ValueError: broken <input> {i}" for i in (0, 1)]
    assert "broken &lt;input&gt;" in html  # errors are escaped, not markup

    code, out, err = await spearlet("report", "--store", url, "--format", "md", cwd=tmp_path)
    assert code == 0, err
    assert out.startswith("## Spearlet run report")
    assert "| 18 | 16 | 2 | 88.9 % |" in out and "| slow | 8 | 8 | 0 | 100.0 % |" in out
    assert "### Failed executions" in out and "broken <input>" in out


async def test_report_errors_are_clear(tmp_path: Path) -> None:
    code, _, err = await spearlet("report", "--store", "sqlite:///missing.db", cwd=tmp_path)
    assert code == 2 and "no store at sqlite:///missing.db" in err
    assert not (tmp_path / "missing.db").exists()
    code, _, err = await spearlet("report", "--store", "memory://", "--since", "yesterday-ish", cwd=tmp_path)
    assert code == 2 and "--since 'yesterday-ish'" in err
    code, out, _ = await spearlet(
        "report", "--store", "memory://", "--since", "2h", "--format", "md", cwd=tmp_path
    )
    assert code == 0 and "| 0 | 0 | 0 | - |" in out


async def test_diff_exits_1_on_a_regression_and_0_otherwise(tmp_path: Path) -> None:
    base = await make_store(tmp_path / "base.db", sleep_s=0.005, failures=0)
    same = await make_store(tmp_path / "same.db", sleep_s=0.005, failures=0)
    slower = await make_store(tmp_path / "slower.db", sleep_s=0.08, failures=0)

    code, out, err = await spearlet("diff", base, same, "--min-ms", "20", cwd=tmp_path)
    assert code == 0, out + err
    assert out.rstrip().endswith("no regression")

    # The 20 ms floor keeps a loaded machine's jitter on the quick functions from counting; "slow" went from
    # 5 ms to 80 ms sleeps, far past both lines.
    code, out, _ = await spearlet("diff", base, slower, "--threshold", "0.5", "--min-ms", "20", cwd=tmp_path)
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["function", "metric", "baseline", "now", "change", "allowed"]
    regressed = [line.split() for line in lines if line.endswith("REGRESSED")]
    assert [(row[0], row[1]) for row in regressed] == [("slow", "p95_latency_ms")]
    assert out.rstrip().endswith("regressed: slow")

    # a baseline file on either side
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        json.dumps(
            {
                "format": "spear-baseline/1",
                "functions": {
                    "slow": {"count": 8, "success_rate": 100.0, "p50_latency_ms": 5.0, "p95_latency_ms": 6.0}
                },
            }
        )
    )
    code, out, _ = await spearlet("diff", str(baseline), slower, "--format", "md", cwd=tmp_path)
    assert code == 1 and "| slow | p95_latency_ms | 6.0 ms |" in out
    code, out, _ = await spearlet("diff", str(baseline), base, "--min-ms", "20", cwd=tmp_path)
    assert code == 0, out
    code, _, err = await spearlet("diff", "nothere.json", base, cwd=tmp_path)
    assert code == 2 and "no baseline file nothere.json" in err
