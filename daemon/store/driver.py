"""The asyncpg boundary: its errors become StoreErrors here, and nowhere else."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from daemon.store.errors import StoreError, StoreRejected, StoreUnavailable

# Driver errors that mean "the database is not there" rather than "this query is wrong".
UNAVAILABLE = (
    OSError,
    asyncpg.CannotConnectNowError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.InterfaceError,
    TimeoutError,
)
# ... and those that mean "it is there, and says no to this database.url".
REJECTED = (
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidPasswordError,
    asyncpg.InvalidCatalogNameError,
)
# Anything the driver raises (the REJECTED are PostgresErrors too), for best-effort cleanup.
DRIVER_ERRORS = (asyncpg.PostgresError, *UNAVAILABLE)


@asynccontextmanager
async def translate(action: str) -> AsyncIterator[None]:
    """Translate driver errors into StoreError at the boundary (`raise ... from`)."""
    try:
        yield
    except StoreError:
        raise
    except REJECTED as exc:
        raise StoreRejected(f"{action}: the database refused database.url: {exc}") from exc
    except UNAVAILABLE as exc:
        raise StoreUnavailable(f"{action}: database unavailable: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"{action}: {type(exc).__name__}: {exc}") from exc


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
