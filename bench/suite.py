"""One run of the suite: servers and peers as child processes, phases of alternating rounds, figures.

Phases, in order (each only when a selected group needs it):

1. rpc: the bare grpc.aio server and ``spearlet serve`` (SQLite in a temporary directory) side by side:
   P1 latency, P3's in-flight rates, P5 streams;
2. ray, then dask: each peer alive only in its phase, its rounds alternating with ours (P2, P3, P4);
   then one two-worker Dask cluster shared by ``spearlet serve --executor dask`` and Dask's own client
   (DASK);
3. store: the store layer against raw sqlite3, in this process (P8);
4. map and fill: ``f.map`` against ``ProcessPoolExecutor.map`` (P4), then the planned number of further
   executions in map batches, the server's RSS sampled before and after each batch (MEM);
5. frames: ``client.executions(limit=N)`` against the no-RPC floor over the same N rows (P6);
6. start-up and idle children (P7, IDLE); the panel child (P9);
7. stops: time limits and cancels of running processes on the spearlet child (R5).
8. large values (BIG): a child each for the lab, ``connect()`` to a local server, and Ray.

A phase that fails is recorded as a note (and makes the run's exit status 1); the others still run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import panel, startup
from .baselines import Echo, frame_floor
from .measure import WARMUP, Loop, Samples, Step, alternate, median, quantile, with_cpu
from .memory import tree_rss
from .ours import Sdk, SdkCalls, Spear
from .plan import Sizes
from .servers import DaskCluster, Peer, Server, echo_server, run_script, spearlet_server
from .stops import stop_latencies
from .storage import RawSqlite, StoreLayer

MB = 1024 * 1024
#: Baseline systems that may be missing (or skipped with ``--without``): their rows then say why.
OPTIONAL_SYSTEMS = ("ray", "dask")


class Suite:
    def __init__(
        self,
        sizes: Sizes,
        groups: set[str],
        workdir: Path,
        log: Callable[[str], None],
        without: set[str] | None = None,
    ) -> None:
        self.sizes = sizes
        self.without = without or set()
        self.groups = groups
        self.workdir = workdir
        self.log = log
        self.samples = Samples()
        self.figures: dict[str, float] = {}
        self.notes: dict[str, str] = {}
        self.extra: dict[str, Any] = {}
        self.failed: list[str] = []
        self.loop = Loop()
        #: The S rows' clients: an in-process lab's, and connect()'s to the spearlet child.
        self.sdks: dict[str, SdkCalls] = {}

    def wants(self, *groups: str) -> bool:
        return bool(self.groups.intersection(groups))

    def has(self, system: str) -> bool:
        """Whether a baseline system can run; if not, a note says why."""
        if system in self.without:
            self.notes[system] = f"{system}: skipped"
            return False
        if importlib.util.find_spec(system) is None:
            self.notes[system] = f"{system}: not installed"
            return False
        return True

    # -- the run -------------------------------------------------------------------------------------

    def run(self) -> None:
        spearlet: Server | None = None
        echo: Server | None = None
        spear: Spear | None = None
        try:
            if self.wants("P1", "P2", "P3", "P4", "P5", "P6", "R5", "MEM", "DASK", "SDK"):
                spearlet = spearlet_server(self.workdir, f"sqlite:///{self.workdir / 'spearlet.db'}")
                spear = Spear(spearlet.address)
                self.loop.run(spear.setup())
            if spearlet is not None and self.wants("SDK"):
                self._phase("sdk", lambda: self._sdk_clients(spearlet))
            if spear is not None and self.wants("P1", "P3", "P5", "SDK"):
                echo = echo_server(self.workdir)
                self._phase("rpc", lambda: self._rpc(spear, echo, spearlet))
            if spear is not None and self.wants("SDK") and self.sdks:
                self._phase("sdk-rates", self._sdk_rates)
            if spear is not None and self.wants("P2", "P3", "P4", "SDK") and self.has("ray"):
                self._phase("ray", lambda: self._peer("ray", spear))
            if spear is not None and self.wants("DASK") and self.has("dask"):
                self._phase("dask", lambda: self._peer("dask", spear))
            if self.wants("DASK") and self.has("dask"):
                self._phase("dask-cluster", self._dask_cluster)
            if self.wants("P8"):
                self._phase("store", self._store)
            if spearlet is not None and spear is not None and self.wants("P4", "P6", "MEM"):
                self._phase("map", lambda: self._map_and_fill(spearlet, spear))
            if self.wants("P7", "IDLE"):
                self._phase("startup", self._startup)
            if self.wants("P9"):
                self._phase("panel", self._panel)
            if spear is not None and self.wants("R5"):
                self._phase("stops", lambda: self._stops(spear))
            if self.wants("BIG"):
                self._phase("big", self._big)
            if self.wants("PG"):
                self._phase("postgres", self._postgres)
        finally:
            for sdk in self.sdks.values():
                sdk.client.close()
            if spear is not None:
                self.loop.run(spear.close())
            for server in (echo, spearlet):
                if server is not None:
                    server.stop()
            self.loop.close()
        self._summarize()

    def _phase(self, name: str, body: Callable[[], None]) -> None:
        self.log(f"[{name}]")
        started = time.perf_counter()
        try:
            body()
        except Exception as exc:
            self.failed.append(name)
            self.notes.setdefault(name, f"error in {name}: {type(exc).__name__}")
            self.extra.setdefault("errors", {})[name] = traceback.format_exc()
            self.log(f"  {name} failed: {type(exc).__name__}: {exc}")
        self.extra.setdefault("phase_seconds", {})[name] = round(time.perf_counter() - started, 2)

    # -- phases ----------------------------------------------------------------------------------------

    def _rpc(self, spear: Spear, server: Server, spearlet: Server) -> None:
        s, loop = self.sizes, self.loop
        chunk = loop.run(spear.sample_chunk())
        echo = Echo(server.address, spear.invoke_request.SerializeToString(), chunk)

        def cpu(of: Server, step: Step, calls: int, name: str) -> Step:
            """``step``, also recording the CPU ``of`` spent per call (``calls``: its warm-up included)."""
            return with_cpu(step, of.proc.pid, calls, name, self.samples)

        try:
            if self.wants("P1", "SDK"):
                echo_latency = loop.step(lambda: echo.p50_samples(s.latency_calls))
                if self.wants("P1"):
                    calls = s.latency_calls + WARMUP
                    ours = loop.step(lambda: spear.invoke_samples(s.latency_calls))
                    steps = [
                        ("echo.latency_ms", cpu(server, echo_latency, calls, "echo.sync_server_cpu_us")),
                        ("relay.latency_ms", loop.step(lambda: echo.relay_samples(s.latency_calls))),
                        (
                            "durable_relay.latency_ms",
                            loop.step(lambda: echo.durable_relay_samples(s.latency_calls)),
                        ),
                        ("ours.invoke_latency_ms", cpu(spearlet, ours, calls, "ours.sync_server_cpu_us")),
                    ]
                else:
                    steps = [("echo.latency_ms", echo_latency)]
                for where, sdk in self.sdks.items():  # S1, S5
                    steps.append((f"sdk.{where}.call_latency_ms", _calls(sdk, s.latency_calls)))
                    if self.wants("SDK"):
                        steps.append((f"sdk.{where}.push_latency_ms", _pushes(sdk, s.push_calls)))
                alternate(s.latency_rounds, steps, self.samples)
            if self.wants("P3"):
                alternate(
                    s.rate_rounds,
                    [
                        (
                            "echo.inflight_per_s",
                            cpu(
                                server,
                                loop.step(lambda: echo.inflight_rate(s.inflight_calls, s.inflight)),
                                s.inflight_calls + WARMUP,
                                "echo.inflight_server_cpu_us",
                            ),
                        ),
                        (
                            "ours.async_per_s",
                            cpu(
                                spearlet,
                                loop.step(lambda: spear.async_rate(s.inflight_calls, s.inflight)),
                                s.inflight_calls + WARMUP,
                                "ours.async_server_cpu_us",
                            ),
                        ),
                        (
                            "ours.sync_inflight_per_s",
                            loop.step(lambda: spear.sync_inflight_rate(s.inflight_calls, s.inflight)),
                        ),
                    ],
                    self.samples,
                )
            if self.wants("P5"):
                alternate(
                    s.rate_rounds,
                    [
                        ("echo.stream_per_s", loop.step(lambda: echo.stream_rate(s.stream_messages))),
                        ("ours.stream_per_s", loop.step(lambda: spear.stream_rate(s.stream_messages))),
                    ],
                    self.samples,
                )
        finally:
            loop.run(echo.close())

    def _peer(self, kind: str, spear: Spear) -> None:
        s, loop = self.sizes, self.loop
        peer = Peer(kind, self.workdir)
        try:
            if not peer.available:
                self.notes[kind] = peer.reason
                return
            self.extra.setdefault("versions", {})[kind] = peer.version
            if peer.startup_s is not None:
                self.samples.add(f"{kind}.startup_s", peer.startup_s)
            # As many latency samples as P1 takes, in the (fewer) rounds of a throughput comparison.
            ours_calls = s.latency_calls * s.latency_rounds // s.rate_rounds
            rtt_calls = ours_calls if kind == "ray" else s.dask_rtt_calls
            rate_calls = s.peer_rate_calls if kind == "ray" else s.dask_rate_calls
            steps: list[tuple[str, Any]] = []
            if kind == "dask" or self.wants("P2"):
                steps += [
                    (f"{kind}.rtt_ms", lambda: peer.ask("rtt", n=rtt_calls)["samples_ms"]),
                    (
                        f"{kind}.ours_invoke_latency_ms",
                        loop.step(lambda: spear.invoke_samples(s.latency_calls)),
                    ),
                ]
            if kind == "dask" or self.wants("P3", "P4", "SDK"):
                steps.append((f"{kind}.rate_per_s", lambda: peer.ask("rate", n=rate_calls)["per_s"]))
            if kind == "ray":
                for where, sdk in self.sdks.items():  # S2, S3: beside Ray's rate, in the same rounds
                    steps += [
                        (f"sdk.{where}.submit_result_per_s", _submit_results(sdk, s.sdk_calls)),
                        (f"sdk.{where}.as_completed_per_s", _as_completed(sdk, s.sdk_calls)),
                    ]
            if kind == "dask" or self.wants("P3"):
                steps.append(
                    (
                        f"{kind}.ours_async_per_s",
                        loop.step(lambda: spear.async_rate(s.inflight_calls, s.inflight)),
                    )
                )
            alternate(s.rate_rounds, steps, self.samples)
        finally:
            peer.stop()

    def _sdk_clients(self, spearlet: Server) -> None:
        """The S rows' two clients: an in-process lab (its server on the SDK's loop, in this process),
        and ``connect()`` to the spearlet child the P rows measure."""
        import spear_sdk

        self.sdks["lab"] = SdkCalls(spear_sdk.start_lab().client)
        self.sdks["served"] = Sdk(spearlet.address)

    def _sdk_rates(self) -> None:
        """S4 (submit alone), and S2/S3 when Ray is not there to stand beside them."""
        s = self.sizes
        steps: list[tuple[str, Any]] = []
        for where, sdk in self.sdks.items():
            steps.append((f"sdk.{where}.submit_us", _submits(sdk, s.sdk_calls)))
            if "ray" in self.without or not self.has("ray"):
                steps += [
                    (f"sdk.{where}.submit_result_per_s", _submit_results(sdk, s.sdk_calls)),
                    (f"sdk.{where}.as_completed_per_s", _as_completed(sdk, s.sdk_calls)),
                ]
        alternate(s.rate_rounds, steps, self.samples)

    def _dask_cluster(self) -> None:
        """One two-worker Dask cluster, used in turn by ``spearlet serve --executor dask`` and by Dask's own
        client: sync call round trips, then ``f.map`` against ``client.map`` + ``gather``."""
        s, loop = self.sizes, self.loop
        cluster = DaskCluster(self.workdir)
        server: Server | None = None
        peer: Peer | None = None
        spear: Spear | None = None
        sdk: Sdk | None = None
        try:
            server = spearlet_server(
                self.workdir,
                f"sqlite:///{self.workdir / 'spearlet-dask.db'}",
                "--executor",
                "dask",
                "--dask-address",
                cluster.address,
                name="spearlet-dask",
            )
            spear = Spear(server.address)
            loop.run(spear.setup())
            sdk = Sdk(server.address)
            peer = Peer("dask", self.workdir, cluster.address)
            # Warm the workers' call processes and the pipelines' sizing before anything is measured.
            loop.run(spear.invoke_samples(50))
            sdk.map_rate(s.dask_map_calls // 4)
            ours_spear, ours_sdk = spear, sdk
            alternate(
                s.rate_rounds,
                [
                    ("cluster.rtt_ms", lambda: peer.ask("rtt", n=s.dask_rtt_calls)["samples_ms"]),
                    # What a notebook user meets: f(x) through the SDK, from call to value.
                    ("cluster.sdk_call_latency_ms", _calls(ours_sdk, s.dask_rtt_calls)),
                    (
                        "cluster.ours_invoke_latency_ms",
                        loop.step(lambda: ours_spear.invoke_samples(s.dask_rtt_calls)),
                    ),
                    ("cluster.map_per_s", lambda: peer.ask("map", n=s.dask_map_calls)["per_s"]),
                    ("cluster.ours_map_per_s", lambda: ours_sdk.map_rate(s.dask_map_calls)),
                ],
                self.samples,
            )
        finally:
            if peer is not None:
                peer.stop()
            if sdk is not None:
                sdk.close()
            if spear is not None:
                loop.run(spear.close())
            if server is not None:
                server.stop()
            cluster.stop()

    def _store(self) -> None:
        s = self.sizes
        raw = RawSqlite(self.workdir / "raw.db")
        layer = StoreLayer(self.workdir / "store.db")
        self.extra["store_write_path"] = layer.path_name
        try:
            alternate(
                s.store_rounds,
                [
                    ("sqlite.commit_us", lambda: raw.commit_us(s.store_executions)),
                    (
                        "ours.store_change_us",
                        self.loop.step(lambda: layer.change_us(s.store_executions, s.store_inflight)),
                    ),
                ],
                self.samples,
            )
        finally:
            raw.close()
            self.loop.run(layer.close())

    def _map_and_fill(self, server: Server, spear: Spear) -> None:
        s = self.sizes
        sdk = Sdk(server.address)
        try:
            if self.wants("P4"):
                peer = Peer("ppe", self.workdir)
                try:
                    alternate(
                        s.map_rounds,
                        [
                            ("ppe.map_per_s", lambda: peer.ask("map", n=s.map_calls)["per_s"]),
                            ("ours.map_per_s", lambda: sdk.map_rate(s.map_calls)),
                            ("ppe.rtt_ms", lambda: peer.ask("rtt", n=s.latency_calls)["samples_ms"]),
                            ("ppe.rate_per_s", lambda: peer.ask("rate", n=s.peer_rate_calls)["per_s"]),
                        ],
                        self.samples,
                    )
                finally:
                    peer.stop()
            if self.wants("P6", "MEM"):
                self._fill(server, spear, sdk)
            if self.wants("P6"):
                self._frames(spear, sdk)
        finally:
            sdk.close()

    def _fill(self, server: Server, spear: Spear, sdk: Sdk) -> None:
        """``sizes.executions`` more executions in map batches, after a warm-up; RSS after each batch."""
        s = self.sizes
        if not self.wants("P4"):  # the warm-up the map rounds would have been
            sdk.map_rate(s.map_calls)
        start = self.loop.run(spear.total_executions())
        total = start
        series = [(total, tree_rss(server.pid))]
        while total < start + s.executions:
            sdk.map_rate(min(s.map_calls, start + s.executions - total))
            total = self.loop.run(spear.total_executions())
            series.append((total, tree_rss(server.pid)))
        self.extra["server_rss_series"] = [{"executions": n, "rss_mb": rss / MB} for n, rss in series]
        self.figures["mem.executions_warm"] = series[0][0]
        self.figures["mem.executions_end"] = series[-1][0]
        self.figures["mem.server_rss_warm_mb"] = series[0][1] / MB
        self.figures["mem.server_rss_end_mb"] = series[-1][1] / MB

    def _frames(self, spear: Spear, sdk: Sdk) -> None:
        """The first ``sizes.executions`` executions, through the SDK and through the floor."""
        infos = self.loop.run(spear.all_infos(self.sizes.executions))
        self.figures["frame.rows"] = len(infos)

        def floor() -> float:
            start = time.perf_counter()
            frame = frame_floor(infos)
            elapsed = time.perf_counter() - start
            assert len(frame) == len(infos)
            return elapsed

        alternate(
            self.sizes.frame_rounds,
            [("ours.frame_s", lambda: sdk.executions_seconds(len(infos))), ("floor.frame_s", floor)],
            self.samples,
        )
        # Like for like: the floor builds the columns and dtypes the SDK's frame has.
        ours, base = sdk.client.executions(limit=10), frame_floor(infos[:10])
        self.extra["frame_schemas_match"] = list(ours.columns) == list(base.columns) and bool(
            (ours.dtypes == base.dtypes).all()
        )

    def _stops(self, spear: Spear) -> None:
        stops = self.loop.run(stop_latencies(spear, self.sizes.stop_calls))
        for kind, samples in stops.items():
            self.samples.add(f"stop.{kind}_latency_ms", samples)

    def _startup(self) -> None:
        """Fresh children, ours and Ray's in turn: P7's rounds, the last of which (with IDLE) also watches
        each child idle after its first result."""
        kinds = ["ours"] + (["ray"] if self.has("ray") else [])
        rounds = self.sizes.cold_rounds if self.wants("P7") else 1
        for index in range(rounds):
            for kind in kinds:
                if self.wants("IDLE") and index == rounds - 1:
                    seconds, idle = startup.cold_start_then_idle(kind, self.workdir, self.sizes.idle_s)
                    name = "lab" if kind == "ours" else kind
                    self.figures[f"idle.{name}_rss_mb"] = idle.rss_mean_bytes / MB
                    self.figures[f"idle.{name}_cpu_percent"] = idle.cpu_percent
                    self.extra[f"idle_{name}"] = vars(idle)
                else:
                    seconds = startup.cold_start_s(kind, self.workdir)
                if self.wants("P7"):
                    self.samples.add(f"{kind}.cold_start_s", seconds)

    def _panel(self) -> None:
        reason = panel.unavailable_reason()
        if reason:
            self.notes["P9"] = f"not available: {reason}"
            return
        figures = panel.panel_traffic(self.sizes.panel_s, self.workdir)
        self.extra["panel"] = figures
        self.figures["panel.messages_per_s"] = figures["messages_per_s"]

    def _big(self) -> None:
        """Large values: a fresh child each for the lab, connect() to a local server, and Ray, in turn, in
        ``big_passes`` passes (the median of the passes is reported), so that a load that comes and goes
        falls on every side."""
        kinds = ["ray"] if self.has("ray") else []
        kinds += ["lab", "connect"]
        for index in range(self.sizes.big_passes):
            for kind in kinds:
                try:
                    line = run_script(
                        f"big-{kind}-{index}",
                        ["-m", "bench.big_child", kind, str(self.sizes.big_rounds)],
                        self.workdir,
                        600,
                    )
                except RuntimeError as exc:
                    self.notes[f"big-{kind}-{index}"] = f"BIG {kind} pass {index + 1} failed"
                    self.extra.setdefault("errors", {})[f"big-{kind}-{index}"] = str(exc)[-2000:]
                    continue
                figures = json.loads(line)
                for name, value in figures.items():
                    self.samples.add(f"big.{kind}_{name}", value)
                self.samples.add(f"big.{kind}_ref_extra_ms", figures["ref_ms"] - figures["plain_ms"])

    # -- figures ---------------------------------------------------------------------------------------

    def _postgres(self) -> None:
        """The same server on PostgreSQL and on SQLite, rounds alternating: map throughput, sync invoke.

        The database runs with fsync off, as SQLite's WAL at ``synchronous=NORMAL`` does not sync each
        commit either: the figures compare the spearlet's two write paths, not two disks."""
        from .postgres import PostgresServer, bin_dir, unavailable

        why = unavailable()
        if why is not None:
            self.notes["postgres"] = f"postgres: {why}"
            return
        s, loop = self.sizes, self.loop
        found = bin_dir()
        assert found is not None
        cluster = PostgresServer(found, fsync=False)
        servers: list[Server] = []
        spears: list[Spear] = []
        sdks: list[Sdk] = []
        try:
            cluster.start()
            for store in (f"sqlite:///{self.workdir / 'pg-baseline.db'}", cluster.new_database()):
                servers.append(spearlet_server(self.workdir, store))
                spears.append(Spear(servers[-1].address))
                loop.run(spears[-1].setup())
                sdks.append(Sdk(servers[-1].address))
            (sq_spear, pg_spear), (sq_sdk, pg_sdk) = spears, sdks
            alternate(
                s.map_rounds,
                [
                    ("pg.sqlite_map_per_s", lambda: sq_sdk.map_rate(s.map_calls)),
                    ("pg.map_per_s", lambda: pg_sdk.map_rate(s.map_calls)),
                    (
                        "pg.sqlite_invoke_latency_ms",
                        loop.step(lambda: sq_spear.invoke_samples(s.latency_calls)),
                    ),
                    ("pg.invoke_latency_ms", loop.step(lambda: pg_spear.invoke_samples(s.latency_calls))),
                ],
                self.samples,
            )
        finally:
            for sdk in sdks:
                sdk.close()
            for spear in spears:
                loop.run(spear.close())
            for server in servers:
                server.stop()
            cluster.destroy()

    def _summarize(self) -> None:
        """Latencies: p50 (and p99) of every sample of every round; rates and times: the median round."""
        for name, values in self.samples.by_name.items():
            if name.endswith("latency_ms") or name.endswith("rtt_ms"):
                stem = name.removesuffix("_latency_ms").removesuffix("_ms")
                self.figures[f"{stem}_p50_ms"] = median(values)
                self.figures[f"{stem}_p99_ms"] = quantile(values, 0.99)
            else:
                self.figures[name] = median(values)
        # "ours.invoke_latency_ms" -> "ours.invoke_p50_ms"; "echo.latency_ms" -> "echo.p50_ms".
        renames = {
            "echo.latency_p50_ms": "echo.p50_ms",
            "echo.latency_p99_ms": "echo.p99_ms",
            "relay.latency_p50_ms": "relay.p50_ms",
            "relay.latency_p99_ms": "relay.p99_ms",
            "durable_relay.latency_p50_ms": "durable_relay.p50_ms",
            "durable_relay.latency_p99_ms": "durable_relay.p99_ms",
        }
        for old, new in renames.items():
            if old in self.figures:
                self.figures[new] = self.figures.pop(old)


def _calls(sdk: SdkCalls, count: int) -> Callable[[], list[float]]:
    return lambda: sdk.call_samples(count)


def _pushes(sdk: SdkCalls, count: int) -> Callable[[], list[float]]:
    return lambda: sdk.push_samples(count)


def _submit_results(sdk: SdkCalls, count: int) -> Callable[[], float]:
    return lambda: sdk.submit_result_rate(count)


def _as_completed(sdk: SdkCalls, count: int) -> Callable[[], float]:
    return lambda: sdk.as_completed_rate(count)


def _submits(sdk: SdkCalls, count: int) -> Callable[[], float]:
    return lambda: sdk.submit_us(count)


def machine() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in ("spear-lab", "grpcio", "protobuf", "pandas", "ray", "dask", "distributed", "ipywidgets"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "versions": versions,
    }
