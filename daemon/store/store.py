"""The store: one small connector around an asyncpg pool, and every domain
operation as a named method. Code above this package never sees SQL or asyncpg."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg

from daemon.config import DatabaseSettings
from daemon.store.driver import DRIVER_ERRORS, init_connection, translate
from daemon.store.errors import LockBusy, SchemaMismatch, StoreError, StoreRejected, StoreUnavailable
from daemon.store.lease import CLOSE_ATTEMPT_S, RunLease, close_on_pool, lock_key, unlock
from daemon.store.queries import latest_version, load_queries
from daemon.store.runs import DeferredClose

DB_RETRY_MIN_S, DB_RETRY_MAX_S = 1.0, 30.0  # connecting: capped exponential backoff
POOL_CLOSE_S = 1.0  # a graceful pool close; past it, connections are dropped
IDLE_CONNECTION_S = 60.0  # an idle pooled connection closes after this: the server's slots are shared


class Store:
    """Owns the pool; opened once per process with `Store.open`."""

    def __init__(self, pool: asyncpg.Pool, settings: DatabaseSettings, max_size: int) -> None:
        self.pool = pool
        self.settings = settings
        self.q = load_queries(settings.schema)
        # Leases hold a connection each for a whole run; two stay free for the short
        # statements (heartbeats, closes, requests, webhooks), which runs can never starve.
        self.lease_slots = anyio.Semaphore(max(1, max_size - 2))
        # Rows whose run ended while the database was away, by run id (close_deferred).
        self.deferred: dict[int, DeferredClose] = {}

    @classmethod
    async def open(
        cls, settings: DatabaseSettings, *, max_size: int | None = None, application_name: str = "emag-sync"
    ) -> Store:
        size = max(2, max_size or settings.pool_max)
        async with translate("connect"):
            pool = await asyncpg.create_pool(
                settings.url,
                min_size=1,
                max_size=size,
                timeout=settings.connect_timeout_s,
                max_inactive_connection_lifetime=IDLE_CONNECTION_S,
                command_timeout=settings.statement_timeout_s,
                init=init_connection,
                server_settings={"application_name": application_name},
            )
        return cls(pool, settings, size)

    @classmethod
    async def open_when_up(
        cls,
        settings: DatabaseSettings,
        *,
        max_size: int,
        application_name: str,
        on_wait: Callable[[int, float, StoreUnavailable], None],
        wait_on_rejection: bool = False,
    ) -> Store:
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
            raise SchemaMismatch(
                f"schema {self.settings.schema!r} is at version {have or 0}, this code needs "
                f"{want}: run `emag-sync migrate`"
            )
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
                    yield RunLease(
                        self.pool,
                        self.q,
                        conn,
                        account,
                        resource,
                        key,
                        (got["pid"], got["backend_start"]),
                        self.deferred,
                    )
                finally:
                    with anyio.CancelScope(shield=True):
                        await unlock(conn, self.q["unlock"], key)
            finally:
                with anyio.CancelScope(shield=True):
                    with contextlib.suppress(*DRIVER_ERRORS):  # a failed reset closes it, locks and all
                        await self.pool.release(conn)

    async def close_deferred(self) -> list[DeferredClose]:
        """Close the rows deferred while the database was away, one bounded attempt each, in
        order; stops at the first failure (still away). Returns the rows closed now."""
        done = []
        for item in list(self.deferred.values()):
            try:
                with anyio.fail_after(CLOSE_ATTEMPT_S):
                    await close_on_pool(
                        self.pool, self.q, (item.run_id, item.progress.as_json(), item.status, item.error, None, None)
                    )
            except (StoreError, TimeoutError):
                break
            del self.deferred[item.run_id]
            done.append(item)
        return done

    # --- "sync now" and notifications --------------------------------------------

    async def register_pairs(self, pairs: list[tuple[str, str]]) -> None:
        """The (account, resource) pairs a configuration syncs, known before their first run."""
        await self.execute("register_pairs", [a for a, _ in pairs], [r for _, r in pairs])

    async def request_sync(self, account: str, resource: str) -> list[int]:
        """Request a run of the account's offers, orders or all (the SQL function the ERP calls)."""
        return [r["id"] for r in await self.fetch("request_sync", account, resource)]

    async def pending_requests(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("pending_requests")]

    async def request_outcomes(self, ids: list[int]) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("request_outcomes", ids)]

    async def set_webhook_targets(self, urls: tuple[str, ...]) -> None:
        await self.execute("set_webhook_targets", list(urls))

    async def claim_deliveries(self, limit: int, lease_s: float) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("claim_deliveries", limit, float(lease_s))]

    async def delivery_attempted(
        self,
        delivery_id: int,
        attempt: int,
        status: str,
        http_status: int | None,
        error: str | None,
        retry_in_s: float = 0.0,
    ) -> None:
        await self.execute("delivery_attempted", delivery_id, status, http_status, error, float(retry_in_s), attempt)

    async def recent_deliveries(self, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("recent_deliveries", limit)]

    @asynccontextmanager
    async def listen(
        self, channels: tuple[str, ...], on_notify: Callable[[str, str], None]
    ) -> AsyncIterator[anyio.Event]:
        """LISTEN on a session of its own (not the pool's) for the block; on_notify(channel,
        payload) runs on the event loop. Yields an event set when that session is lost."""
        lost = anyio.Event()
        async with translate("listen"):
            conn = await asyncpg.connect(
                self.settings.url,
                timeout=self.settings.connect_timeout_s,
                server_settings={"application_name": "emag-sync listen"},
            )
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            async with translate("listen"):
                for channel in channels:
                    await conn.add_listener(channel, lambda _c, _pid, ch, payload: on_notify(ch, payload))
            yield lost
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(POOL_CLOSE_S), contextlib.suppress(*DRIVER_ERRORS):
                await conn.close()
            conn.terminate()  # a no-op after a graceful close; a server that stopped answering never holds us

    async def history(
        self, limit: int, account: str | None = None, resource: str | None = None
    ) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("history", limit, account, resource)]

    async def last_runs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("last_runs")]
