"""Spear Lab: run, watch and test functions from a notebook.

``start_lab()`` runs a spearlet in this interpreter; ``connect(address)`` reaches a remote one. Both give a
:class:`Client`, whose ``function`` turns a plain Python function into a remote one.
"""

from __future__ import annotations

from . import errors
from ._connection import TlsOption
from .aio import AsyncClient, AsyncExecution, AsyncFunction
from .alerts import Alert, Breach
from .client import (
    ALL_COMPLETED,
    FIRST_COMPLETED,
    FIRST_EXCEPTION,
    Client,
    Execution,
    Function,
    as_completed,
    wait,
)
from .lab import Lab, start_lab
from .models import CallOptions, ExecutionState, Health, Stats, TaskRef
from .objects import AsyncObjectRef, ObjectRef

__version__ = "0.1.0"

#: How long ``connect()`` waits for the server's first answer.
CONNECT_TIMEOUT_S = 10.0


def connect(
    address: str,
    token: str | None = None,
    tls: TlsOption = None,
    inline_limit_bytes: int | None = None,
    *,
    forward_output: bool = True,
) -> Client:
    """A client for the spearlet at ``address`` ("host:port"), checked with one health call so that a
    wrong address or token fails here, with a clear error, rather than at the first invocation.

    ``forward_output``: what remote functions print shows in the calling cell as it is printed. Arguments
    whose serialized size passes ``inline_limit_bytes`` (default 1 MiB) travel by reference."""
    client = Client(
        address, token=token, tls=tls, inline_limit_bytes=inline_limit_bytes, forward_output=forward_output
    )
    client.check(timeout=CONNECT_TIMEOUT_S)
    return client


__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Alert",
    "AsyncClient",
    "AsyncExecution",
    "AsyncFunction",
    "AsyncObjectRef",
    "Breach",
    "CallOptions",
    "Client",
    "Execution",
    "ExecutionState",
    "Function",
    "Health",
    "Lab",
    "ObjectRef",
    "Stats",
    "TaskRef",
    "as_completed",
    "connect",
    "errors",
    "start_lab",
    "wait",
]
