"""Captured output: bounded once where it is produced (a worker) and once where it is kept (the engine).

Every execution keeps at most ``log_limit_bytes`` of stdout/stderr over all its attempts; past the limit one
marker line says where it was cut, and the traceback of a failure is always kept beside it.
"""

from __future__ import annotations


def truncation_marker(limit: int) -> str:
    return f"[... output truncated at {limit} bytes ...]\n"


class LogLimiter:
    """Lets through at most ``limit`` UTF-8 bytes of text, then one truncation marker line."""

    __slots__ = ("limit", "remaining", "truncated")

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.remaining = self.limit
        self.truncated = False

    def clip(self, text: str) -> str:
        """The part of ``text`` to keep ('' once the limit is reached)."""
        if self.truncated or not text:
            return ""
        size = len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if size <= self.remaining:
            self.remaining -= size
            return text
        head = text.encode("utf-8", "surrogatepass")[: self.remaining].decode("utf-8", "ignore")
        self.remaining = 0
        self.truncated = True
        newline = "" if not head or head.endswith("\n") else "\n"
        return head + newline + truncation_marker(self.limit)


class LogBuffer:
    """Captured output of one execution (all attempts), bounded with a single truncation marker."""

    def __init__(self, limit_bytes: int) -> None:
        self._limiter = LogLimiter(limit_bytes)
        self._parts: list[str] = []

    def append(self, text: str) -> str:
        """Keep ``text`` (within the limit); returns the part kept."""
        if kept := self._limiter.clip(text):
            self._parts.append(kept)
        return kept

    def text(self) -> str:
        return "".join(self._parts)


def log_lines(text: str) -> list[str]:
    return text.splitlines()
