"""The server's settings: one dataclass that CLI flags and ``SPEARLET_*`` environment variables map onto."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MIB = 1 << 20
GIB = 1 << 30
#: The gRPC message limit unless set: room for a 64 MiB value plus framing. Larger values never travel in
#: one message: they go by reference, in chunks or through shared files.
DEFAULT_MESSAGE_BYTES = 68 * MIB
DEFAULT_STORE = "sqlite:///.spear/spearlet.db"
ENV_PREFIX = "SPEARLET_"
MAX_PORT = 65535
EXECUTORS = ("process", "thread", "dask")


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 50051
    store: str = DEFAULT_STORE
    executor: str = "process"
    #: The Dask scheduler the dask executor uses (``tcp://HOST:PORT``); empty: it starts a local cluster.
    dask_address: str = ""
    #: None: the executor's own size, the CPU count (for dask, the cluster's slots once connected).
    max_concurrent: int | None = None
    max_queued: int = 10_000
    default_timeout_ms: int = 0
    #: Largest object. Objects are files (``blobs.py``): the disk (or, for a lab, shared memory) bounds them.
    max_object_bytes: int = 1 << 40
    #: gRPC message limit; 0 means :data:`DEFAULT_MESSAGE_BYTES`.
    max_message_bytes: int = 0
    #: A result or streamed value whose serialized size passes this travels by reference (and clients
    #: send larger arguments so).
    inline_limit_bytes: int = MIB
    #: Seconds a result object made for an execution lives after its value was first fetched.
    object_grace_s: float = 30.0
    #: Where object files live; empty: beside a SQLite store, or a temporary directory for memory://.
    object_dir: str = ""
    log_limit_bytes: int = MIB
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    #: Seconds that shutdown waits for in-flight work before cancelling it.
    shutdown_grace_s: float = 5.0
    #: On a shared store: seconds a server's lease lasts unrenewed before others end its unfinished work.
    lease_ttl_s: float = 10.0

    def __post_init__(self) -> None:
        _check_types(self)
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {self.executor!r}")
        if self.dask_address and self.executor != "dask":
            raise ValueError("dask_address needs executor='dask'")
        if self.max_concurrent is None and self.executor != "dask":
            object.__setattr__(self, "max_concurrent", _cpu_count())
        for name in ("max_concurrent", "max_queued"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in (
            "port",
            "default_timeout_ms",
            "max_object_bytes",
            "max_message_bytes",
            "inline_limit_bytes",
            "object_grace_s",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, not {getattr(self, name)}")
        if self.port > MAX_PORT:
            raise ValueError(f"port must be 0 (any free port) to {MAX_PORT}, not {self.port}")
        if self.lease_ttl_s <= 0:
            raise ValueError("lease_ttl_s must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("TLS needs both a certificate and a key")

    def executor_options(self) -> dict[str, Any]:
        """What the configured executor takes besides its size and log limit."""
        return {"address": self.dask_address} if self.executor == "dask" else {}

    @property
    def message_limit(self) -> int:
        return self.max_message_bytes or DEFAULT_MESSAGE_BYTES

    @property
    def inline_limit(self) -> int:
        """:attr:`inline_limit_bytes`, kept to half a message so that a value inline always fits one."""
        return min(self.inline_limit_bytes, self.message_limit // 2)

    @functools.cached_property  # asked on every invocation; the answer never changes
    def allows_pickle(self) -> bool:
        """Pickled code runs only on a loopback-bound server or behind a token: on any other server
        anyone who can reach the port could run code as the server's user."""
        return bool(self.token) or is_loopback(self.host)

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Defaults, then ``SPEARLET_<FIELD>`` variables, then ``overrides`` (those not ``None``)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


#: What each annotation of :class:`Config` accepts (``bool`` is an ``int`` but never a valid count).
_ACCEPTED: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (int, float),
    "str": (str,),
    "str | None": (str, type(None)),
}


def _check_types(config: Config) -> None:
    """A value of the wrong type names its option (``port="abc"``), before any comparison fails on it."""
    for f in dataclasses.fields(config):
        accepted = _ACCEPTED.get(str(f.type))
        value = getattr(config, f.name)
        if accepted is None:
            continue
        if isinstance(value, bool) or not isinstance(value, accepted):
            wanted = " or ".join("None" if t is type(None) else t.__name__ for t in accepted)
            raise TypeError(f"{f.name} must be {wanted}, not {type(value).__name__} {value!r}")


def _parse(name: str, raw: str, annotation: object) -> object:
    kind = str(annotation)
    try:
        if kind in ("int", "int | None"):
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}{name.upper()} must be a number, not {raw!r}") from None
    return raw


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
