"""The Ledger's four steps (admit, start, end, settle) on a real in-memory store, without an executor."""

from __future__ import annotations

import asyncio
import time

import pytest
from spearlet.engine import lifecycle as lc
from spearlet.engine.executions import ExecutionStore
from spearlet.engine.executors.base import COMPLETED, EXCEPTION, FAILED, WORKER_CRASHED, Outcome
from spearlet.engine.ledger import Ledger
from spearlet.stats import StatsTracker
from spearlet.store import group_commit, open_store
from spearlet.store.base import KvStore
from spearlet.store.records import StoredExecution, task_execution_key

DEADLINE_S = 10.0


def _ledger(store: KvStore | None = None) -> tuple[Ledger, ExecutionStore]:
    executions = ExecutionStore(store if store is not None else open_store("memory://"))
    return Ledger(executions, StatsTracker(), log_limit_bytes=1 << 20), executions


def _record(execution_id: str) -> StoredExecution:
    return StoredExecution(
        execution_id=execution_id,
        task_id="t1",
        task_name="task",
        function_name="",
        mode=1,
        status=lc.PENDING,
        created_at=time.time(),
    )


async def test_an_execution_goes_through_the_four_steps_and_is_stored_at_each() -> None:
    ledger, executions = _ledger()
    live = ledger.admit(_record("e1"), stream=False, stops_work=True, waited=False)
    assert ledger.live == {"e1": live}
    await executions.flush()
    stored = await executions.get("e1")
    assert stored is not None and stored.status == lc.PENDING

    ledger.start(live, "worker-1")
    assert (live.record.status, live.record.attempt, live.record.instance_id) == (lc.RUNNING, 1, "worker-1")
    live.log("hello\n")
    ledger.end(live, 0, outcome=Outcome(COMPLETED, result=b"value", cpu_time_ms=1.5))
    assert not live.done.is_set()  # ended, but not settled before it is stored
    await ledger.settle(live)

    assert live.done.is_set() and live.store_error is None and not ledger.live
    stored = await executions.get("e1")
    assert stored is not None
    assert (stored.status, stored.result, stored.attempt) == (lc.COMPLETED, b"value", 1)
    assert await executions.logs("e1") == "hello\n"
    assert ledger.stats.figures.by_status[lc.COMPLETED] == 1


async def test_a_retry_counts_the_next_attempt_and_keeps_the_first_start() -> None:
    ledger, _ = _ledger()
    live = ledger.admit(_record("e2"), stream=False, stops_work=True, waited=True)
    ledger.start(live)
    first_start = live.record.started_at
    lost = Outcome(FAILED, error_code=WORKER_CRASHED, error_message="worker died")
    assert ledger.retries(live, lost, max_retries=1)
    ledger.start(live)
    assert live.record.attempt == 2 and live.record.started_at == first_start
    assert not ledger.retries(live, lost, max_retries=1)  # retries used up
    raised = Outcome(FAILED, error_code=EXCEPTION, error_message="ValueError: x", remote_type="ValueError")
    assert not ledger.retries(live, raised, max_retries=5)  # an exception is never retried
    ledger.end(live, 0, outcome=raised)
    await ledger.settle(live)
    assert live.record.status == lc.FAILED and live.record.remote_type == "ValueError"
    assert "[attempt 1 lost: worker died; retrying]" in live.logs.text()


async def test_a_pending_execution_may_end_cancelled_but_not_completed() -> None:
    ledger, _ = _ledger()
    live = ledger.admit(_record("e3"), stream=False, stops_work=True, waited=True)
    with pytest.raises(lc.IllegalTransition):
        ledger.end(live, lc.COMPLETED)
    ledger.end(live, lc.CANCELLED, lc.CANCELLED_CODE, "changed my mind")
    await ledger.settle(live)
    assert live.record.status == lc.CANCELLED and live.record.error_message == "changed my mind"


async def test_settle_later_reports_once_stored_and_wakes_the_waiters_first() -> None:
    ledger, executions = _ledger()
    live = ledger.admit(_record("e4"), stream=False, stops_work=True, waited=True)
    ledger.start(live)
    ledger.end(live, lc.TIMEOUT, lc.TIMEOUT_CODE, lc.timeout_message(50))
    seen: list[tuple[BaseException | None, bool]] = []
    ledger.settle_later(live, lambda error: seen.append((error, live.done.is_set())))
    await executions.flush()
    assert seen == [(None, True)]
    stored = await executions.get("e4")
    assert stored is not None and stored.error_message == "timed out after 50 ms"


async def test_a_waited_end_settles_without_waiting_for_the_writes_held_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SYNC call's end is stored at once, with its new record and index entry (held until then): its
    waiters wake then, not when the held writes' time comes (an hour here, instead of 10 ms)."""
    monkeypatch.setattr(group_commit, "LAZY_S", 3600.0)
    store = open_store("memory://")
    ledger, executions = _ledger(store)
    live = ledger.admit(_record("e5"), stream=False, stops_work=True, waited=True)
    ledger.start(live, "worker-1")
    ledger.end(live, 0, outcome=Outcome(COMPLETED, result=b"value"))
    await asyncio.wait_for(ledger.settle(live), DEADLINE_S)
    assert live.done.is_set() and live.store_error is None
    stored = await executions.get("e5")
    assert stored is not None and stored.status == lc.COMPLETED
    # Read from the store itself: a listing would have the held writes written first.
    index_entry = await store.get(task_execution_key("t1", "e5"))
    assert index_entry == b"", "the record went without its task index entry"
    await asyncio.wait_for(executions.flush(), DEADLINE_S)  # (no timer of an hour left behind)
