"""The PostgreSQL store behind ``postgresql://user@host:port/db``: several spearlets on one database.

One table holds every key, as its UTF-8 bytes (``key BYTEA``: byte order is code-point order, so the
primary-key index orders keys as the interface wants and a prefix scan is an index range scan; unlike
``TEXT``, ``BYTEA`` also holds a key with a NUL). An execution record also fills a few columns of its row
(status, task, function, run time, memory, owner) in the same statement, so that figures over every
server's executions (counts, each function's percentiles and recent runs) are SQL aggregates and a dead
server's unfinished work is one indexed query. ``version`` counts the writes of a row, for
compare-and-set; an upsert of an execution record applies only while the row still names this server as
its owner (see :mod:`.shared`). A terminal execution record, and any task change, sends a ``NOTIFY`` in
the transaction that writes it (:mod:`.notices`); one connection LISTENs and reconnects with backoff,
then announces a resync. Leases (:mod:`..engine.leases`) live in a table of their own.

COMMIT returns once the WAL is flushed (``synchronous_commit`` is the server's, on by default), so an
acknowledged write survives a killed database. When the database is unreachable every call raises
:class:`StoreError` (the RPCs answer UNAVAILABLE) and ``ping`` fails (health says ``unhealthy``); the pool
replaces broken connections in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import psycopg
from google.protobuf import timestamp_pb2
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from spear_sdk.wire import function_pb2

from ..engine.lifecycle import ACTIVE, CANCELLED, COMPLETED, FAILED, TERMINAL, TIMEOUT
from ..latency import QUANTILES, FunctionFigures
from ..stats import function_label
from .base import StoreError
from .memory import check_batch, check_bound, check_key, check_value, scan_bounds
from .notices import ENDED, RESYNC, TAKEN_OVER, TASK, Notice, Notices
from .records import EXECUTION, LOG, execution_info_bytes
from .records import TASK as TASK_PREFIX
from .shared import ExecutionCount, FunctionRuns, Orphan, SharedKvStore

log = logging.getLogger(__name__)

#: The schema this code reads and writes; a database at a newer version is refused.
SCHEMA_VERSION = 2
#: The NOTIFY channel every spearlet on the database listens to.
CHANNEL = "spearlet"
#: NOTIFY payloads must stay under 8,000 bytes; ids are packed into payloads up to this size.
_PAYLOAD_LIMIT = 7000
#: How long a call waits for a pooled connection before it fails (the database is down or saturated).
CONNECT_TIMEOUT_S = 3.0
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.05, 2.0

_ACTIVE_SQL = "(" + ", ".join(str(s) for s in sorted(ACTIVE)) + ")"

#: Each version's statements, applied in order under an advisory lock by whichever server starts first.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE kv (
            key BYTEA PRIMARY KEY,
            value BYTEA NOT NULL,
            version BIGINT NOT NULL DEFAULT 1,
            status SMALLINT,
            task_id TEXT COLLATE "C",
            label TEXT COLLATE "C",
            time_ms BIGINT,
            owner TEXT
        )""",
        "CREATE INDEX kv_executions ON kv (task_id, label, status) INCLUDE (time_ms)"
        " WHERE status IS NOT NULL",
        f"CREATE INDEX kv_unfinished ON kv (owner) WHERE status IN {_ACTIVE_SQL}",
        """CREATE TABLE spearlet_leases (
            server_id TEXT PRIMARY KEY,
            expires_at TIMESTAMPTZ NOT NULL
        )""",
    ),
    # Each function's run-time percentiles and recent runs, over every server's executions.
    2: (
        "ALTER TABLE kv ADD COLUMN run_ms DOUBLE PRECISION, ADD COLUMN memory_bytes BIGINT",
        f"CREATE INDEX kv_completed ON kv (label, key) INCLUDE (time_ms) WHERE status = {COMPLETED}",
    ),
}
_MIGRATION_LOCK = 0x5BEA_4CE7  # pg_advisory_xact_lock key: one server migrates at a time

_GET = "SELECT value FROM kv WHERE key = %s"
_UPDATE_IF_VERSION = """UPDATE kv SET value = %s, version = version + 1, status = %s, task_id = %s,
    label = %s, time_ms = %s, run_ms = %s, memory_bytes = %s, owner = %s WHERE key = %s AND version = %s"""
