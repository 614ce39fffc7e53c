"""The HTML of the live views, from the templates in ``spear_sdk/templates/``: each view is a few sections,
shown as separate widgets while live (so that only a changed section is sent) and joined into one static
snapshot where no widget frontend exists."""

from __future__ import annotations

from collections.abc import Sequence

from .. import _repr
from .._status import STATUS_COLOURS
from .alert_section import alert_section
from .monitor import PanelState, Row

HEALTH_COLOURS = {"healthy": "#2ca02c", "degraded": "#ff7f0e", "unhealthy": "#d62728"}
_GREY = "#7f7f7f"
#: Sparkline size in pixels.
WIDTH, HEIGHT = 220, 44
PANEL_SECTIONS = ("header", "counters", "charts", "functions", "recent")


def panel_sections(state: PanelState, note: str = "") -> dict[str, str]:
    return {
        # The alerts (when the panel has rules) go with the header, at the top, in the same widget.
        "header": header(state.health, state.message, note) + alert_section(state.alerts),
        "counters": _repr.render("panel_counters.html", **state.counters),
        "charts": charts(state),
        "functions": functions(state),
        "recent": recent(state.recent),
    }


def panel_html(sections: dict[str, str]) -> str:
    return _repr.render("panel.html", **{name: _repr.Safe(sections[name]) for name in PANEL_SECTIONS})


def header(status: str, message: str, note: str) -> str:
    colour = HEALTH_COLOURS.get(status, _GREY)
    return _repr.render("panel_header.html", status=status, message=message, colour=colour, note=note)


def charts(state: PanelState) -> str:
    return _repr.render(
        "panel_charts.html",
        throughput=_number(state.throughput),
        p50=_number(state.p50, " ms"),
        p95=_number(state.p95, " ms"),
        throughput_chart=sparkline({"spear-throughput-line": ("#1f77b4", state.throughput)}),
        latency_chart=sparkline(
            {"spear-p50-line": ("#1f77b4", state.p50), "spear-p95-line": ("#ff7f0e", state.p95)}
        ),
    )


def sparkline(series: dict[str, tuple[str, Sequence[float]]]) -> _repr.Safe:
    """An inline SVG of one or more series on a shared scale (no plotting library, no frontend extension)."""
    top = max((max(values) for _, values in series.values() if values), default=0.0) or 1.0
    lines = "".join(
        _repr.render("sparkline_line.html", name=name, colour=colour, points=_points(values, top))
        for name, (colour, values) in series.items()
        if values
    )
    return _repr.Safe(_repr.render("sparkline.html", width=WIDTH, height=HEIGHT, lines=_repr.Safe(lines)))


def _points(values: Sequence[float], top: float) -> str:
    step = WIDTH / max(len(values) - 1, 1)
    return " ".join(
        f"{i * step:.1f},{HEIGHT - 2 - (HEIGHT - 4) * value / top:.1f}" for i, value in enumerate(values)
    )


def _number(values: Sequence[float], unit: str = "") -> str:
    return f"{values[-1]:.1f}{unit}" if values else "-"


def functions(state: PanelState) -> str:
    rows = "".join(
        _repr.render(
            "panel_function_row.html",
            name=f.name,
            percent=f"{100 * f.rate:.0f}",
            rate=f"{100 * f.rate:.1f} %",
            finished=f.finished,
            latency=_latency(state.latency.get(f.name)),
        )
        for f in state.functions
    )
    return _repr.render("panel_functions.html", rows=_repr.Safe(rows))


def _latency(percentiles: tuple[float, float, float] | None) -> str:
    if percentiles is None:
        return ""
    p50, p95, p99 = percentiles
    return f"p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms"


def recent(rows: Sequence[Row]) -> str:
    return _repr.render("panel_recent.html", rows=execution_rows(rows))


def execution_rows(rows: Sequence[Row], outcomes: Sequence[str] | None = None) -> _repr.Safe:
    """Table rows of executions with status colours; ``outcomes`` (a result or error summary) per row."""
    return _repr.Safe(
        "".join(
            _repr.render(
                "execution_row.html",
                name=r.name,
                status=r.status,
                colour=STATUS_COLOURS.get(r.status, _GREY),
                duration="" if r.duration_ms is None else f"{r.duration_ms:.0f} ms",
                outcome=r.error if outcomes is None else outcomes[i],
            )
            for i, r in enumerate(rows)
        )
    )
