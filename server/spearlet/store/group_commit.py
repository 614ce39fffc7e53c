"""Group commit: writes made in one turn of the event loop reach the store in one atomic batch.

Under load many executions change state in the same turn; one commit for all of them costs little more
than one commit for one (P8, docs/performance.md). Each write returns a future that resolves once its
batch is stored: the engine awaits it before anything reports the change, so nothing unstored is ever
reported. A later write to a key replaces an earlier one still waiting, so a state nobody could observe
costs no row of its own. Records encode themselves when their batch is written, so one changed several
times meanwhile is encoded once. Batches are applied in order.

Writes come in two tiers. An urgent write (someone waits for it) is *due*: it goes in this turn's batch.
A write nobody waits for (a new record, a record turning RUNNING) is *held* up to :data:`LAZY_S` for
company: a quick call's states then cost one commit, not three. Held writes stay held when other writes
fall due: under a stream of urgent ends (a batch reporting its calls as they end) they would otherwise go
out with each of them, and a record would be encoded and written once for each state it passed through.

A held write is kept as a unit with the writes of the same ``put`` (a record and its task index entry):
when any of its keys falls due, the whole unit goes with it, so that a record is never stored without
its index entry. Units held within :data:`JOIN_S` of each other form a generation, which falls due
:data:`LAZY_S` after its first: each unit is held nearly the whole time, not only until a timer that
another unit started runs out. ``hurry`` and ``flush`` (someone is about to read, or to wait) send
everything at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from .base import KvStore


class Encodable(Protocol):
    def encode(self) -> bytes: ...


log = logging.getLogger(__name__)

#: How long a write nobody waits for may be held back.
LAZY_S = 0.01
#: Held writes made within this long of each other fall due together (so a write is held between
#: ``LAZY_S - JOIN_S`` and ``LAZY_S``: long enough for a quick call's next states to join it).
JOIN_S = 0.001
#: A timer may run this much before its time (the loop's clock resolution): its generation is due then.
_EARLY_S = 1e-4

Value = bytes | Encodable


class _Unit:
    """Held writes that go together: the keys of one put, and the writes to them since."""

    __slots__ = ("generation", "writes")

    def __init__(self, generation: _Generation) -> None:
        self.generation = generation
        self.writes: dict[str, Value] = {}


class _Generation:
    """The units held in one stretch of :data:`JOIN_S`: they fall due together, :data:`LAZY_S` after
    the first of them, and share the future of that write."""

    __slots__ = ("due_at", "stored", "units")

    def __init__(self, due_at: float, stored: asyncio.Future[None]) -> None:
        self.due_at = due_at
        self.stored = stored
        self.units: list[_Unit] = []


class GroupCommit:
    def __init__(self, store: KvStore) -> None:
        self._store = store
        #: Due writes: the next batch.
        self._puts: dict[str, Value] = {}
        #: Resolve once the next batch is stored: its own future, and those of held writes sent with it.
        self._waiting: list[asyncio.Future[None]] = []
        #: Held writes: each key's unit.
        self._held: dict[str, _Unit] = {}
        #: The generations of held units, oldest first.
        self._generations: deque[_Generation] = deque()
        #: Lets the oldest generation fall due.
        self._release: asyncio.TimerHandle | None = None
        #: The batch being written by a store whose batch awaits (none for SQLite and memory).
        self._writing: asyncio.Task[None] | None = None
        #: The next write, once scheduled.
        self._due: asyncio.Handle | None = None

    def put(self, items: Mapping[str, Value], *, urgent: bool = True) -> asyncio.Future[None]:
        """Queue ``items`` to be stored together; the future resolves (or fails) once they are.

        ``urgent``: someone will wait for it, so write it this turn (else within :data:`LAZY_S`). A record
        given as an :class:`Encodable` is encoded when its batch is written: it must not change in
        between except through another ``put``."""
        held = self._held
        if urgent or any(key in self._puts for key in items):  # (a due key's unit goes now anyway)
            for key in items:
                if key in held:
                    self._fall_due(held[key])
            return self._due_now(items)
        unit: _Unit | None = None
        for key in items:
            joined = held.get(key)
            if joined is not None and joined is not unit:
                unit = joined if unit is None else self._merge(unit, joined)
        if unit is None:
            unit = _Unit(self._newest_generation())
            unit.generation.units.append(unit)
        unit.writes.update(items)
        for key in items:
            held[key] = unit
        return unit.generation.stored

    def hurry(self) -> None:
        """Write what is queued now, held back or not (someone is about to wait for it)."""
        if self._release is not None:
            self._release.cancel()
            self._release = None
        while self._generations:
            self._fall_due_all(self._generations.popleft())

    async def flush(self) -> None:
        """Return once every write queued so far is stored."""
        while self._waiting or self._writing is not None or self._generations:
            self.hurry()
            if self._waiting:
                self._schedule()
                await asyncio.wait((self._waiting[0],))
            if (writing := self._writing) is not None:
                await asyncio.wait((writing,))

    # -- the two tiers ------------------------------------------------------------------------------------

    def _due_now(self, items: Mapping[str, Value]) -> asyncio.Future[None]:
        self._puts.update(items)
        return self._next_batch()

    def _next_batch(self) -> asyncio.Future[None]:
        """The future of the next batch (made if there is none yet), whose write is now scheduled."""
        if not self._waiting:
            self._waiting.append(asyncio.get_running_loop().create_future())
        self._schedule()
        return self._waiting[0]

    def _newest_generation(self) -> _Generation:
        """The generation a new unit joins: the newest, unless it began more than :data:`JOIN_S` ago."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        generations = self._generations
        if generations and now + LAZY_S - generations[-1].due_at <= JOIN_S:
            return generations[-1]
        generation = _Generation(now + LAZY_S, loop.create_future())
        generations.append(generation)
        if self._release is None:
            self._release = loop.call_at(generation.due_at, self._release_due)
        return generation

    def _release_due(self) -> None:
        """The oldest generations' time has come: they fall due."""
        self._release = None
        generations = self._generations
        loop = asyncio.get_running_loop()
        now = loop.time() + _EARLY_S
        while generations and generations[0].due_at <= now:
            self._fall_due_all(generations.popleft())
        if generations:
            self._release = loop.call_at(generations[0].due_at, self._release_due)

    def _fall_due_all(self, generation: _Generation) -> None:
        moved = False
        for unit in generation.units:
            moved |= self._fall_due(unit)
        generation.units.clear()  # each unit points back at its generation: no cycle is left behind
        if moved or self._waiting or self._writing is not None:
            self._next_batch()
            self._waiting.append(generation.stored)
        else:
            # Every write it held went ahead with a later write to the same key (a SYNC call's end takes
            # its PENDING record along), and no batch is left unwritten: an empty batch would cost a turn.
            _done([generation.stored])

    def _fall_due(self, unit: _Unit) -> bool:
        """A held unit goes in the next batch (its generation's future still resolves with the rest of the
        generation). Keys a later unit took over stay with that one. Whether any write went."""
        held = self._held
        moved = False
        for key, value in unit.writes.items():
            if held.get(key) is unit:
                del held[key]
                self._puts[key] = value
                moved = True
        return moved

    def _merge(self, unit: _Unit, other: _Unit) -> _Unit:
        """One unit of two (a put that spans both), in the older one's generation."""
        if other.generation.due_at < unit.generation.due_at:
            unit, other = other, unit
        held = self._held
        for key, value in other.writes.items():
            if held.get(key) is other:  # (not a key that fell due meanwhile: a later unit may hold it)
                held[key] = unit
                unit.writes[key] = value
        return unit

    # -- writing ------------------------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._writing is not None or self._due is not None:  # (a write in progress schedules the next)
            return
        loop = asyncio.get_running_loop()
        if self._store.synchronous_batch:
            # call_soon runs after the callbacks already due this turn, so that their writes join the batch.
            self._due = loop.call_soon(self._write)
        else:
            # A task's first step is scheduled the same way, so the batch it takes then is the same;
            # starting it here saves the turn a callback that started it would cost.
            self._writing = loop.create_task(self._write_async())

    def _take(self) -> tuple[dict[str, bytes], list[asyncio.Future[None]]] | None:
        """The due writes, encoded, and the futures of their batch; None when there are none (or they
        failed to encode: the futures have the error)."""
        pending, waiting = self._puts, self._waiting
        self._puts, self._waiting = {}, []
        if not waiting:
            return None
        try:
            puts = {key: v if isinstance(v, bytes) else v.encode() for key, v in pending.items()}
        except Exception as exc:
            _fail(waiting, pending, exc)
            return None
        return puts, waiting

    def _write(self) -> None:
        self._due = None
        taken = self._take()
        if taken is None:
            return
        puts, waiting = taken
        try:
            if puts:
                self._store.batch_now(puts)
        except Exception as exc:
            _fail(waiting, puts, exc)
        else:
            _done(waiting)

    async def _write_async(self) -> None:
        taken = self._take()
        try:
            if taken is None:
                return
            puts, waiting = taken
            try:
                if puts:
                    await self._store.batch(puts)
            except Exception as exc:
                _fail(waiting, puts, exc)
            else:
                _done(waiting)
        finally:
            self._writing = None
            if self._waiting:  # written meanwhile
                self._schedule()


def _done(waiting: list[asyncio.Future[None]]) -> None:
    for stored in waiting:
        if not stored.done():
            stored.set_result(None)


def _fail(waiting: list[asyncio.Future[None]], puts: Mapping[str, object], exc: Exception) -> None:
    log.error("a batch of %d execution writes failed: %s", len(puts), exc)
    for stored in waiting:
        if not stored.done():
            stored.set_exception(exc)
            # Logged once, above: a caller that never awaits it must not have it logged again (marked
            # retrieved now rather than by a done callback, which would cost every batch a turn of the loop).
            stored.exception()
