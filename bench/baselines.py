"""Baselines the suite measures itself: bare grpc.aio (unary echo, server stream) and the DataFrame floor.

The other baselines live elsewhere: Ray, Dask and ``ProcessPoolExecutor`` in :mod:`bench.peer`, raw
``sqlite3`` in :mod:`bench.storage`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import pandas as pd

from spear_sdk.frames import CELL_KEY, EXECUTION_SCHEMA
from spear_sdk.wire import function_pb2 as fpb

from . import echo_server
from .measure import inflight_rate, latencies_ms


class Echo:
    """A client of :mod:`bench.echo_server`, echoing ``payload`` (the bytes of a typical invoke request)."""

    def __init__(self, address: str, payload: bytes, chunk: bytes) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._echo = self._channel.unary_unary(echo_server.ECHO_METHOD)
        self._relay = self._channel.unary_unary(echo_server.RELAY_METHOD)
        self._durable_relay = self._channel.unary_unary(echo_server.DURABLE_RELAY_METHOD)
        # The stream's messages are parsed as StreamExecutionResult, as a spearlet client parses chunks.
        self._stream = self._channel.unary_stream(
            echo_server.STREAM_METHOD, response_deserializer=fpb.StreamExecutionResult.FromString
        )
        self._payload = payload
        self._chunk = chunk

    async def _call(self) -> None:
        await self._echo(self._payload)

    async def p50_samples(self, count: int) -> list[float]:
        return await latencies_ms(self._call, count)

    async def relay_samples(self, count: int) -> list[float]:
        """The echo through a worker process (see :mod:`bench.echo_server`)."""

        async def relay() -> None:
            await self._relay(self._payload)

        return await latencies_ms(relay, count)

    async def durable_relay_samples(self, count: int) -> list[float]:
        """The echo through a worker process and one SQLite commit per call (see :mod:`bench.echo_server`)."""

        async def durable_relay() -> None:
            await self._durable_relay(self._payload)

        return await latencies_ms(durable_relay, count)

    async def inflight_rate(self, count: int, inflight: int) -> float:
        return await inflight_rate(self._call, count, inflight)

    async def stream_rate(self, count: int) -> float:
        """Messages per second of one server stream of ``count`` messages, start of call to last message
        (after a short unrecorded stream)."""
        async for _ in self._stream(echo_server.stream_request(10, self._chunk)):
            pass
        start = time.perf_counter()
        received = 0
        async for _ in self._stream(echo_server.stream_request(count, self._chunk)):
            received += 1
        elapsed = time.perf_counter() - start
        assert received == count, (received, count)
        return count / elapsed

    async def close(self) -> None:
        await self._channel.close(None)


def frame_floor(infos: Sequence[fpb.ExecutionInfo]) -> pd.DataFrame:
    """The no-RPC floor of P6 (docs/performance.md): parsed ``ExecutionInfo`` messages → a DataFrame with
    the columns and dtypes of ``spear_sdk.frames.EXECUTION_SCHEMA``, by one loop of attribute access and
    typed columns."""
    cols: dict[str, list[Any]] = {name: [] for name in EXECUTION_SCHEMA}
    created_s, created_n, started_s, started_n, completed_s, completed_n, time_ms = ([] for _ in range(7))
    # Bound appends: the tightest plain-Python loop over the messages.
    add_id, add_task_name, add_function = (
        cols[n].append for n in ("execution_id", "task_name", "function_name")
    )
    add_status, add_mode, add_attempt = (cols[n].append for n in ("status", "mode", "attempt"))
    add_code, add_message, add_memory = (
        cols[n].append for n in ("error_code", "error_message", "memory_used_bytes")
    )
    add_instance, add_task_id, add_metadata = (cols[n].append for n in ("instance_id", "task_id", "metadata"))
    add_cs, add_cn, add_ss, add_sn = created_s.append, created_n.append, started_s.append, started_n.append
    add_es, add_en, add_ms = completed_s.append, completed_n.append, time_ms.append
    for info in infos:
        add_id(info.execution_id)
        add_task_name(info.task_name)
        add_function(info.function_name)
        add_status(info.status)
        add_mode(info.execution_mode)
        ts = info.created_at
        add_cs(ts.seconds)
        add_cn(ts.nanos)
        ts = info.started_at
        add_ss(ts.seconds)
        add_sn(ts.nanos)
        ts = info.completed_at
        add_es(ts.seconds)
        add_en(ts.nanos)
        add_ms(info.execution_time_ms)
        add_attempt(info.attempt)
        add_code(info.error_code)
        add_message(info.error_message)
        add_memory(info.memory_used_bytes)
        add_instance(info.instance_id)
        add_task_id(info.task_id)
        metadata = info.metadata
        add_metadata({k: metadata[k] for k in metadata})
    created = _ns(created_s, created_n)
    started = _ns(started_s, started_n)
    completed = _ns(completed_s, completed_n)
    nat = np.iinfo(np.int64).min
    columns: dict[str, Any] = {}
    for name, dtype in EXECUTION_SCHEMA.items():
        if name in ("created_at", "started_at", "completed_at"):
            values = {"created_at": created, "started_at": started, "completed_at": completed}[name]
            columns[name] = pd.array(values.view("M8[ns]"), dtype=dtype)
        elif name == "duration":
            columns[name] = np.where(completed != nat, np.asarray(time_ms, np.int64) * 1_000_000, nat).view(
                "m8[ns]"
            )
        elif name == "queue_time":
            columns[name] = np.where((created != nat) & (started != nat), started - created, nat).view(
                "m8[ns]"
            )
        elif name in ("status", "mode"):
            codes = np.asarray(cols[name], np.int64) - 1
            codes[(codes < 0) | (codes >= len(dtype.categories))] = -1
            columns[name] = pd.Categorical.from_codes(codes, dtype=dtype)
        elif name == "cell":
            texts = [m.get(CELL_KEY) for m in cols["metadata"]]
            columns[name] = pd.array([int(t) if t else None for t in texts], dtype=dtype)
        elif name == "metadata":
            array = np.empty(len(cols[name]), dtype=object)
            array[:] = cols[name]
            columns[name] = array
        elif dtype == "Int64":
            values = np.asarray(cols[name], np.int64)
            columns[name] = pd.arrays.IntegerArray(values, np.zeros(len(values), bool))
        else:
            strings = np.asarray(cols[name], dtype=object)
            strings[strings == ""] = None
            columns[name] = pd.array(strings, dtype=dtype)
    return pd.DataFrame(columns, copy=False)


def _ns(seconds: list[int], nanos: list[int]) -> np.ndarray[Any, np.dtype[np.int64]]:
    total = np.asarray(seconds, np.int64) * 1_000_000_000 + np.asarray(nanos, np.int64)
    total[total == 0] = np.iinfo(np.int64).min
    return total
