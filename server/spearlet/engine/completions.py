"""Who waits for which execution's end: the hub the Ledger's ``settle`` step publishes to.

A subscriber (a ``WatchExecutions`` stream, see :mod:`..watching`) subscribes to ids first and reads their
records after, so an end is never missed between the two: an execution still in the live map will be
published here once its terminal record is stored; one no longer there is already stored as ended.
Publishing costs one dict lookup per settled execution when nobody watches it.
"""

from __future__ import annotations

from typing import Protocol

from ..store.records import StoredExecution


class Subscriber(Protocol):
    def ended(self, record: StoredExecution, store_error: BaseException | None) -> None:
        """``record`` ended and is stored (or, with ``store_error``, could not be); called on the loop."""


class CompletionHub:
    """Subscribers by execution id. One loop, no locks; every call is synchronous."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Subscriber]] = {}

    def subscribe(self, execution_id: str, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(execution_id, []).append(subscriber)

    def unsubscribe(self, execution_id: str, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(execution_id)
        if subscribers is None:
            return
        if subscriber in subscribers:
            subscribers.remove(subscriber)
        if not subscribers:
            del self._subscribers[execution_id]

    def publish(self, record: StoredExecution, store_error: BaseException | None) -> None:
        """An execution settled: tell (and forget) whoever subscribed to it."""
        subscribers = self._subscribers.pop(record.execution_id, None)
        if subscribers is not None:
            for subscriber in subscribers:
                subscriber.ended(record, store_error)

    def __len__(self) -> int:
        return len(self._subscribers)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._subscribers

    def watched(self) -> list[str]:
        """The ids someone waits for."""
        return list(self._subscribers)
