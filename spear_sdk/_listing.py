"""The newest executions: ``executions(last=N)`` and ``executions(since=...)`` read the listing newest
first (``ListExecutionsRequest.newest_first``) and stop at the N-th row or the first older row, so a
server with a long history answers them in one or a few pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ._connection import Connection
from .wire import function_pb2
from .wire.errors import Unimplemented

#: The most rows one ListExecutions page holds (the server caps larger limits to this).
PAGE_LIMIT = 1000

Since = dt.datetime | dt.timedelta | None


def cutoff(since: Since) -> dt.datetime | None:
    """``since`` as an aware UTC time: a timedelta counts back from now, a naive datetime is local time."""
    if since is None:
        return None
    if isinstance(since, dt.timedelta):
        return dt.datetime.now(dt.timezone.utc) - since
    if isinstance(since, dt.datetime):
        return since.astimezone(dt.timezone.utc)
    raise TypeError(f"since is a datetime or a timedelta, not {type(since).__name__}")


def _created(info: function_pb2.ExecutionInfo) -> dt.datetime:
    ts = info.created_at
    return dt.datetime.fromtimestamp(ts.seconds, dt.timezone.utc) + dt.timedelta(
        microseconds=ts.nanos // 1000
    )


async def newest(
    connection: Connection, request: function_pb2.ListExecutionsRequest, last: int | None, since: Since
) -> list[Any]:
    """Up to ``last`` rows created at or after ``since``, newest first."""
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 0):
        raise ValueError(f"last is a whole number of rows, at least 0, not {last!r}")
    after = cutoff(since)
    rows: list[Any] = []
    request.newest_first = True
    while last is None or len(rows) < last:
        request.limit = PAGE_LIMIT if last is None else min(PAGE_LIMIT, last - len(rows))
        if request.limit == 0:
            break
        page = await connection.call(connection.functions.ListExecutions, request)
        ids = [info.execution_id for info in page.executions]
        if len(ids) > 1 and ids != sorted(ids, reverse=True):
            raise Unimplemented(
                f"the server at {connection.address} cannot list newest first (last=, since=)"
            )
        for info in page.executions:
            if after is not None and _created(info) < after:
                return rows
            rows.append(info)
        if not page.has_more:
            break
        request.start_after = page.next_start_after
    return rows
