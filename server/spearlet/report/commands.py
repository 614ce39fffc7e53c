"""The ``report`` and ``diff`` subcommands of ``spearlet``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..store import SUPPORTED_URLS
from .render import render_html, render_markdown
from .run import parse_since, read_run

COMMANDS = ("report", "diff")


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser(
        "report",
        help="write a report of the executions in a store (no server needed)",
        description="Render a self-contained report of the executions in a store: a summary, each "
        "function's counts, success rate and run-time percentiles, throughput and run-time charts, the "
        "slowest and the failed executions. Reads the store directly; no server needs to run.",
    )
    report.add_argument("--store", required=True, help=f"store URL ({', '.join(SUPPORTED_URLS[:2])})")
    report.add_argument("--since", help="only executions created since: a duration (2h, 30min) or a time")
    report.add_argument("-o", "--output", help="file to write (default: standard output)")
    report.add_argument(
        "--format", choices=("html", "md"), default=None, help="html (default; md when -o ends in .md)"
    )
    compare = commands.add_parser(
        "diff",
        help="compare two runs by function; exit 1 when one regressed",
        description="Compare each function's p95 run time and success rate between BASE and CURRENT, each "
        "a store URL or a baseline JSON file (spear_sdk.testing.assert_baseline). Exit status 1 when a "
        "function regressed (p95 up by more than --threshold and --min-ms, success rate down by more than "
        "--success-drop points, or a function of BASE missing from CURRENT), else 0.",
    )
    compare.add_argument("base", metavar="BASE", help="store URL or baseline .json file")
    compare.add_argument("current", metavar="CURRENT", help="store URL or baseline .json file")
    compare.add_argument(
        "--threshold", type=float, default=0.2, help="relative p95 increase that counts (default 0.2 = 20%%)"
    )
    compare.add_argument(
        "--min-ms", type=float, default=1.0, help="p95 increase below this many ms never counts (default 1)"
    )
    compare.add_argument(
        "--success-drop", type=float, default=1.0, help="success-rate drop in points that counts (default 1)"
    )
    compare.add_argument("--since", help="for store URLs: only executions created since (2h, or a time)")
    compare.add_argument("--format", choices=("text", "md"), default="text", help="table format")


def run(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else 0.0
        if args.command == "report":
            return _report(args, since)
        return _diff(args, since)
    except ValueError as exc:
        print(f"spearlet {args.command}: {exc}", file=sys.stderr)
        return 2


def _report(args: argparse.Namespace, since: float) -> int:
    run = asyncio.run(read_run(args.store, since))
    form = args.format or ("md" if args.output and args.output.endswith(".md") else "html")
    text = render_markdown(run) if form == "md" else render_html(run)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}: {run.executions} executions, {len(run.functions)} functions")
    else:
        sys.stdout.write(text)
    return 0


def _diff(args: argparse.Namespace, since: float) -> int:
    if args.threshold < 0 or args.min_ms < 0 or args.success_drop < 0:
        raise ValueError("--threshold, --min-ms and --success-drop must not be negative")
    # Imported here: a diff reads baselines with pandas, which `spearlet serve` has no use for.
    from .diff import diff

    comparison = diff(
        args.base,
        args.current,
        threshold=args.threshold,
        min_ms=args.min_ms,
        success_drop=args.success_drop,
        since=since,
    )
    print(comparison.markdown() if args.format == "md" else comparison.table())
    regressed = sorted({r.function for r in comparison.regressions})
    if regressed:
        print(f"\nregressed: {', '.join(regressed)}")
        return 1
    print("\nno regression")
    return 0
