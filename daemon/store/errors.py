"""The store's exceptions: code above this layer never imports asyncpg's."""

from __future__ import annotations


class StoreError(Exception):
    """A database operation failed; the message is one line, without secrets."""


class StoreUnavailable(StoreError):
    """The database cannot be reached (refused, DNS, auth, timeout)."""


class StoreRejected(StoreUnavailable):
    """The server answers but refuses us: wrong password, unknown role or database.
    Waiting will not fix it; the daemon exits as for a configuration error."""


class LockBusy(StoreError):
    """Another run (here, in another process or on another host) holds the pair's lock."""


class SchemaMismatch(StoreError):
    """The database schema is not the version this code needs."""
