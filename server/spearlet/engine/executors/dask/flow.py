"""Flow control of a stream's chunks between a Dask worker and the spearlet.

Chunks leave the worker as events (worker → scheduler → spearlet) and nothing on that way says when the
reader falls behind, so the spearlet says it: it acknowledges the chunks its reader took, by running
:func:`.runner.grant` on the worker (``Client.run``), and the worker's task sends at most
:data:`WINDOW_CHUNKS` chunks, or :data:`WINDOW_BYTES`, beyond the last acknowledgement. At the limit the
task stops reading from the call's process, whose next ``yield`` then blocks on its pipe: a slow reader
holds the function back instead of filling the worker's, the scheduler's or the spearlet's memory.

The spearlet acknowledges every :data:`ACK_EVERY` chunks while its reader keeps up; once the reader says
it is behind (``Sink.chunk`` returns False), only after ``Sink.writable``.
"""

from __future__ import annotations

import threading
import time
from collections import deque

#: Chunks a worker sends beyond the last acknowledgement.
WINDOW_CHUNKS = 64
#: Bytes of chunks a worker sends beyond the last acknowledgement (one chunk larger than this still goes).
WINDOW_BYTES = 16 << 20
#: The spearlet acknowledges after this many chunks taken (half the window: the worker need not stop
#: while a reader keeps up).
ACK_EVERY = WINDOW_CHUNKS // 2


class Window:
    """The chunks one task sent and those acknowledged; thread-safe (acknowledgements come on the worker's
    event loop, the task waits in its own thread)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sent = 0
        self._acked = 0
        #: The sizes of the chunks sent and not yet acknowledged, oldest first, and their sum.
        self._unacked: deque[int] = deque()
        self._unacked_bytes = 0
        self._woken = False

    def sent(self, size: int) -> None:
        with self._cond:
            self._sent += 1
            self._unacked.append(size)
            self._unacked_bytes += size

    def grant(self, taken: int) -> None:
        """The spearlet's reader took the first ``taken`` chunks (acknowledgements may come out of order)."""
        with self._cond:
            taken = min(taken, self._sent)
            if taken <= self._acked:
                return
            for _ in range(taken - self._acked):
                self._unacked_bytes -= self._unacked.popleft()
            self._acked = taken
            self._cond.notify_all()

    def wake(self) -> None:
        """Stop waiting (the task is being stopped)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def full(self) -> bool:
        with self._cond:
            return self._full()

    def wait(self, deadline: float | None) -> bool:
        """Until there is room, or :meth:`wake`; False if ``deadline`` (``time.monotonic``) passes first."""
        with self._cond:
            while self._full() and not self._woken:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def _full(self) -> bool:
        return len(self._unacked) >= WINDOW_CHUNKS or self._unacked_bytes >= WINDOW_BYTES
