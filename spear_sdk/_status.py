"""Execution status names as the SDK shows them (the protocol's enum, lowercase, without its prefix), which
of them are final, and the colour each is drawn in (panels, watches and plots)."""

from __future__ import annotations

#: In the protocol's order: ``EXECUTION_STATUS_PENDING`` (1) is ``"pending"``, and so on.
STATUS_NAMES: tuple[str, ...] = ("pending", "running", "completed", "failed", "cancelled", "timeout")
#: The statuses an execution ends in: it never changes again.
TERMINAL: frozenset[str] = frozenset(STATUS_NAMES[2:])
#: The colour of each status wherever the SDK draws one.
STATUS_COLOURS: dict[str, str] = {
    "pending": "#7f7f7f",
    "running": "#1f77b4",
    "completed": "#2ca02c",
    "failed": "#d62728",
    "timeout": "#d62728",
    "cancelled": "#8c564b",
}


def status_name(code: int) -> str | None:
    """The name of a protocol status code; ``None`` for ``EXECUTION_STATUS_UNKNOWN`` or an unknown code."""
    return STATUS_NAMES[code - 1] if 1 <= code <= len(STATUS_NAMES) else None


def status_code(name: str) -> int:
    """The protocol code of a status name (any case)."""
    try:
        return STATUS_NAMES.index(name.lower()) + 1
    except (ValueError, AttributeError):
        raise ValueError(f"unknown status {name!r}; choose one of {', '.join(STATUS_NAMES)}") from None
