"""The store: one small connector around an asyncpg pool, and every domain
operation as a named method. Code above this module never sees SQL or asyncpg."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
import asyncpg

from daemon.config import DatabaseSettings
from daemon.records import OfferRow, OrderRow
from daemon.store.errors import LockBusy, SchemaMismatch, StoreError, StoreRejected, StoreUnavailable
from daemon.store.queries import latest_version, load_queries

# Driver errors that mean "the database is not there" rather than "this query is wrong".
_UNAVAILABLE = (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionDoesNotExistError,
                asyncpg.InterfaceError, TimeoutError)
# ... and those that mean "it is there, and says no to this database.url".
_REJECTED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError,
             asyncpg.InvalidCatalogNameError)
# Anything the driver raises (the _REJECTED are PostgresErrors too), for best-effort cleanup.
_DRIVER_ERRORS = (asyncpg.PostgresError, *_UNAVAILABLE)

DB_RETRY_MIN_S, DB_RETRY_MAX_S = 1.0, 30.0  # connecting: capped exponential backoff
CLOSE_ATTEMPT_S = 1.25  # each way of closing a run's row: on its own session, then on a fresh one
POOL_CLOSE_S = 1.0  # a graceful pool close; past it, connections are dropped


@asynccontextmanager
async def translate(action: str) -> AsyncIterator[None]:
    """Translate driver errors into StoreError at the boundary (`raise ... from`)."""
    try:
        yield
    except StoreError:
        raise
    except _REJECTED as exc:
        raise StoreRejected(f"{action}: the database refused database.url: {exc}") from exc
    except _UNAVAILABLE as exc:
        raise StoreUnavailable(f"{action}: database unavailable: {exc}") from exc
    except asyncpg.PostgresError as exc:
        raise StoreError(f"{action}: {type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True)
class Progress:
    """The counters a run persists with each page and when it ends, each field named as its
    sync_runs column (the queries read them by name from `as_json()`)."""

    pages_done: int = 0
    pages_total: int | None = None
    items_seen: int = 0
    items_written: int = 0
    items_unchanged: int = 0
    items_invalid: int = 0
    api_requests: int = 0
    api_retries: int = 0
    api_throttled: int = 0
    api_wait_s: float = 0.0
    api_latency_p50_s: float | None = None
    api_latency_p95_s: float | None = None
    api_latency_max_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Closed(StrEnum):
    """How closing a run's row went."""

    NOW = "now"
    ALREADY = "already"  # someone else closed it first (a monitor); never overwritten
    LATER = "later"  # the database is away: the store closes it once it answers again


@dataclass(frozen=True)
class DeferredClose:
    run_id: int
    status: str
    progress: Progress
    error: str | None


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    checkpoint: dict[str, Any] | None


