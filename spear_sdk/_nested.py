"""Function handles that travel: pickled into a remote function (or copied), they call the server that
runs them.

A spearlet gives each job the address of itself (and its token and CA certificate, if it has them) in
:data:`ADDRESS_VAR`, :data:`TOKEN_VAR` and :data:`TLS_VAR`. A handle unpickled where these are set talks to
that server, through one client per process made on first use; elsewhere it talks to the address it was
pickled for, through a client of this process for that address if there is one.

A nested call that waits (``inner(x)`` inside ``outer``) holds ``outer``'s slot while ``inner`` needs one
of its own: with every slot (``max_concurrent``) taken by callers, the callees queue behind them forever.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from ._connection import Connection

if TYPE_CHECKING:
    from ._core import Core

ADDRESS_VAR = "SPEAR_ADDRESS"
TOKEN_VAR = "SPEAR_TOKEN"
TLS_VAR = "SPEAR_TLS_CA"

_lock = threading.Lock()
#: Cores of this process's clients by address, so that a copy made here uses its client's credentials.
_local: weakref.WeakValueDictionary[str, Core] = weakref.WeakValueDictionary()
#: Cores made here for a server named by the environment (or a bare address), kept for the process.
_made: dict[tuple[str, str, str], Core] = {}


def remember(core: Core) -> None:
    """``core`` is a client of this process: handles unpickled here for its address use it."""
    with _lock:
        _local[core.connection.address] = core


def core_for(address: str) -> Core:
    """The core a handle pickled for ``address`` uses here."""
    from ._core import Core
    from ._runtime import get_runtime

    served = os.environ.get(ADDRESS_VAR)
    if served:
        key = (served, os.environ.get(TOKEN_VAR, ""), os.environ.get(TLS_VAR, ""))
    else:
        with _lock:
            local = _local.get(address)
        if local is not None:
            return local
        key = (address, "", "")
    with _lock:
        core = _made.get(key)
        if core is None:
            served_address, token, tls = key
            connection = Connection(served_address, token=token or None, tls=tls or None)
            core = _made[key] = Core(connection, get_runtime().loop)
        return core
