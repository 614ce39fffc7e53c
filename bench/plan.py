"""What a run measures and how much: the metric groups and the sizes of the default and quick runs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Metric groups ``--only`` selects from: P1-P9, R5 and S1-S5 (the SDK) of docs/performance.md (R5: how
#: soon a time limit or a cancel stops the work), server memory, the lab's idle footprint, the Dask
#: reference figures, large values (BIG), and the PostgreSQL store against SQLite (PG).
GROUPS = (
    "P1",
    "P2",
    "P3",
    "P4",
    "P5",
    "P6",
    "P7",
    "P8",
    "P9",
    "R5",
    "SDK",
    "MEM",
    "IDLE",
    "DASK",
    "BIG",
    "PG",
)


@dataclass(frozen=True)
class Sizes:
    latency_rounds: int = 5
    latency_calls: int = 400  # per round and side (P1, P2)
    rate_rounds: int = 3
    inflight: int = 32  # calls one client keeps in flight (P3, the echo's in-flight rate)
    inflight_calls: int = 3000
    stream_messages: int = 10_000  # per stream (P5)
    peer_rate_calls: int = 3000  # Ray tasks submitted at once (P3, P4)
    dask_rtt_calls: int = 100
    dask_rate_calls: int = 1000
    dask_map_calls: int = 2000  # one f.map / client.map on the Dask cluster (DASK)
    map_rounds: int = 3
    map_calls: int = 10_000  # one f.map / executor.map (P4); also the batch that fills the store
    executions: int = 100_000  # executions on the server for P6 and MEM
    frame_rounds: int = 3
    store_rounds: int = 5
    stop_calls: int = 100  # time limits and cancels of running processes, each (R5)
    store_executions: int = 2000  # x3 state changes per round (P8)
    store_inflight: int = 32
    cold_rounds: int = 3
    idle_s: float = 10.0
    panel_s: float = 8.0  # seconds of load while the panel is watched (P9)
    sdk_calls: int = 5000  # submits per round (S2, S3, S4)
    push_calls: int = 100  # waited ends per round (S5)
    big_rounds: int = 5  # 200 MB arguments and 100 MB results per side and pass (BIG)
    big_passes: int = 2  # each side's child runs this many times, the sides in turn

    def scaled(self, factor: float) -> Sizes:
        """Every count times ``factor`` (rounds, concurrency and durations unchanged)."""
        if factor == 1:
            return self
        counts = {
            f.name: max(10, round(getattr(self, f.name) * factor))
            for f in dataclasses.fields(self)
            if f.name.endswith(("_calls", "_messages", "executions"))
        }
        return dataclasses.replace(self, **counts)


DEFAULT = Sizes()
QUICK = Sizes(
    latency_rounds=3,
    latency_calls=200,
    rate_rounds=2,
    inflight_calls=1000,
    stream_messages=3000,
    peer_rate_calls=1000,
    dask_rtt_calls=30,
    dask_rate_calls=300,
    dask_map_calls=500,
    map_rounds=2,
    map_calls=2000,
    executions=10_000,
    frame_rounds=2,
    store_rounds=3,
    stop_calls=40,
    store_executions=500,
    cold_rounds=1,
    idle_s=3.0,
    panel_s=3.0,
    sdk_calls=1000,
    push_calls=30,
    big_rounds=3,
)
