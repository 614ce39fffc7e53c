"""``spearlet serve``: run the server until SIGINT or SIGTERM; ``spearlet report`` and ``spearlet diff``:
reports and comparisons of runs, read from stores (see :mod:`spearlet.report`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from . import __version__, collector
from .app import SpearletServer
from .config import DEFAULT_STORE, EXECUTORS, Config
from .report import commands as report_commands
from .store import StoreError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spearlet", description="The Spearlet function service.")
    parser.add_argument("--version", action="version", version=f"spearlet {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Every option can also be set as a SPEARLET_<OPTION> environment "
        "variable (e.g. SPEARLET_PORT, SPEARLET_MAX_CONCURRENT); flags win.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port; 0 picks a free one (default 50051)")
    serve.add_argument(
        "--store",
        help="store URL: memory://, sqlite:///path or postgresql://user@host:port/db "
        f"(default {DEFAULT_STORE})",
    )
    serve.add_argument(
        "--executor",
        choices=EXECUTORS,
        help="how functions run: warm worker processes, threads of the server, or tasks on a Dask cluster "
        "(default process)",
    )
    serve.add_argument(
        "--dask-address",
        help="the Dask scheduler of --executor dask (tcp://HOST:PORT); without it a local cluster starts",
    )
    serve.add_argument(
        "--max-concurrent",
        type=int,
        help="executions running at once (default: CPU count; with dask, the cluster's slots)",
    )
    serve.add_argument("--max-queued", type=int, help="executions waiting at most (default 10000)")
    serve.add_argument(
        "--default-timeout-ms", type=int, help="run-time limit when a call sets none (0 = none)"
    )
    serve.add_argument("--max-object-bytes", type=int, help="largest object (default 1 TiB: the disk's room)")
    serve.add_argument(
        "--inline-limit-bytes",
        type=int,
        help="values larger than this (serialized) travel by reference (default 1 MiB)",
    )
    serve.add_argument(
        "--object-grace-s", type=float, help="seconds a fetched result object lives on (default 30)"
    )
    serve.add_argument("--object-dir", help="where object files live (default: beside the store)")
    serve.add_argument("--max-message-bytes", type=int, help="gRPC message limit (default: objects fit)")
    serve.add_argument("--token", help="require 'authorization: Bearer TOKEN' on every call")
    serve.add_argument("--tls-cert", help="PEM certificate chain to serve TLS")
    serve.add_argument("--tls-key", help="PEM private key to serve TLS")
    serve.add_argument("--shutdown-grace-s", type=float, help="seconds in-flight work may finish at shutdown")
    serve.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    report_commands.add_parsers(commands)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        name: getattr(args, name)
        for name in (
            "host",
            "port",
            "store",
            "executor",
            "dask_address",
            "max_concurrent",
            "max_queued",
            "default_timeout_ms",
            "max_object_bytes",
            "max_message_bytes",
            "inline_limit_bytes",
            "object_grace_s",
            "object_dir",
            "token",
            "tls_cert",
            "tls_key",
            "shutdown_grace_s",
        )
    }
    return Config.from_env(**overrides)


async def serve(config: Config) -> None:
    server = SpearletServer(config)
    await server.start()
    collector.settle_after_start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"spearlet listening on {server.address} (store {config.store}, executor {config.executor}, "
        f"{server.engine.config.max_concurrent} concurrent)",
        flush=True,
    )
    await stop.wait()
    print("spearlet shutting down", flush=True)
    await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in report_commands.COMMANDS:
        return report_commands.run(args)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"spearlet: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except StoreError as exc:  # the store cannot be opened: held by another server, unwritable, not SQLite
        print(f"spearlet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