def lock_key(schema: str, account: str, resource: str) -> int:
    """A stable signed 64-bit advisory lock key per (schema, account, resource)."""
    digest = hashlib.blake2b(f"emag-sync:{schema}:{account}:{resource}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Store:
    """Owns the pool; opened once per process with `Store.open`."""

    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings, max_size: int) -> None:
        self.pool = pool
        self.settings = settings
        self.q = load_queries(settings.schema)
        # Leases hold a connection each for a whole run; keep two free for heartbeats
        # and closing rows, so runs can never starve each other of connections.
        self.lease_slots = anyio.Semaphore(max(1, max_size - 2))
        # Rows whose run ended while the database was away, by run id (close_deferred).
        self.deferred: dict[int, DeferredClose] = {}

    @classmethod
    async def open(cls, settings: DatabaseSettings, *, max_size: int | None = None,
                   application_name: str = "emag-sync") -> Store:
        size = max(2, max_size or settings.pool_max)
        async with translate("connect"):
            pool = await asyncpg.create_pool(
                settings.url, min_size=1, max_size=size, timeout=settings.connect_timeout_s,
                command_timeout=settings.statement_timeout_s, init=_init_connection,
                server_settings={"application_name": application_name},
            )
        return cls(pool, settings, size)

    @classmethod
    async def open_when_up(cls, settings: DatabaseSettings, *, max_size: int, application_name: str,
                           on_wait: Callable[[int, float, StoreUnavailable], None],
                           wait_on_rejection: bool = False) -> Store:
        """Open, retrying with capped exponential backoff while the database is unavailable;
        on_wait(attempt, retry_in_s, error) says so each time. A database that refuses
        database.url raises StoreRejected at once, unless wait_on_rejection."""
        delay, attempt = DB_RETRY_MIN_S, 0
        while True:
            attempt += 1
            try:
                return await cls.open(settings, max_size=max_size, application_name=application_name)
            except StoreUnavailable as exc:
                if isinstance(exc, StoreRejected) and not wait_on_rejection:
                    raise
                on_wait(attempt, delay, exc)
                await anyio.sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX_S)

    async def close(self) -> None:
        """Close the pool, gracefully for at most POOL_CLOSE_S: a dead server never holds us."""
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(POOL_CLOSE_S):
                await self.pool.close()
            self.pool.terminate()  # a no-op after a graceful close

    async def fetch(self, name: str, *args: Any) -> list[asyncpg.Record]:
        async with translate(name):
            return await self.pool.fetch(self.q[name], *args)

    async def execute(self, name: str, *args: Any) -> str:
        async with translate(name):
            return await self.pool.execute(self.q[name], *args)

    # --- schema ---------------------------------------------------------------

    async def schema_version(self) -> int | None:
        try:
            async with translate("schema_version"):
                return await self.pool.fetchval(self.q["schema_version"])
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.UndefinedTableError):
                return None
            raise

    async def check_schema(self) -> int:
        """Refuse to run against a schema older than this code (one-line message)."""
        have, want = await self.schema_version(), latest_version()
        if have is None or have < want:
            raise SchemaMismatch(f"schema {self.settings.schema!r} is at version {have or 0}, this code needs "
                                 f"{want}: run `emag-sync migrate`")
        return have

    # --- runs -------------------------------------------------------------------

    @asynccontextmanager
    async def lease(self, account: str, resource: str) -> AsyncIterator[RunLease]:
        """Hold the pair's advisory lock on a connection of its own for the run's life."""
        key = lock_key(self.settings.schema, account, resource)
        async with self.lease_slots:
            async with translate("acquire connection"):
                conn = await self.pool.acquire()
            try:
                async with translate("try_lock"):
                    got = await conn.fetchrow(self.q["try_lock"], key)
                if not got["locked"]:
                    raise LockBusy(f"{account}/{resource}: another run holds the lock")
                try:
                    yield RunLease(self, conn, account, resource, key, (got["pid"], got["backend_start"]))
                finally:
                    with anyio.CancelScope(shield=True):
                        await _unlock(conn, self.q["unlock"], key)
            finally:
                with anyio.CancelScope(shield=True):
                    try:
                        await self.pool.release(conn)
                    except _DRIVER_ERRORS:
                        pass  # its reset failed: the pool has closed it, and its locks went with it

    async def save_progress(self, run_id: int, progress: Progress) -> None:
        await self.execute("save_progress", run_id, progress.as_json(), None, None)

    async def finish_run(self, run_id: int, status: str, progress: Progress, error: str | None,
                         drop_session: tuple[int, datetime] | None = None) -> bool:
        """Close the run once; False when it was already closed (e.g. by the monitor).
        `drop_session` (pid, backend_start): first end that session of the run's, which may hold
        the row's lock."""
        async with translate("finish_run"):
            async with self.pool.acquire() as conn:
                if drop_session is not None:
                    await conn.execute(self.q["terminate_session"], *drop_session)
                rows = await conn.fetch(self.q["save_progress"], run_id, progress.as_json(), status, error)
        return bool(rows)

    async def close_deferred(self) -> list[DeferredClose]:
        """Close the rows deferred while the database was away, one bounded attempt each, in
        order; stops at the first failure (still away). Returns the rows closed now."""
        done = []
        for item in list(self.deferred.values()):
            try:
                with anyio.fail_after(CLOSE_ATTEMPT_S):
                    await self.finish_run(item.run_id, item.status, item.progress, item.error)
            except (StoreError, TimeoutError):
                break
            del self.deferred[item.run_id]
            done.append(item)
        return done

    async def get_state(self, account: str, resource: str) -> SyncState:
        rows = await self.fetch("get_state", account, resource)
        if not rows:
            return SyncState(None, None)
        return SyncState(rows[0]["watermark"], rows[0]["checkpoint"])

    async def history(self, limit: int, account: str | None = None,
                      resource: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("history", limit, account, resource)]

    async def running_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("running_runs")]

    async def last_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("last_runs")]


async def _unlock(conn: asyncpg.Connection, sql: str, key: int) -> None:
    try:
        await conn.fetchval(sql, key)
    except _DRIVER_ERRORS:
        # A broken connection has lost its session, and the lock with it; the pool
        # discards it (its reset also runs pg_advisory_unlock_all()).
        pass


