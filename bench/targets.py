"""The rows of the report: the targets of docs/performance.md, plus reference rows without targets.

A row compares one of our figures with a baseline measured in the same run. Its target applies to the
ratio ours / baseline, or (``on="value"``) to our figure itself, the baseline then shown for context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Target:
    group: str
    metric: str
    ours: str
    baseline: str | None
    unit: str
    op: Literal["<=", ">="] | None = None
    limit: float | None = None
    on: Literal["ratio", "value"] = "ratio"
    #: The figure (``ray``, ``dask``, ...) whose absence explains a missing baseline.
    system: str = ""

    def met(self, value: float, ratio: float | None) -> bool | None:
        if self.op is None or self.limit is None:
            return None
        subject = value if self.on == "value" else ratio
        if subject is None:
            return None
        return subject <= self.limit if self.op == "<=" else subject >= self.limit


TARGETS: tuple[Target, ...] = (
    Target(
        "P1", "P1 sync invoke p50 / grpc.aio echo p50", "ours.invoke_p50_ms", "echo.p50_ms", "ms", "<=", 1.5
    ),
    Target(
        "P2",
        "P2 sync invoke p50 / Ray task round trip p50",
        "ray.ours_invoke_p50_ms",
        "ray.rtt_p50_ms",
        "ms",
        "<=",
        0.5,
        system="ray",
    ),
    Target(
        "P3",
        "P3 async invocations/s / Ray async tasks/s",
        "ray.ours_async_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        1.0,
        system="ray",
    ),
    Target(
        "P3",
        "P3 async invocations/s / echo calls/s, 32 in flight",
        "ours.async_per_s",
        "echo.inflight_per_s",
        "/s",
        ">=",
        0.75,
    ),
    Target(
        "P4",
        "P4 f.map calls/s / Ray async tasks/s",
        "ours.map_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        5.0,
        system="ray",
    ),
    Target(
        "P4",
        "P4 f.map calls/s / ProcessPoolExecutor(2).map",
        "ours.map_per_s",
        "ppe.map_per_s",
        "/s",
        ">=",
        0.8,
    ),
    Target(
        "P5",
        "P5 stream chunks/s / grpc.aio server-stream",
        "ours.stream_per_s",
        "echo.stream_per_s",
        "/s",
        ">=",
        0.8,
    ),
    Target(
        "SDK", "S1 f(x) p50, lab / grpc.aio echo p50", "sdk.lab.call_p50_ms", "echo.p50_ms", "ms", "<=", 1.5
    ),
    Target(
        "SDK",
        "S1 f(x) p50, connect() / grpc.aio echo p50",
        "sdk.served.call_p50_ms",
        "echo.p50_ms",
        "ms",
        "<=",
        1.5,
    ),
    Target(
        "SDK",
        "S2 submit+result/s, lab / Ray async tasks/s",
        "sdk.lab.submit_result_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        1.5,
        system="ray",
    ),
    Target(
        "SDK",
        "S2 submit+result/s, connect() / Ray async tasks/s",
        "sdk.served.submit_result_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        1.5,
        system="ray",
    ),
    Target(
        "SDK",
        "S3 as_completed/s, lab / Ray async tasks/s",
        "sdk.lab.as_completed_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        1.5,
        system="ray",
    ),
    Target(
        "SDK",
        "S3 as_completed/s, connect() / Ray async tasks/s",
        "sdk.served.as_completed_per_s",
        "ray.rate_per_s",
        "/s",
        ">=",
        1.5,
        system="ray",
    ),
    Target("SDK", "S4 f.submit(x) alone, lab", "sdk.lab.submit_us", None, "us", "<=", 50.0, on="value"),
    Target(
        "SDK", "S4 f.submit(x) alone, connect()", "sdk.served.submit_us", None, "us", "<=", 50.0, on="value"
    ),
    Target(
        "SDK", "S5 end to waiting caller, p50, lab", "sdk.lab.push_p50_ms", None, "ms", "<=", 10.0, on="value"
    ),
    Target(
        "SDK", "S5 end to waiting caller, p99, lab", "sdk.lab.push_p99_ms", None, "ms", "<=", 10.0, on="value"
    ),
    Target(
        "SDK",
        "S5 end to waiting caller, p50, connect()",
        "sdk.served.push_p50_ms",
        None,
        "ms",
        "<=",
        10.0,
        on="value",
    ),
    Target("P6", "P6 executions() DataFrame / no-RPC floor", "ours.frame_s", "floor.frame_s", "s", "<=", 2.0),
    Target("P6", "P6 executions() DataFrame, seconds", "ours.frame_s", None, "s", "<=", 0.5, on="value"),
    Target(
        "P7",
        "P7 start_lab() to 1st result / ray.init + 1st task",
        "ours.cold_start_s",
        "ray.cold_start_s",
        "s",
        "<=",
        0.25,
        system="ray",
    ),
    Target(
        "P8",
        "P8 store write per state change / raw sqlite3",
        "ours.store_change_us",
        "sqlite.commit_us",
        "us",
        "<=",
        1.5,
    ),
    Target(
        "P9",
        "P9 panel comm messages/s under load",
        "panel.messages_per_s",
        None,
        "msg/s",
        "<=",
        20.0,
        on="value",
    ),
    Target(
        "MEM",
        "MEM server RSS at the end / after warm-up",
        "mem.server_rss_end_mb",
        "mem.server_rss_warm_mb",
        "MB",
        "<=",
        1.10,
    ),
    Target(
        "IDLE",
        "IDLE lab RSS (with workers) / Ray idle RSS",
        "idle.lab_rss_mb",
        "idle.ray_rss_mb",
        "MB",
        "<=",
        0.5,
        system="ray",
    ),
    Target(
        "IDLE",
        "IDLE lab CPU, % of one core (baseline: Ray)",
        "idle.lab_cpu_percent",
        "idle.ray_cpu_percent",
        "%",
        "<=",
        1.0,
        on="value",
        system="ray",
    ),
    # R5: a stop (a time limit due, a cancel asked for) ends the work's process within 100 ms; the p99
    # against the line, the p50 beside it.
    Target(
        "R5",
        "R5 time limit due -> work stopped, p99 (baseline: p50)",
        "stop.timeout_p99_ms",
        "stop.timeout_p50_ms",
        "ms",
        "<=",
        100.0,
        on="value",
    ),
    Target(
        "R5",
        "R5 cancel asked -> work stopped, p99 (baseline: p50)",
        "stop.cancel_p99_ms",
        "stop.cancel_p50_ms",
        "ms",
        "<=",
        100.0,
        on="value",
    ),
    Target(
        "BIG",
        "BIG 200 MB numpy argument -> scalar, lab / Ray",
        "big.lab_arg_s",
        "big.ray_arg_s",
        "s",
        "<=",
        1.5,
        system="ray",
    ),
    Target(
        "BIG",
        "BIG call with a ref minus a plain call, p50 (baseline: Ray's)",
        "big.lab_ref_extra_ms",
        "big.ray_ref_extra_ms",
        "ms",
        "<=",
        5.0,
        on="value",
        system="ray",
    ),
    Target(
        "BIG",
        "BIG 100 MB result, lab / Ray",
        "big.lab_result_s",
        "big.ray_result_s",
        "s",
        "<=",
        1.5,
        system="ray",
    ),
    Target(
        "BIG",
        "BIG caller's peak RSS sending 200 MB / the data (baseline: Ray's)",
        "big.lab_send_rss",
        "big.ray_send_rss",
        "x",
        "<=",
        1.5,
        on="value",
        system="ray",
    ),
    Target(
        "PG",
        "PG map calls/s on PostgreSQL / on SQLite",
        "pg.map_per_s",
        "pg.sqlite_map_per_s",
        "/s",
        ">=",
        0.7,
    ),
    Target(
        "PG",
        "PG sync invoke p50 on PostgreSQL / on SQLite",
        "pg.invoke_p50_ms",
        "pg.sqlite_invoke_p50_ms",
        "ms",
        "<=",
        1.3,
    ),
    # Reference rows: no target, the figures side by side.
    Target(
        "BIG",
        "ref: 200 MB argument, connect() to a local server / Ray",
        "big.connect_arg_s",
        "big.ray_arg_s",
        "s",
        system="ray",
    ),
    Target(
        "BIG",
        "ref: 100 MB result, connect() to a local server / Ray",
        "big.connect_result_s",
        "big.ray_result_s",
        "s",
        system="ray",
    ),
    Target(
        "BIG",
        "ref: connect() call with a ref minus a plain call, p50",
        "big.connect_ref_extra_ms",
        "big.ray_ref_extra_ms",
        "ms",
        system="ray",
    ),
    Target(
        "BIG",
        "ref: connect() caller's peak RSS sending 200 MB / the data",
        "big.connect_send_rss",
        "big.ray_send_rss",
        "x",
        system="ray",
    ),
    Target("P1", "ref: sync invoke p99 / echo p99", "ours.invoke_p99_ms", "echo.p99_ms", "ms"),
    Target(
        "P3",
        "ref: sync invokes/s, 32 in flight / echo",
        "ours.sync_inflight_per_s",
        "echo.inflight_per_s",
        "/s",
    ),
    Target("P1", "ref: echo through a worker process p50 / echo p50", "relay.p50_ms", "echo.p50_ms", "ms"),
    Target(
        "P1",
        "ref: the same, one SQLite commit per call p50 / echo p50",
        "durable_relay.p50_ms",
        "echo.p50_ms",
        "ms",
    ),
    Target(
        "P1",
        "ref: server CPU per sync invoke / per echo call",
        "ours.sync_server_cpu_us",
        "echo.sync_server_cpu_us",
        "us",
    ),
    Target(
        "P3",
        "ref: server CPU per async invocation / per echo call, 32 in flight",
        "ours.async_server_cpu_us",
        "echo.inflight_server_cpu_us",
        "us",
    ),
    Target(
        "P1",
        "ref: sync invoke p50 / the same with one SQLite commit per call p50",
        "ours.invoke_p50_ms",
        "durable_relay.p50_ms",
        "ms",
    ),
    Target(
        "P4", "ref: sync invoke p50 / PPE submit->result p50", "ours.invoke_p50_ms", "ppe.rtt_p50_ms", "ms"
    ),
    Target("P4", "ref: async invocations/s / PPE tasks/s", "ours.async_per_s", "ppe.rate_per_s", "/s"),
    Target(
        "DASK",
        "DASK --executor dask: SDK f(x) p50 / Dask submit().result() p50",
        "cluster.sdk_call_p50_ms",
        "cluster.rtt_p50_ms",
        "ms",
        "<=",
        1.2,
        system="dask",
    ),
    Target(
        "DASK",
        "ref: --executor dask sync InvokeFunction p50 / Dask submit().result() p50",
        "cluster.ours_invoke_p50_ms",
        "cluster.rtt_p50_ms",
        "ms",
        system="dask",
    ),
    Target(
        "DASK",
        "DASK --executor dask: f.map calls/s / Dask client.map+gather",
        "cluster.ours_map_per_s",
        "cluster.map_per_s",
        "/s",
        ">=",
        0.8,
        system="dask",
    ),
    Target(
        "DASK",
        "ref: sync invoke p50 / Dask task round trip p50",
        "dask.ours_invoke_p50_ms",
        "dask.rtt_p50_ms",
        "ms",
        system="dask",
    ),
    Target(
        "DASK",
        "ref: async invocations/s / Dask tasks/s",
        "dask.ours_async_per_s",
        "dask.rate_per_s",
        "/s",
        system="dask",
    ),
    Target(
        "DASK",
        "ref: start_lab() to 1st result / Dask cluster",
        "ours.cold_start_s",
        "dask.startup_s",
        "s",
        system="dask",
    ),
)
