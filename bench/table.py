"""The report: rows from figures and targets, printed as a fixed-width table."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from .targets import Target

COLUMNS = ("metric", "ours", "baseline", "ratio", "target", "met")


@dataclass
class Row:
    group: str
    metric: str
    unit: str
    ours: float | None
    baseline: float | None
    ratio: float | None
    target: str
    met: bool | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_rows(
    targets: Iterable[Target], groups: set[str], figures: Mapping[str, float], notes: Mapping[str, str]
) -> list[Row]:
    """One row per target of a selected group; a missing figure shows the note that explains it."""
    rows = []
    for target in targets:
        if target.group not in groups:
            continue
        ours = figures.get(target.ours)
        base = figures.get(target.baseline) if target.baseline else None
        if ours is None and target.op is None:  # a reference row needs our figure
            continue
        ratio = ours / base if ours is not None and base else None
        note = ""
        if target.baseline and base is None:
            note = notes.get(target.system or target.baseline.split(".")[0], "")
        if ours is None:
            note = notes.get(target.group, "") or notes.get(target.ours.split(".")[0], "") or note
        rows.append(
            Row(
                group=target.group,
                metric=target.metric,
                unit=target.unit,
                ours=ours,
                baseline=base,
                ratio=ratio,
                target=_target_text(target),
                met=None if ours is None else target.met(ours, ratio),
                note=note or ("" if ours is not None else "not measured"),
            )
        )
    return rows


def _target_text(target: Target) -> str:
    if target.op is None or target.limit is None:
        return "-"
    if target.on == "value":
        return f"{target.op} {_number(target.limit)} {target.unit}"
    return f"{target.op} {target.limit:g}x"


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _value(value: float | None, unit: str) -> str:
    return "" if value is None else f"{_number(value)} {unit}"


def format_table(rows: Iterable[Row]) -> str:
    cells = [COLUMNS]
    for row in rows:
        baseline = _value(row.baseline, row.unit) or (row.note if row.ours is not None else "")
        ours = _value(row.ours, row.unit) or row.note
        met = "-" if row.met is None else ("yes" if row.met else "NO")
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}x"
        cells.append((row.metric, ours, baseline, ratio, row.target, met))
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    right = {1, 2, 3}
    lines = []
    for index, line in enumerate(cells):
        text = "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(line)
        )
        lines.append(text.rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
