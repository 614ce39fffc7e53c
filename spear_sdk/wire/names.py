"""Limits on names that both sides check, with one message: the SDK refuses a long name before it
uploads anything, the server refuses it from any client."""

from __future__ import annotations

MAX_TASK_NAME = 256


def task_name_too_long(name: str) -> str | None:
    """The message for a task name over the limit, or ``None`` when it fits."""
    if len(name) <= MAX_TASK_NAME:
        return None
    return f"a task name is at most {MAX_TASK_NAME} characters; this one has {len(name)}: {name[:40]!r}..."
