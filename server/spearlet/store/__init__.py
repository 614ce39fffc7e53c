"""Storage: the :class:`KvStore` interface and :func:`open_store`, which picks a backend by URL."""

from __future__ import annotations

from .base import KvStore, StoreError, StoreLocked

__all__ = ["SUPPORTED_URLS", "KvStore", "StoreError", "StoreLocked", "check_url", "open_store"]

#: The URL forms :func:`open_store` accepts, for error messages and ``--help`` text.
SUPPORTED_URLS = (
    "memory://",
    "sqlite:///relative/path.db",
    "sqlite:////absolute/path.db",
    "sqlite://:memory:",
    "postgresql://user@host:port/db",
)


_SUPPORTED_TEXT = ", ".join(SUPPORTED_URLS) + " (redis://host:port/db is planned)"


def _unsupported(url: str, why: str) -> ValueError:
    return ValueError(f"unsupported store URL {url!r}: {why}; supported: {_SUPPORTED_TEXT}")


def check_url(url: str) -> tuple[str, str]:
    """The backend (``memory``, ``sqlite`` or ``postgresql``/``postgres``) and its path for ``url`` (none
    but for SQLite), without opening anything; raises
    :class:`ValueError` for an unknown scheme or malformed URL."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise _unsupported(url, "expected scheme://...")
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise _unsupported(url, "memory:// takes no path")
        return scheme, ""
    if scheme == "sqlite":
        from .sqlite import path_from_url

        try:
            return scheme, path_from_url(url)
        except ValueError as e:
            raise ValueError(f"{e}; supported: {_SUPPORTED_TEXT}") from None
    if scheme in ("postgresql", "postgres"):
        return scheme, ""  # the URL itself is the connection string; the server checks it on open
    if scheme in ("redis", "rediss"):
        raise _unsupported(url, "the redis backend is not implemented yet")
    raise _unsupported(url, f"unknown scheme {scheme!r}")


def open_store(url: str) -> KvStore:
    """Open the store ``url`` names; raises :class:`ValueError` for an unknown scheme or malformed URL and
    :class:`StoreError` when the backend cannot open it (unwritable path, not a database file, a SQLite
    file another server holds: :class:`StoreLocked`)."""
    scheme, path = check_url(url)
    # Backends are imported on demand so that memory:// never pays for importing sqlite3.
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(url)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as e:
            raise StoreError(
                f"store {url!r} needs psycopg 3 and psycopg-pool: pip install 'spear-lab[postgres]' ({e})"
            ) from None
        return PostgresStore(url)
    from .sqlite import SqliteStore

    return SqliteStore(path, url=url)
