"""What can be checked about a :class:`Config` before a server starts: the store URL and whether another
server holds the store, the bind address, the TLS files. ``start_lab`` runs it before it stops the lab it
replaces, so that a bad option leaves the running lab alone."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc

from .config import Config
from .store import StoreLocked, check_url
from .store.file_lock import holder


def check(config: Config, *, free_store: str = "", free_port: int = 0) -> None:
    """Raise what starting a server with ``config`` would raise. ``free_store`` and ``free_port`` are
    those of the server about to be replaced: they will be free by then, so they are not tried."""
    _check_store(config.store, free_store)
    _check_bind(config.host, 0 if config.port == free_port else config.port)
    if config.tls_cert and config.tls_key:
        _check_tls(config.tls_cert, config.tls_key)


def _check_store(url: str, free_store: str) -> None:
    scheme, path = check_url(url)
    if scheme != "sqlite" or url == free_store or path == ":memory:":
        return
    pid = holder(path)
    if pid is not None:
        who = f"process {pid}" if pid > 0 else "another process"
        raise StoreLocked(
            f"store {url} is in use by {who}: one server per SQLite store; stop that server, or give "
            "this one another store",
            path=path,
            pid=pid if pid > 0 else None,
        )


def _check_bind(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"host {host!r} is not an address this machine can bind: {e}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if port:
                raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}") from None
            raise ValueError(f"host {host!r} is not an address of this machine: {e.strerror}") from None


def _check_tls(cert: str, key: str) -> None:
    pems = []
    for option, path in (("tls_cert", cert), ("tls_key", key)):
        try:
            pems.append(Path(path).read_bytes())
        except OSError as e:
            raise ValueError(f"{option} {path!r} cannot be read: {e.strerror}") from None
    for option, path, pem in zip(("tls_cert", "tls_key"), (cert, key), pems, strict=True):
        if b"-----BEGIN" not in pem:
            raise ValueError(f"{option} {path!r} is not a PEM file")
    grpc.ssl_server_credentials([(pems[1], pems[0])])
