"""The execution state machine (see docs/design.md, "The lifecycle").

PENDING -> RUNNING -> COMPLETED | FAILED | TIMEOUT | CANCELLED, and PENDING -> CANCELLED (or FAILED when a
restart interrupts queued work). A retry moves RUNNING back to RUNNING with the next attempt number.
Terminal states never change.
"""

from __future__ import annotations

from spear_sdk.wire import function_pb2 as fpb

PENDING = fpb.EXECUTION_STATUS_PENDING
RUNNING = fpb.EXECUTION_STATUS_RUNNING
COMPLETED = fpb.EXECUTION_STATUS_COMPLETED
FAILED = fpb.EXECUTION_STATUS_FAILED
CANCELLED = fpb.EXECUTION_STATUS_CANCELLED
TIMEOUT = fpb.EXECUTION_STATUS_TIMEOUT

ACTIVE = frozenset({PENDING, RUNNING})
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, TIMEOUT})

_ALLOWED: dict[int, frozenset[int]] = {
    PENDING: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({RUNNING} | TERMINAL),
}

# Error codes the engine itself assigns (executors assign the others, see executors.base).
TIMEOUT_CODE = "TIMEOUT"
CANCELLED_CODE = "CANCELLED"
INTERRUPTED = "INTERRUPTED"


class IllegalTransition(RuntimeError):
    """A bug: something tried to move an execution along an edge the state machine does not have."""


def check_transition(old: int, new: int) -> None:
    if new not in _ALLOWED.get(old, frozenset()):
        raise IllegalTransition(
            f"execution cannot go from {fpb.ExecutionStatus.Name(old)} to {fpb.ExecutionStatus.Name(new)}"
        )


def timeout_message(timeout_ms: int) -> str:
    """The error message of an execution stopped by its deadline."""
    return f"timed out after {timeout_ms} ms"


def status_name(status: int) -> str:
    """``EXECUTION_STATUS_COMPLETED`` -> ``completed``."""
    return fpb.ExecutionStatus.Name(status).removeprefix("EXECUTION_STATUS_").lower()
