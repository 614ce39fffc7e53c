"""SPEC §6 P1: sync invoke of a trivial function vs a bare grpc.aio unary echo, side by side in one run.

Both servers run as child processes of this script (so they do not share its event loop); the same
grpc.aio client measures each, alternating rounds so that machine noise hits both alike.

    python -m bench.invoke_latency [--calls 2000] [--rounds 5] [--store sqlite]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from spear_sdk.wire import codec
from spear_sdk.wire import function_pb2 as fpb
from spear_sdk.wire import function_pb2_grpc as fgrpc

ECHO_METHOD = "/bench.Echo/Echo"

ECHO_SERVER = """
import asyncio, sys, grpc

async def main():
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.wait_for_termination()

async def _echo(request, context):
    return request

asyncio.run(main())
"""


def _start(argv: list[str], cwd: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=cwd)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if "listening on " in line:
            return proc, line.split("listening on ", 1)[1].split()[0]
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"{argv[:3]} did not start")


async def _measure(call: Callable[[], Awaitable[object]], calls: int) -> list[float]:
    for _ in range(min(200, calls)):  # warm up connections, workers and caches
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


async def run(calls: int, rounds: int, store: str, workdir: str) -> dict[str, float]:
    echo_proc, echo_addr = _start([sys.executable, "-c", ECHO_SERVER], workdir)
    store_url = "memory://" if store == "memory" else f"sqlite:///{workdir}/bench.db"
    spear_proc, spear_addr = _start(
        [
            sys.executable,
            "-m",
            "spearlet",
            "serve",
            "--port",
            "0",
            "--store",
            store_url,
            "--log-level",
            "ERROR",
        ],
        workdir,
    )
    try:
        echo_channel = grpc.aio.insecure_channel(echo_addr)
        spear_channel = grpc.aio.insecure_channel(spear_addr)
        echo = echo_channel.unary_unary(ECHO_METHOD)
        stub = fgrpc.FunctionServiceStub(spear_channel)
        task = await stub.RegisterTask(
            fpb.RegisterTaskRequest(
                task_name="trivial",
                artifact_spec=fpb.ArtifactSpec(artifact_type="python", location="operator:neg"),
            )
        )
        request = fpb.InvokeFunctionRequest(
            task_id=task.task.task_id, parameters=[fpb.FunctionParameter(value=codec.encode(3))]
        )
        payload = request.SerializeToString()

        async def invoke() -> None:
            response = await stub.InvokeFunction(request)
            assert response.success, response.message

        async def bare_echo() -> None:
            await echo(payload)

        echo_samples: list[float] = []
        spear_samples: list[float] = []
        for _ in range(rounds):
            echo_samples += await _measure(bare_echo, calls // rounds)
            spear_samples += await _measure(invoke, calls // rounds)
        await echo_channel.close()
        await spear_channel.close()
    finally:
        for proc in (echo_proc, spear_proc):
            proc.terminate()
            proc.wait(timeout=30)
    echo_p50 = statistics.median(echo_samples)
    spear_p50 = statistics.median(spear_samples)
    return {
        "echo_p50_ms": round(echo_p50, 4),
        "invoke_p50_ms": round(spear_p50, 4),
        "invoke_p99_ms": round(statistics.quantiles(spear_samples, n=100)[98], 4),
        "ratio": round(spear_p50 / echo_p50, 3),
        "target_ratio": 1.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        figures = asyncio.run(run(args.calls, args.rounds, args.store, workdir))
    figures.update(store=args.store, calls=args.calls, cpus=os.cpu_count() or 1)  # type: ignore[arg-type]
    print(f"{'metric':<28}{'value':>12}")
    for key, val in figures.items():
        print(f"{key:<28}{val!s:>12}")
    out = Path("bench/results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "invoke_latency.json").write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
