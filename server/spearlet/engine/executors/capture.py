"""Output capture for a running job: bounded, coalesced, and routed to the job that wrote it.

``sys.stdout``/``sys.stderr`` are replaced once by proxies that send a write to the capture of the job
running in the writing thread (thread host), or of the process's current job (worker host), and everything
else to the original stream. A capture keeps at most ``log_limit_bytes`` and forwards text in coalesced
pieces: a line at once if nothing went out in the last :data:`FLUSH_INTERVAL`, otherwise (and partial
lines) from one background flusher thread at the end of the interval. A function printing in a tight loop
therefore costs at most ~1/FLUSH_INTERVAL messages a second.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from spearlet.engine.logs import LogLimiter

#: Longest a captured line waits before it is forwarded, when lines come faster than this.
FLUSH_INTERVAL = 0.05


class OutputCapture:
    """One job's stdout and stderr, bounded and forwarded through ``emit`` in coalesced pieces."""

    def __init__(self, emit: Callable[[str], None], limit: int) -> None:
        self._emit = emit
        self._limiter = LogLimiter(limit)
        self._pending: list[str] = []
        # Reentrant: a failing emit may print, and that print comes back here.
        self._lock = threading.RLock()
        self._last_emit = 0.0
        self._scheduled = False
        self._closed = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            if self._closed:
                return len(text)
            kept = self._limiter.clip(text)
            if kept:
                self._pending.append(kept)
                now = time.monotonic()
                if "\n" in kept and now - self._last_emit >= FLUSH_INTERVAL:
                    self._flush_locked(now)
                elif not self._scheduled:
                    self._scheduled = True
                    _flusher.schedule(self, max(now, self._last_emit + FLUSH_INTERVAL))
        return len(text)

    def write_unbounded(self, text: str) -> None:
        """Add text that must survive truncation (the traceback of a failure)."""
        with self._lock:
            if not self._closed:
                self._pending.append(text)

    def flush(self) -> None:
        with self._lock:
            self._scheduled = False
            if not self._closed:
                self._flush_locked(time.monotonic())

    def close(self) -> None:
        """Forward what is left; later writes (from threads the function left behind) are dropped."""
        with self._lock:
            self._flush_locked(time.monotonic())
            self._closed = True

    def _flush_locked(self, now: float) -> None:
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last_emit = now
        # Emitting under the lock keeps pieces in order. Logs are best effort: a broken channel shows up
        # again, and is handled, when the host sends the result.
        with contextlib.suppress(Exception):
            self._emit(text)


class _Flusher:
    """One daemon thread per process that forwards captured text whose interval has passed."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._due: dict[OutputCapture, float] = {}
        self._wake_at = math.inf  # when the thread will look next; 0 while it is busy
        self._thread: threading.Thread | None = None

    def schedule(self, capture: OutputCapture, due: float) -> None:
        with self._cond:
            self._due.setdefault(capture, due)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="spearlet-log-flusher", daemon=True)
                self._thread.start()
            if due < self._wake_at:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready = [capture for capture, due in self._due.items() if due <= now]
                for capture in ready:
                    del self._due[capture]
                if not ready:
                    self._wake_at = min(self._due.values(), default=math.inf)
                    self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)
                    self._wake_at = 0.0
                    continue
            for capture in ready:
                capture.flush()


_flusher = _Flusher()
# Routing for the stream proxies: the capture of each thread running a job (thread host), and the one
# for every thread of the process (worker host, which runs one job at a time, its queued jobs after it).
_thread_captures: dict[int, OutputCapture] = {}
_process_capture: OutputCapture | None = None
_install_lock = threading.Lock()


class _StreamProxy:
    """Stands in for ``sys.stdout``/``sys.stderr`` and routes each write to the capture it belongs to."""

    def __init__(self, original: Any) -> None:
        self._original = original

    def write(self, text: str) -> int:
        capture = _thread_captures.get(threading.get_ident(), _process_capture)
        if capture is not None:
            return capture.write(text)
        if self._original is None:
            return len(text)
        return int(self._original.write(text))

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        routed = _thread_captures.get(threading.get_ident(), _process_capture)
        if routed is None and self._original is not None:
            self._original.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def install_stream_proxies() -> None:
    """Put the proxies in place (again, if someone replaced ``sys.stdout``/``sys.stderr`` since)."""
    if isinstance(sys.stdout, _StreamProxy) and isinstance(sys.stderr, _StreamProxy):
        return
    with _install_lock:
        if not isinstance(sys.stdout, _StreamProxy):
            sys.stdout = _StreamProxy(sys.stdout)
        if not isinstance(sys.stderr, _StreamProxy):
            sys.stderr = _StreamProxy(sys.stderr)


def attach(capture: OutputCapture, *, process_wide: bool) -> None:
    """Route output to ``capture``: of every thread (``process_wide``), else of the calling thread."""
    global _process_capture
    if process_wide:
        _process_capture = capture
    else:
        _thread_captures[threading.get_ident()] = capture


def detach(*, process_wide: bool) -> None:
    """Undo :func:`attach` (from the same thread)."""
    global _process_capture
    if process_wide:
        _process_capture = None
    else:
        _thread_captures.pop(threading.get_ident(), None)
