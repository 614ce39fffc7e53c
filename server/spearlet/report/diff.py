"""``spearlet diff``: two runs' figures by function, each from a store or a baseline file."""

from __future__ import annotations

import asyncio
import json
import os

from spear_sdk.baselines import Comparison, Figures, compare, read_baseline

from .run import Run, read_run

#: What ``diff`` judges: a slower p95, a lower success rate.
DIFF_METRICS = ("success_rate", "p95_latency_ms")


def run_figures(run: Run) -> Figures:
    """A run's figures as a baseline keeps them."""
    return {
        f.function: {
            "count": float(f.finished),
            "success_rate": f.success_rate_percent,
            "p50_latency_ms": f.p50_ms if f.completed else None,
            "p95_latency_ms": f.p95_ms if f.completed else None,
            "mean_memory_bytes": f.average_memory_bytes if f.completed else None,
        }
        for f in run.functions
    }


def is_baseline_file(source: str) -> bool:
    return "://" not in source and (source.endswith(".json") or os.path.isfile(source))


def load(source: str, since: float = 0.0) -> Figures:
    """The figures of a baseline file (a path) or of the executions in a store (a URL)."""
    if is_baseline_file(source):
        if not os.path.isfile(source):
            raise ValueError(f"no baseline file {source}")
        try:
            return read_baseline(source)
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read {source}: {exc}") from None
    return run_figures(asyncio.run(read_run(source, since)))


def diff(
    base: str, current: str, *, threshold: float, min_ms: float, success_drop: float, since: float = 0.0
) -> Comparison:
    return compare(
        load(base, since),
        load(current, since),
        rel=threshold,
        abs=min_ms,
        success_rate_drop=success_drop,
        metrics=DIFF_METRICS,
    )
