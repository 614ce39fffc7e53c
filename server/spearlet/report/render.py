"""A run as an HTML page (``templates/report.html``) or Markdown (``templates/report.md``)."""

from __future__ import annotations

import datetime as dt
import html
from importlib import resources
from string import Template

from ..latency import FunctionFigures
from . import svg
from .run import Listed, Run

_STATUS_COLOURS = {"completed": "#2ca02c", "failed": "#d62728", "timeout": "#d62728", "cancelled": "#8c564b"}
_MESSAGE_CHARS = 300


def _template(name: str) -> Template:
    return Template((resources.files(__package__) / "templates" / name).read_text(encoding="utf-8"))


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _rate(figures: FunctionFigures) -> str:
    return f"{figures.success_rate_percent:.1f} %" if figures.finished else "-"


def _latency(figures: FunctionFigures, value: float) -> str:
    return _ms(value) if figures.completed else "-"


def _function_cells(run: Run, f: FunctionFigures) -> list[str]:
    return [
        f.function,
        str(run.counts[f.function]),
        str(f.completed),
        str(f.failed + f.timeout + f.cancelled),
        _rate(f),
        _latency(f, f.p50_ms),
        _latency(f, f.p95_ms),
        _latency(f, f.p99_ms),
        _latency(f, f.max_ms),
        f"{f.average_memory_bytes / (1 << 20):.1f} MiB" if f.completed else "-",
    ]


_FUNCTION_HEADER = [
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


def _summary(run: Run) -> dict[str, str]:
    return {
        "source": run.source,
        "window": f"since {_time(run.since)}" if run.since else "all executions",
        "generated": _time(dt.datetime.now(dt.timezone.utc).timestamp()),
        "executions": str(run.executions),
        "finished": str(run.finished),
        "completed": str(run.by_status["completed"]),
        "failed": str(run.finished - run.by_status["completed"]),
        "success_rate": f"{run.success_rate:.1f} %" if run.finished else "-",
        "p50": _ms(run.p50_ms if run.by_status["completed"] else None),
        "p95": _ms(run.p95_ms if run.by_status["completed"] else None),
        "p99": _ms(run.p99_ms if run.by_status["completed"] else None),
        "first": _time(run.first),
        "last": _time(run.last),
    }


# -- HTML -----------------------------------------------------------------------------------------------


def _row(cells: list[str], css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<tr{attribute}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def _header(cells: list[str]) -> str:
    return "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>"


def _listed_rows(rows: list[Listed], with_error: bool) -> str:
    out = []
    for r in rows:
        cells = [r.function, r.execution_id, _time(r.created_at), _ms(r.run_ms)]
        status = (
            f'<td><span class="status" style="color: {_STATUS_COLOURS.get(r.status, "#555")}">'
            f"{html.escape(r.status)}</span></td>"
        )
        error = ""
        if with_error:
            message = r.error_message[:_MESSAGE_CHARS] + (
                "…" if len(r.error_message) > _MESSAGE_CHARS else ""
            )
            error = f'<td class="error"><code>{html.escape(r.error_code)}</code> {html.escape(message)}</td>'
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + status + error + "</tr>")
    return "".join(out)


def _charts(run: Run) -> tuple[str, str]:
    if not run.buckets:
        empty = '<p class="empty">no finished executions</p>'
        return empty, empty
    labels = (_time(run.buckets[0].start), _time(run.buckets[-1].start + run.buckets[-1].seconds))
    width = run.buckets[0].seconds
    throughput = svg.line_chart(
        [("finished/s", "#1f77b4", [b.throughput for b in run.buckets])], labels, "/s", "chart-throughput"
    )
    latency = svg.line_chart(
        [
            ("p50", "#1f77b4", [b.p50_ms for b in run.buckets]),
            ("p95", "#ff7f0e", [b.p95_ms for b in run.buckets]),
        ],
        labels,
        "ms",
        "chart-latency",
    )
    note = f'<p class="note">per {width:g} s</p>'
    return throughput + note, latency + note


def render_html(run: Run) -> str:
    throughput, latency = _charts(run)
    fields = {name: html.escape(value) for name, value in _summary(run).items()}
    return _template("report.html").substitute(
        fields,
        function_header=_header(_FUNCTION_HEADER),
        function_rows="".join(_row(_function_cells(run, f), "function") for f in run.functions)
        or '<tr><td colspan="10" class="empty">no finished executions</td></tr>',
        throughput_chart=throughput,
        latency_chart=latency,
        slowest_rows=_listed_rows(run.slowest, with_error=False)
        or '<tr><td colspan="5" class="empty">none</td></tr>',
        failed_rows=_listed_rows(run.failed, with_error=True)
        or '<tr><td colspan="6" class="empty">none</td></tr>',
    )


# -- Markdown -------------------------------------------------------------------------------------------


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_none_"
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(run: Run) -> str:
    def listed(rows: list[Listed], with_error: bool) -> list[list[str]]:
        return [
            [r.function, f"`{r.execution_id}`", _time(r.created_at), _ms(r.run_ms), r.status]
            + ([f"`{r.error_code}` {r.error_message[:_MESSAGE_CHARS]}"] if with_error else [])
            for r in rows
        ]

    return _template("report.md").substitute(
        _summary(run),
        function_table=_md_table(_FUNCTION_HEADER, [_function_cells(run, f) for f in run.functions]),
        slowest_table=_md_table(
            ["function", "execution", "created", "run time", "status"], listed(run.slowest, False)
        ),
        failed_table=_md_table(
            ["function", "execution", "created", "run time", "status", "error"], listed(run.failed, True)
        ),
    )