class RunLease:
    """A held (account, resource) lock and the connection that holds it.

    Page writes run here so the page's rows, the run's progress and the checkpoint
    commit in one transaction on the locked session."""

    def __init__(self, store: Store, conn: asyncpg.Connection, account: str, resource: str, key: int,
                 session: tuple[int, datetime]) -> None:
        self.store, self.conn, self.account, self.resource, self.key = store, conn, account, resource, key
        self.session = session  # (pid, backend_start) of the session holding the lock
        self.q = store.q

    async def open_run(self, mode: str, trigger: str) -> tuple[int, datetime]:
        async with translate("open_run"):
            row = await self.conn.fetchrow(self.q["open_run"], self.account, self.resource, mode, trigger,
                                           socket.gethostname(), os.getpid(), self.key)
        return row["id"], row["started_at"]

    async def finish_run(self, run_id: int, status: str, progress: Progress, error: str | None) -> bool:
        """Close the run on the lease's own session, outside any transaction a cancelled page
        left behind. A cancel inside a page transaction also cancels asyncpg's ROLLBACK, leaving
        the session in a transaction that holds the row's lock (any other session would block
        on it); a cancel as the page starts can leave a BEGIN in flight that the client does
        not know of yet, so the close ran inside it: roll back and close again."""
        async with translate("finish_run"):
            for _ in range(2):
                if self.conn.is_in_transaction():
                    await self.conn.execute("ROLLBACK")
                rows = await self.conn.fetch(self.q["save_progress"], run_id, progress.as_json(), status, error)
                if not self.conn.is_in_transaction():
                    return bool(rows)
        raise StoreError("finish_run: the run's session stays inside a transaction")

    async def close_run(self, run_id: int, status: str, progress: Progress,
                        error: str | None) -> tuple[Closed, list[str]]:
        """Close the run's row, whatever state its session is in: on that session (bounded),
        else on a fresh one after dropping this session, whose transaction and row locks go
        with it (a session that a cancel left busy or blocked would hold the row forever),
        else later (the store retries once the database answers). Returns how, and what failed."""
        failures: list[str] = []
        attempts = (lambda: self.finish_run(run_id, status, progress, error),
                    lambda: self.store.finish_run(run_id, status, progress, error, drop_session=self.session))
        for attempt in attempts:
            try:
                with anyio.fail_after(CLOSE_ATTEMPT_S):
                    return (Closed.NOW if await attempt() else Closed.ALREADY), failures
            except (StoreError, TimeoutError) as exc:
                failures.append(str(exc) or f"no answer within {CLOSE_ATTEMPT_S:g} s")
            try:
                self.conn.terminate()
            except _DRIVER_ERRORS:
                pass  # already gone with the connection
        late = f"{error}; " if error else ""
        self.store.deferred[run_id] = DeferredClose(
            run_id, status, progress, f"{late}row closed late: the database was unreachable when the run ended "
                                      f"({failures[-1]})")
        return Closed.LATER, failures

    async def begin_scan(self) -> None:
        """A full offer scan starts on this session: forget the ids of any earlier one."""
        async with translate("scan_begin"):
            async with self.conn.transaction():
                await self.conn.execute(self.q["scan_begin"])

    async def commit_offers(self, run_id: int, rows: Sequence[OfferRow], progress: Progress,
                            checkpoint: dict[str, Any]) -> tuple[int, int]:
        columns = _columns(rows, OfferRow.__slots__)
        return await self._commit("upsert_offers", run_id, progress, checkpoint, (self.account, *columns))

    async def commit_orders(self, run_id: int, rows: Sequence[OrderRow], progress: Progress,
                            checkpoint: dict[str, Any]) -> tuple[int, int]:
        columns = _columns(rows, OrderRow.__slots__)
        return await self._commit("upsert_orders", run_id, progress, checkpoint, (self.account, *columns))

    async def _commit(self, query: str, run_id: int, progress: Progress, checkpoint: dict[str, Any],
                      args: tuple[Any, ...]) -> tuple[int, int]:
        """Rows, progress/heartbeat and checkpoint in one transaction -> (inserted, updated)."""
        async with translate(query):
            async with self.conn.transaction():
                row = await self.conn.fetchrow(self.q[query], *args)
                await self.conn.execute(self.q["save_progress"], run_id, progress.as_json(), None, None)
                await self.conn.execute(self.q["save_checkpoint"], self.account, self.resource, checkpoint)
        return row["inserted"], row["updated"]

    async def save_checkpoint(self, checkpoint: dict[str, Any] | None) -> None:
        async with translate("save_checkpoint"):
            await self.conn.execute(self.q["save_checkpoint"], self.account, self.resource, checkpoint)

    async def complete(self, watermark: datetime | None, mark_missing: bool = False) -> int:
        """A finished scan: mark the offers it did not see (a full offer scan this session read
        from page 1), advance the watermark, drop the checkpoint, in one transaction. Returns
        the number of offers newly marked missing."""
        marked = 0
        async with translate("complete_state"):
            async with self.conn.transaction():
                if mark_missing:
                    marked = (await self.conn.fetchrow(self.q["mark_missing_offers"], self.account))["marked"]
                await self.conn.execute(self.q["complete_state"], self.account, self.resource, watermark)
        return marked


def _columns(rows: Sequence[Any], names: Sequence[str]) -> list[list[Any]]:
    return [[getattr(r, name) for r in rows] for name in names]
