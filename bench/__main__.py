"""``python -m bench``: the benchmark suite of docs/performance.md, ours side by side with baselines in one
run.

Prints a table (metric, ours, baseline, ratio, target, met) and writes every raw sample and figure, the
machine and the package versions as JSON (``bench/results/latest.json`` unless ``--json`` says
otherwise). Exit status 1 when a phase failed; unmet targets do not change it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .plan import DEFAULT, GROUPS, QUICK
from .suite import OPTIONAL_SYSTEMS, Suite, machine
from .table import build_rows, format_table
from .targets import TARGETS

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _groups(text: str | None) -> set[str]:
    if not text:
        return set(GROUPS)
    chosen = {part.strip().upper() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(GROUPS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown metric {unknown[0]!r}; choose from {', '.join(GROUPS)}")
    return chosen


def _systems(text: str) -> set[str]:
    chosen = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = sorted(chosen - set(OPTIONAL_SYSTEMS))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown system {unknown[0]!r}; choose from {', '.join(OPTIONAL_SYSTEMS)}"
        )
    return chosen


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and calls: a ~1 minute smoke run")
    parser.add_argument(
        "--only", type=_groups, default=None, metavar="P1,P4,...", help=f"metric groups: {', '.join(GROUPS)}"
    )
    parser.add_argument(
        "--without",
        type=_systems,
        default=set(),
        metavar="ray,dask",
        help="skip these baseline systems even when installed (their rows say so)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every call count (default 1)")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"where to write figures ({DEFAULT_JSON})"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    groups = args.only if args.only is not None else set(GROUPS)
    sizes = (QUICK if args.quick else DEFAULT).scaled(args.scale)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"{time.perf_counter() - started:6.1f}s {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="spear-bench-") as workdir:
        suite = Suite(sizes, groups, Path(workdir), log, without=args.without)
        suite.run()
    rows = build_rows(TARGETS, groups, suite.figures, suite.notes)
    elapsed = time.perf_counter() - started
    host = machine()
    print(format_table(rows))
    versions = ", ".join(f"{k} {v}" for k, v in host["versions"].items() if v)
    print(f"\n{host['cpu_count']} CPUs, Python {host['python']}; {versions}; {elapsed:.0f} s")
    if suite.failed:
        print(f"failed phases: {', '.join(suite.failed)} (tracebacks in the JSON)")
    report: dict[str, Any] = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(elapsed, 1),
        "machine": host,
        "options": {
            "quick": args.quick,
            "scale": args.scale,
            "groups": sorted(groups),
            "without": sorted(args.without),
            "sizes": vars(sizes),
        },
        "rows": [row.as_dict() for row in rows],
        "figures": suite.figures,
        "notes": suite.notes,
        "samples": suite.samples.by_name,
        **suite.extra,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(f"figures: {args.json}")
    return 1 if suite.failed else 0


if __name__ == "__main__":
    sys.exit(main())
