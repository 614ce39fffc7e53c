"""Spear Lab: run, watch and test functions from a notebook.

``start_lab()`` runs a spearlet in this interpreter; ``connect(address)`` reaches a remote one. Both give a
:class:`Client`, whose ``function`` turns a plain Python function into a remote one.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from .client import Client

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

#: The module of each public name, imported when the name is first used: a process that needs only
#: ``spear_sdk.wire`` (a spearlet server and its worker processes) then loads neither the client nor pandas.
_HOMES = {
    "ALL_COMPLETED": "client",
    "FIRST_COMPLETED": "client",
    "FIRST_EXCEPTION": "client",
    "Alert": "alerts",
    "AsyncClient": "aio",
    "AsyncExecution": "aio",
    "AsyncFunction": "aio",
    "AsyncObjectRef": "objects",
    "Breach": "alerts",
    "CallOptions": "models",
    "Client": "client",
    "Execution": "client",
    "ExecutionState": "models",
    "Function": "client",
    "Health": "models",
    "Lab": "lab",
    "ObjectRef": "objects",
    "Stats": "models",
    "TaskRef": "models",
    "TlsOption": "_connection",
    "as_completed": "client",
    "start_lab": "lab",
    "wait": "client",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    missing = AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if home is not None:
        value = getattr(importlib.import_module(f".{home}", __name__), name)
    elif name.isidentifier() and not name.startswith("__"):
        # a submodule (spear_sdk.frames, spear_sdk.errors, ...), as if it had been imported
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise missing from None
    else:  # (dunder probes such as __wrapped__, and names no module can have)
        raise missing
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