_DELETE = "DELETE FROM kv WHERE key = %s"
_NOTIFY = "SELECT pg_notify(%s, %s)"
_NOTIFY_MANY = "SELECT count(pg_notify(%s, p)) FROM unnest(%s::text[]) AS p"
_ON_CONFLICT = """ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = kv.version + 1,
            status = excluded.status, task_id = excluded.task_id, label = excluded.label,
            time_ms = excluded.time_ms, run_ms = excluded.run_ms, memory_bytes = excluded.memory_bytes,
            owner = excluded.owner
        WHERE kv.owner IS NOT DISTINCT FROM excluded.owner"""
_INSERT = "INSERT INTO kv (key, value, status, task_id, label, time_ms, run_ms, memory_bytes, owner)"
# A whole batch is one statement, so one round trip and its own transaction: the upserts and the
# notices, which NOTIFY sends only once it commits. A large batch sends its rows as arrays, one per
# column, in binary (text arrays would be escaped value by value).
_UPSERTED = f"""written AS (
        {_INSERT}
        SELECT * FROM unnest(%b::bytea[], %b::bytea[], %b::int2[], %b::text[], %b::text[], %b::int8[],
                             %b::float8[], %b::int8[], %b::text[])
        {_ON_CONFLICT}
        RETURNING 1)"""
_NOTIFIED = "notified AS (SELECT pg_notify(%s, p) FROM unnest(%b::text[]) AS p)"
_COUNTED = "SELECT (SELECT count(*) FROM written), (SELECT count(*) FROM notified)"
#: Puts only (group commit's batches). Prepared: planning it would cost more than running it.
_WRITE = f"WITH {_UPSERTED},\n{_NOTIFIED}\n{_COUNTED}"
#: With deletes first. Never prepared: a generic plan of ``key = ANY($1)`` may scan the whole table,
#: where a custom one probes the index.
_WRITE_AND_DELETE = (
    "WITH deleted AS (DELETE FROM kv WHERE key = ANY(%b::bytea[]) RETURNING 1),\n"
    f"{_UPSERTED},\n{_NOTIFIED}\n{_COUNTED}, (SELECT count(*) FROM deleted)"
)
#: Batches of up to this many puts (a call's record, its task index entry, its output) send their rows
#: as the parameters of a multi-row VALUES instead, prepared once per row count: for a few rows,
#: building and unnesting an array per column costs more than the rows themselves.
_FEW_ROWS = 8


@functools.cache
def _write_few(rows: int, notify: bool) -> str:
    """The statement that writes ``rows`` puts (and sends the notices, when ``notify``)."""
    values = ", ".join(["(%b, %b, %b::int2, %b, %b, %b::int8, %b::float8, %b::int8, %b)"] * rows)
    insert = f"{_INSERT} VALUES {values}\n{_ON_CONFLICT}"
    return f"WITH written AS ({insert} RETURNING 1),\n{_NOTIFIED}\n{_COUNTED}" if notify else insert


_TERMINAL_SQL = "(" + ", ".join(str(s) for s in sorted(TERMINAL)) + ")"
#: Each function's figures over the finished executions of a window (keys after a bound), and, in the row
#: of the empty grouping set, every completed execution's percentiles. ``percentile_cont`` interpolates
#: linearly between the closest ranks, as numpy's (and pandas') default quantile does. Rows written by
#: schema version 1 have no ``run_ms`` or ``memory_bytes``: their whole milliseconds count instead.
_FUNCTION_FIGURES = f"""SELECT GROUPING(label), label,
        count(*) FILTER (WHERE status = {COMPLETED}), count(*) FILTER (WHERE status = {FAILED}),
        count(*) FILTER (WHERE status = {CANCELLED}), count(*) FILTER (WHERE status = {TIMEOUT}),
        avg(run) FILTER (WHERE status = {COMPLETED}),
        percentile_cont(%s::float8[]) WITHIN GROUP (ORDER BY run) FILTER (WHERE status = {COMPLETED}),
        max(run) FILTER (WHERE status = {COMPLETED}),
        (avg(memory) FILTER (WHERE status = {COMPLETED}))::float8
    FROM (SELECT label, status, coalesce(run_ms, time_ms) AS run, coalesce(memory_bytes, 0) AS memory
          FROM kv WHERE status IN {_TERMINAL_SQL} AND key > %s) AS finished
    GROUP BY GROUPING SETS ((label), ())"""
