"""Storage: the :class:`KvStore` interface and :func:`open_store`, which picks a backend by URL."""

from __future__ import annotations

from .base import KvStore, StoreError

__all__ = ["SUPPORTED_URLS", "KvStore", "StoreError", "open_store"]

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


def open_store(url: str) -> KvStore:
    """Open the store ``url`` names; raises :class:`ValueError` for an unknown scheme or malformed URL and
    :class:`StoreError` when the backend cannot open it (unwritable path, not a database file)."""
    if not isinstance(url, str):
        raise TypeError(f"store URL must be str, not {type(url).__name__}")
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise _unsupported(url, "expected scheme://...")
    scheme = scheme.lower()
    # Backends are imported on demand so that memory:// never pays for importing sqlite3.
    if scheme == "memory":
        if rest:
            raise _unsupported(url, "memory:// takes no path")
        from .memory import MemoryStore

        return MemoryStore(url)
    if scheme == "sqlite":
        from .sqlite import SqliteStore, path_from_url

        try:
            path = path_from_url(url)
        except ValueError as e:
            raise ValueError(f"{e}; supported: {_SUPPORTED_TEXT}") from None
        return SqliteStore(path, url=url)
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres import PostgresStore
        except ImportError as e:
            raise StoreError(
                f"store {url!r} needs psycopg 3 and psycopg-pool: pip install 'spear-lab[postgres]' ({e})"
            ) from None
        return PostgresStore(url)
    if scheme in ("redis", "rediss"):
        raise _unsupported(url, "the redis backend is not implemented yet")
    raise _unsupported(url, f"unknown scheme {scheme!r}")
