"""Line charts as inline SVG (no plotting library; the report stays one self-contained file)."""

from __future__ import annotations

import html
from collections.abc import Sequence

WIDTH, HEIGHT = 640, 180
# The legend sits above the plot area, the time labels below it.
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 12, 22, 26


def line_chart(
    series: Sequence[tuple[str, str, Sequence[float | None]]],
    x_labels: tuple[str, str],
    unit: str,
    css_class: str,
) -> str:
    """``series``: (name, colour, values) on a shared y scale from 0; a None value breaks the line."""
    top = max((v for _, _, values in series for v in values if v is not None), default=0.0) or 1.0
    count = max((len(values) for _, _, values in series), default=0)
    plot_w, plot_h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    step = plot_w / max(count - 1, 1)

    def y(value: float) -> float:
        return _TOP + plot_h - plot_h * value / top

    parts = [
        f'<svg class="{css_class}" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img">',
        f'<line x1="{_LEFT}" y1="{y(0):.1f}" x2="{WIDTH - _RIGHT}" y2="{y(0):.1f}" stroke="#999"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{y(0):.1f}" stroke="#999"/>',
        _text(_LEFT - 4, _TOP + 4, f"{top:.4g} {unit}", "end"),
        _text(_LEFT - 4, y(0), f"0 {unit}", "end"),
        _text(_LEFT, HEIGHT - 6, x_labels[0], "start"),
        _text(WIDTH - _RIGHT, HEIGHT - 6, x_labels[1], "end"),
    ]
    for index, (name, colour, values) in enumerate(series):
        for run in _runs(values):
            points = " ".join(f"{_LEFT + i * step:.1f},{y(v):.1f}" for i, v in run)
            if len(run) == 1:
                i, v = run[0]
                parts.append(f'<circle cx="{_LEFT + i * step:.1f}" cy="{y(v):.1f}" r="2" fill="{colour}"/>')
            else:
                parts.append(
                    f'<polyline class="series" data-series="{html.escape(name)}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.5" points="{points}"/>'
                )
        legend_x = _LEFT + 8 + 90 * index
        parts.append(f'<rect x="{legend_x}" y="6" width="10" height="3" fill="{colour}"/>')
        parts.append(_text(legend_x + 14, 10, name, "start"))
    parts.append("</svg>")
    return "".join(parts)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    runs: list[list[tuple[int, float]]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, value))
    return [run for run in runs if run]


def _text(x: float, y: float, text: str, anchor: str) -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="10" fill="#555" text-anchor="{anchor}">'
        f"{html.escape(text)}</text>"
    )