#: Each function's mean run time over its newest completed executions: the functions are found by a
#: skip scan of the ``kv_completed`` index (one probe per function), then each one's newest runs.
_RECENT_RUNS = f"""WITH RECURSIVE labels (label) AS (
        (SELECT label FROM kv WHERE status = {COMPLETED} ORDER BY label LIMIT 1)
        UNION ALL
        SELECT (SELECT k.label FROM kv k WHERE k.status = {COMPLETED} AND k.label > l.label
                ORDER BY k.label LIMIT 1)
        FROM labels l WHERE l.label IS NOT NULL)
    SELECT l.label, avg(r.time_ms)::float8 FROM labels l CROSS JOIN LATERAL (
        SELECT time_ms FROM kv WHERE status = {COMPLETED} AND label = l.label ORDER BY key DESC LIMIT %s
    ) AS r WHERE l.label IS NOT NULL GROUP BY l.label"""
#: The notice a server sends when it joins (not relayed to subscribers).
_HELLO = "hello"

#: key, value, status, task_id, label, time_ms, run_ms, memory_bytes, owner
Row = tuple[
    bytes, bytes, int | None, str | None, str | None, int | None, float | None, int | None, str | None
]
_COLUMNS = 9


class PostgresStore(SharedKvStore):
    """A :class:`KvStore` on a PostgreSQL database shared with other spearlets; :meth:`open` before use."""

    synchronous_batch = False
    shared = True

    def __init__(self, url: str, *, pool_size: int = 8) -> None:
        #: Shown in health details, so without the password (which stays in the connection string).
        self.url = _without_password(url)
        self.server_id = uuid.uuid4().hex
        self.notices = Notices()
        self._conninfo = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=2,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True},
            reconnect_timeout=24 * 3600,  # keep trying while the database is away; calls fail meanwhile
        )
        self._closed = False
        #: The connection batches are written on (see _writer_or_pooled), and whether one is in flight.
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._writer_busy = False
        #: No other server holds a live lease: nobody listens, so no notice is sent (see renew_lease).
        self._alone = False
        self._greeted = False
        self._listener: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    # -- life ------------------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the schema, and start listening for notices."""
        try:
            await self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S * 3)
        except PoolTimeout as e:
            await self._pool.close()
            raise StoreError(f"postgres store {self.url}: cannot connect: {e}") from e
        try:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                await _migrate(conn)
        except psycopg.Error as e:
            await self._pool.close()
            raise StoreError(f"postgres store {self.url}: cannot set up the schema: {e}") from e
        except StoreError:
            await self._pool.close()
            raise
        self._listener = asyncio.get_running_loop().create_task(self._listen())
        try:
            await asyncio.wait_for(self._listening.wait(), CONNECT_TIMEOUT_S * 3)
        except asyncio.TimeoutError:
            await self.close()
            raise StoreError(f"postgres store {self.url}: cannot LISTEN for notices") from None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in (self._listener, self._checking):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._writer is not None and not self._writer_busy:
            await self._pool.putconn(self._writer)
            self._writer = None
        await self._pool.close()

    @contextlib.asynccontextmanager
    async def _connection(
        self, op: str, *, writer: bool = False
    ) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; any failure to reach the database becomes a :class:`StoreError`.

        ``writer``: the batches' own connection, when no other batch holds it (:meth:`_writer_or_pooled`)."""
        if self._closed:
            raise StoreError(f"store {self.url} is closed")
        try:
            async with self._writer_or_pooled(writer) as conn:
                yield conn
        except PoolTimeout as e:
            raise StoreError(f"postgres store {self.url}: {op}: the database does not answer") from e
        except psycopg.OperationalError as e:
            # A broken connection (the pool drops it): have the pool check the idle ones too, rather than
            # hand them out to fail one call each.
            if self._checking is None or self._checking.done():
                self._checking = asyncio.get_running_loop().create_task(self._pool.check())
            raise StoreError(f"postgres store {self.url}: {op} failed: {e}") from e
        except psycopg.Error as e:
            raise StoreError(f"postgres store {self.url}: {op} failed: {type(e).__name__}: {e}") from e

    @contextlib.asynccontextmanager
    async def _writer_or_pooled(self, writer: bool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """Group commit writes one batch at a time, each on the critical path of a call: it keeps one
        connection rather than pay for a checkout from the pool per batch. Any failure gives that
        connection back to the pool (which drops a broken one), and the next batch takes another."""
        if not writer or self._writer_busy:
            async with self._pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                yield conn
            return
        self._writer_busy = True
        try:
            if self._writer is None:
                self._writer = await self._pool.getconn(timeout=CONNECT_TIMEOUT_S)
            yield self._writer
        except BaseException:
            given_back, self._writer = self._writer, None
            if given_back is not None:
                await self._pool.putconn(given_back)
            raise
        finally:
            self._writer_busy = False

    # -- the KvStore interface ---------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        async with self._connection(f"get {key!r}") as conn:
            cur = await conn.execute(_GET, (key.encode(),))
            row = await cur.fetchone()
        return None if row is None else bytes(row[0])

    async def put(self, key: str, value: bytes) -> None:
        check_key(key)
        await self.batch({key: check_value(key, value)})

    async def delete(self, key: str) -> bool:
        check_key(key)
        async with self._connection(f"delete {key!r}") as conn, conn.transaction():
            cur = await conn.execute(_DELETE, (key.encode(),))
            deleted = cur.rowcount > 0
            notices = _notices_for_deletes([key])
            await self._notify(conn, notices)
        return deleted

    async def scan(
        self,
        prefix: str,
        *,
        start_after: str = "",
        limit: int | None = None,
        reverse: bool = False,
    ) -> list[tuple[str, bytes]]:
        check_bound(prefix, "prefix")
        check_bound(start_after, "start_after")
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, not {limit}")
        if limit == 0:
            return []
        lower_op, lower, upper = scan_bounds(prefix, start_after, reverse)
        where = f"key {lower_op} %s"
        params: list[Any] = [lower.encode()]
        if upper is not None:
            where += " AND key < %s"
            params.append(upper.encode())
        sql = f"SELECT key, value FROM kv WHERE {where} ORDER BY key {'DESC' if reverse else 'ASC'}"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        async with self._connection(f"scan {prefix!r}") as conn:
            cur = await conn.execute(sql, params)
            rows = await cur.fetchall()
        return [(bytes(key).decode(), bytes(value)) for key, value in rows]

    async def batch(self, puts: Mapping[str, bytes] | None = None, deletes: Iterable[str] = ()) -> None:
        put_items, delete_keys = check_batch(puts, deletes)
        if not put_items and not delete_keys:
            return
        rows = [_row(key, value, self.server_id) for key, value in put_items]
        payloads = self._payloads(_notices_for_puts(rows) + _notices_for_deletes(delete_keys))
        what = f"batch of {len(put_items)} puts and {len(delete_keys)} deletes"
        async with self._connection(what, writer=True) as conn:
            if not delete_keys and len(rows) <= _FEW_ROWS:
                params: list[Any] = [field for row in rows for field in row]
                if payloads:
                    params += [CHANNEL, payloads]
                cur = await conn.execute(_write_few(len(rows), bool(payloads)), params)
                written = cur.rowcount if not payloads else await _first(cur)
            else:
                columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * _COLUMNS
                params = [*columns, CHANNEL, payloads]
                if delete_keys:
                    deleting = [[k.encode() for k in delete_keys], *params]
                    cur = await conn.execute(_WRITE_AND_DELETE, deleting, prepare=False)
                else:
                    cur = await conn.execute(_WRITE, params)
                written = await _first(cur)
            if written < len(rows):
                await self._taken_over(conn, rows)

    async def _taken_over(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        """Some execution records of a batch were not written: another server owns their rows now (it
        ended or retried them after this server's lease lapsed). Its decision stands; say which here."""
        keys = [row[0] for row in rows if row[2] is not None]
        cur = await conn.execute(
            "SELECT key, owner FROM kv WHERE key = ANY(%s) AND owner IS DISTINCT FROM %s",
            (keys, self.server_id),
        )
        for key, owner in await cur.fetchall():
            execution_id = bytes(key).decode()[len(EXECUTION) :]
            log.warning(
                "execution %s: its end here was not stored: server %s took it over when this server's "
                "lease lapsed, and its record stands",
                execution_id,
                owner,
            )
            self.notices.publish(Notice(TAKEN_OVER, execution_id))

    async def ping(self) -> None:
        if not self._listening.is_set() and not self._closed:
            raise StoreError(f"postgres store {self.url}: reconnecting to the database")
        async with self._connection("ping") as conn:
            await conn.execute("SELECT 1")

    # -- the SharedKvStore interface ------------------------------------------------------------------

    async def renew_lease(self, ttl_s: float) -> None:
        """Renew, and count the other servers alive: alone, a server sends no notices (nobody would hear
        them, and a NOTIFY costs every commit a wake-up of each listener). The first renewal announces
        this server, so that the others start sending at once rather than at their next renewal; a waiter
        also reads again now and then (``Engine.until_ended``), for a notice missed in between."""
        async with self._connection("renew the lease") as conn:
            await conn.execute(
                """INSERT INTO spearlet_leases (server_id, expires_at)
                VALUES (%s, now() + make_interval(secs => %s))
                ON CONFLICT (server_id) DO UPDATE SET expires_at = excluded.expires_at""",
                (self.server_id, ttl_s),
            )
            cur = await conn.execute(
                "SELECT count(*) FROM spearlet_leases WHERE server_id <> %s AND expires_at > now()",
                (self.server_id,),
            )
            row = await cur.fetchone()
            self._alone = row is not None and row[0] == 0
            if not self._greeted:
                await conn.execute(_NOTIFY, (CHANNEL, f"{self.server_id} {_HELLO} "))
                self._greeted = True

    async def release_lease(self) -> None:
        async with self._connection("release the lease") as conn:
            await conn.execute("DELETE FROM spearlet_leases WHERE server_id = %s", (self.server_id,))

    async def orphans(self, limit: int) -> list[Orphan]:
        async with self._connection("find unfinished executions of dead servers") as conn:
            cur = await conn.execute(
                f"""SELECT key, value, version FROM kv k WHERE k.status IN {_ACTIVE_SQL}
                AND NOT EXISTS (SELECT 1 FROM spearlet_leases l
                                WHERE l.server_id = k.owner AND l.expires_at > now())
                ORDER BY key LIMIT %s""",
                (limit,),
            )
            rows = await cur.fetchall()
            # Leases long expired have no executions left to find (they were just read): drop them.
            await conn.execute("DELETE FROM spearlet_leases WHERE expires_at < now() - interval '1 hour'")
        return [Orphan(bytes(key).decode(), bytes(value), version) for key, value, version in rows]

    async def unfinished(self, task_id: str) -> list[str]:
        async with self._connection(f"find the unfinished executions of task {task_id!r}") as conn:
            cur = await conn.execute(
                f"SELECT key FROM kv WHERE task_id = %s AND status IN {_ACTIVE_SQL} ORDER BY key", (task_id,)
            )
            rows = await cur.fetchall()
        return [bytes(key).decode()[len(EXECUTION) :] for (key,) in rows]

    async def put_if_version(self, key: str, value: bytes, version: int) -> bool:
        check_key(key)
        row = _row(key, check_value(key, value), self.server_id)
        async with self._connection(f"compare-and-set {key!r}") as conn, conn.transaction():
            cur = await conn.execute(_UPDATE_IF_VERSION, (*row[1:], row[0], version))
            if cur.rowcount != 1:
                return False
            await self._notify(conn, _notices_for_puts([row]))
        return True

    async def send_notice(self, kind: str, key: str) -> None:
        async with self._connection(f"send a {kind} notice") as conn:
            await conn.execute(_NOTIFY_MANY, (CHANNEL, _payloads(self.server_id, [(kind, key)])))

    async def execution_counts(self, since_id: str = "") -> list[ExecutionCount]:
        after = EXECUTION + since_id if since_id else EXECUTION
        async with self._connection("count executions") as conn:
            cur = await conn.execute(
                """SELECT task_id, label, status, count(*), coalesce(sum(time_ms), 0)::bigint FROM kv
                WHERE status IS NOT NULL AND key > %s GROUP BY task_id, label, status""",
                (after.encode(),),
            )
            rows = await cur.fetchall()
        return [ExecutionCount(*row) for row in rows]

    async def function_figures(self, since_id: str = "") -> FunctionRuns:
        after = EXECUTION + since_id if since_id else EXECUTION
        async with self._connection("compute each function's figures") as conn:
            cur = await conn.execute(_FUNCTION_FIGURES, (list(QUANTILES), after.encode()))
            rows = await cur.fetchall()
        functions: list[FunctionFigures] = []
        overall = (0.0, 0.0, 0.0)
        for total, label, completed, failed, cancelled, timeout, mean, quantiles, longest, memory in rows:
            p50, p95, p99 = quantiles if quantiles is not None else (0.0, 0.0, 0.0)
            if total:
                overall = (p50, p95, p99)
                continue
            functions.append(
                FunctionFigures(
                    label,
                    completed=completed,
                    failed=failed,
                    cancelled=cancelled,
                    timeout=timeout,
                    average_ms=mean or 0.0,
                    p50_ms=p50,
                    p95_ms=p95,
                    p99_ms=p99,
                    max_ms=longest or 0.0,
                    average_memory_bytes=memory or 0.0,
                )
            )
        return FunctionRuns(sorted(functions, key=lambda f: f.function), overall)

    async def recent_run_ms(self, runs: int) -> dict[str, float]:
        async with self._connection("read each function's recent run times") as conn:
            cur = await conn.execute(_RECENT_RUNS, (runs,))
            rows = await cur.fetchall()
        return {label: mean for label, mean in rows}

    async def newest_executions(self, task_ids: list[str]) -> dict[str, tuple[str, int]]:
        if not task_ids:
            return {}
        async with self._connection("find each task's newest execution") as conn:
            # One index probe per task: the task-exec index keys are in creation order.
            cur = await conn.execute(
                """SELECT t.id, n.id, k.status FROM unnest(%s::text[]) AS t(id)
                CROSS JOIN LATERAL (
                    SELECT convert_from(
                        substr(key, octet_length(convert_to(t.id, 'UTF8')) + 12), 'UTF8') AS id
                    FROM kv WHERE key > convert_to('task-exec:' || t.id || ':', 'UTF8')
                    AND key < convert_to('task-exec:' || t.id || ';', 'UTF8') ORDER BY key DESC LIMIT 1) n
                JOIN kv k ON k.key = convert_to('execution:' || n.id, 'UTF8')""",
                (task_ids,),
            )
            rows = await cur.fetchall()
        return {task_id: (execution_id, status) for task_id, execution_id, status in rows}

    # -- notices ----------------------------------------------------------------------------------------

    def _payloads(self, notices: list[tuple[str, str]]) -> list[str]:
        return _payloads(self.server_id, notices) if notices and not self._alone else []

    async def _notify(self, conn: psycopg.AsyncConnection[Any], notices: list[tuple[str, str]]) -> None:
        """Send ``notices`` in the caller's transaction: delivered after its COMMIT, never on rollback."""
        payloads = self._payloads(notices)
        if payloads:
            await conn.execute(_NOTIFY_MANY, (CHANNEL, payloads))

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, for as long as the store is open; reconnect with backoff."""
        delay = _BACKOFF_FIRST_S
        connected_before = False
        while not self._closed:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.Error as e:
                log.warning("postgres store %s: listener cannot connect (%s); retrying", self.url, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
                continue
            try:
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = _BACKOFF_FIRST_S
                    self._listening.set()
                    if connected_before:  # notices sent while away are lost: everyone reads again
                        log.warning("postgres store %s: reconnected", self.url)
                        self.notices.publish(Notice(RESYNC))
                    connected_before = True
                    async for notify in conn.notifies():
                        self._deliver(notify.payload)
            except psycopg.Error as e:
                log.warning("postgres store %s: lost the database (%s); reconnecting", self.url, e)
            finally:
                self._listening.clear()
            if not self._closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)

    def _deliver(self, payload: str) -> None:
        origin, _, rest = payload.partition(" ")
        if origin == self.server_id:  # our own: the Ledger reported it already
            return
        self._alone = False  # someone else writes: tell them about ours
        kind, _, keys = rest.partition(" ")
        if kind == _HELLO:
            return
        try:
            ids = json.loads(keys)
        except ValueError:
            log.warning("postgres store %s: ignored a malformed notice %r", self.url, payload[:200])
            return
        for key in ids:
            self.notices.publish(Notice(kind, str(key)))


async def _first(cur: psycopg.AsyncCursor[Any]) -> int:
    """The first column of the one row a write statement answers with (how many rows it wrote)."""
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def _without_password(url: str) -> str:
    scheme, _, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    return f"{scheme}://{auth.split(':')[0]}@{host}" if at else url


def _row(key: str, value: bytes, owner: str) -> Row:
    """The row of ``key``: an execution record also fills its status, task, function and run time (once
    ended: to the clock's resolution, and its memory). An execution's record and its output name their
    owner: a server whose execution another took over writes neither again."""
    if key.startswith(LOG):
        return (key.encode(), value, None, None, None, None, None, None, owner)
    if not key.startswith(EXECUTION):
        return (key.encode(), value, None, None, None, None, None, None, None)
    info = function_pb2.ExecutionInfo.FromString(execution_info_bytes(value))
    label = function_label(info.task_name, info.function_name)
    run_ms: float | None = None
    memory: int | None = None
    if info.status in TERMINAL:
        run_ms, memory = float(info.execution_time_ms), info.memory_used_bytes
        if info.HasField("started_at") and info.HasField("completed_at"):
            run_ms = max(0.0, (_seconds(info.completed_at) - _seconds(info.started_at)) * 1000)
    status, time_ms = info.status, info.execution_time_ms
    return (key.encode(), value, status, info.task_id, label, time_ms, run_ms, memory, owner)


def _seconds(ts: timestamp_pb2.Timestamp) -> float:
    return ts.seconds + ts.nanos / 1e9


def _notices_for_puts(rows: Iterable[Row]) -> list[tuple[str, str]]:
    notices = []
    for raw_key, _, status, *_ in rows:
        key = raw_key.decode()
        if status is not None and status in TERMINAL:
            notices.append((ENDED, key[len(EXECUTION) :]))
        elif key.startswith(TASK_PREFIX):
            notices.append((TASK, key[len(TASK_PREFIX) :]))
    return notices


def _notices_for_deletes(keys: Iterable[str]) -> list[tuple[str, str]]:
    return [(TASK, key[len(TASK_PREFIX) :]) for key in keys if key.startswith(TASK_PREFIX)]


def _payloads(origin: str, notices: list[tuple[str, str]]) -> list[str]:
    """NOTIFY payloads for ``notices``: ids of one kind share one (``origin kind ["id", ...]``, JSON since
    an execution id may hold any character) up to the size NOTIFY allows."""
    by_kind: dict[str, list[str]] = {}
    for kind, key in notices:
        by_kind.setdefault(kind, []).append(key)
    payloads = []
    for kind, keys in by_kind.items():
        head = f"{origin} {kind} "
        part: list[str] = []
        size = len(head) + 2
        for key in keys:
            encoded = len(json.dumps(key)) + 1
            if part and size + encoded > _PAYLOAD_LIMIT:
                payloads.append(head + json.dumps(part))
                part, size = [], len(head) + 2
            part.append(key)
            size += encoded
        if part:
            payloads.append(head + json.dumps(part))
    return payloads


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the schema to :data:`SCHEMA_VERSION`; one server at a time (an advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        await conn.execute("CREATE TABLE IF NOT EXISTS spearlet_schema (version INTEGER NOT NULL)")
        cur = await conn.execute("SELECT version FROM spearlet_schema")
        row = await cur.fetchone()
        current = row[0] if row is not None else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"the database's spearlet schema is version {current}, newer than this spearlet's "
                f"{SCHEMA_VERSION}: upgrade spear-lab on this machine"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[version]:
                await conn.execute(statement)
        if row is None:
            await conn.execute("INSERT INTO spearlet_schema (version) VALUES (%s)", (SCHEMA_VERSION,))
        elif current != SCHEMA_VERSION:
            await conn.execute("UPDATE spearlet_schema SET version = %s", (SCHEMA_VERSION,))
