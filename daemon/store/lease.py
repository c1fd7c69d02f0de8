"""A run's lease: the (account, resource) advisory lock, the session holding it, and the
run row it owns from open to close. Page writes happen here, so a page's rows, the run's
progress and heartbeat, its checkpoint and the login's rate budget commit together."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import anyio
import asyncpg

from daemon.identity import host_pid
from daemon.records import OfferRow, OrderRow
from daemon.store.driver import DRIVER_ERRORS, translate
from daemon.store.errors import StoreError
from daemon.store.runs import Budget, Closed, DeferredClose, OpenedRun, Progress, SyncState

CLOSE_ATTEMPT_S = 1.25  # each way of closing a run's row: on its own session, then on a fresh one


def lock_key(schema: str, account: str, resource: str) -> int:
    """A stable signed 64-bit advisory lock key per (schema, account, resource)."""
    digest = hashlib.blake2b(f"emag-sync:{schema}:{account}:{resource}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class RunLease:
    """A held (account, resource) lock, the connection that holds it, and its run."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: dict[str, str],
        conn: asyncpg.Connection,
        account: str,
        resource: str,
        key: int,
        session: tuple[int, datetime],
        deferred: dict[int, DeferredClose],
    ) -> None:
        self.pool, self.q, self.conn, self.account, self.resource = pool, queries, conn, account, resource
        self.key = key
        self.session = session  # (pid, backend_start) of the session holding the lock
        self.deferred = deferred  # where a close the database refused waits (the store retries it)
        self.run_id = 0
        # Where the login's rate budget stands now (the run's limiter); handed over with each
        # save of the run's progress, so whichever process runs this login next goes on from it.
        self.budget: Callable[[], Budget] | None = None

    async def open_run(self, mode: str, trigger: str, budget_key: tuple[str, str] | None = None) -> OpenedRun:
        """Insert the run's row (committed before any API request), register the pair, and
        take over the login's rate budget (`budget_key`: login, route group) as it stands."""
        login, group = budget_key or (None, None)
        async with translate("open_run"):
            row = await self.conn.fetchrow(
                self.q["open_run"], self.account, self.resource, mode, trigger, *host_pid(), self.key, login, group
            )
        self.run_id = row["id"]
        return OpenedRun(
            row["id"], row["started_at"], Budget(row["budget_wait_s"], row["budget_slowdown"], row["budget_orphaned"])
        )

    def _progress_args(
        self, progress: Progress, status: str | None = None, error: str | None = None
    ) -> tuple[Any, ...]:
        """save_progress's arguments: the run, its counters, a status to close it, the budget."""
        budget = self.budget() if self.budget else None
        return (
            self.run_id,
            progress.as_json(),
            status,
            error,
            budget.wait_s if budget else None,
            budget.slowdown if budget else None,
        )

    async def heartbeat(self, progress: Progress) -> None:
        """Heartbeat and counters on a pool session (this one may be busy with a page)."""
        async with translate("save_progress"):
            await self.pool.execute(self.q["save_progress"], *self._progress_args(progress))

    async def finish_run(self, status: str, progress: Progress, error: str | None) -> bool:
        """Close the run on the lease's own session, outside any transaction a cancelled page
        left behind. A cancel inside a page transaction also cancels asyncpg's ROLLBACK, leaving
        the session in a transaction that holds the row's lock (any other session would block
        on it); a cancel as the page starts can leave a BEGIN in flight that the client does
        not know of yet, so the close ran inside it: roll back and close again."""
        async with translate("finish_run"):
            for _ in range(2):
                if self.conn.is_in_transaction():
                    await self.conn.execute("ROLLBACK")
                rows = await self.conn.fetch(self.q["save_progress"], *self._progress_args(progress, status, error))
                if not self.conn.is_in_transaction():
                    return bool(rows)
        raise StoreError("finish_run: the run's session stays inside a transaction")

    async def close_run(self, status: str, progress: Progress, error: str | None) -> tuple[Closed, list[str]]:
        """Close the run's row, whatever state its session is in: on that session (bounded),
        else on a fresh one after dropping this session, whose transaction and row locks go
        with it (a session that a cancel left busy or blocked would hold the row forever),
        else later (the store retries once the database answers). Returns how, and what failed."""
        failures: list[str] = []
        args = self._progress_args(progress, status, error)
        attempts = (
            lambda: self.finish_run(status, progress, error),
            lambda: close_on_pool(self.pool, self.q, args, drop_session=self.session),
        )
        for attempt in attempts:
            try:
                with anyio.fail_after(CLOSE_ATTEMPT_S):
                    return (Closed.NOW if await attempt() else Closed.ALREADY), failures
            except (StoreError, TimeoutError) as exc:
                failures.append(str(exc) or f"no answer within {CLOSE_ATTEMPT_S:g} s")
            with contextlib.suppress(*DRIVER_ERRORS):  # already gone with the connection
                self.conn.terminate()
        late = f"{error}; " if error else ""
        self.deferred[self.run_id] = DeferredClose(
            self.run_id,
            status,
            progress,
            f"{late}row closed late: the database was unreachable when the run ended ({failures[-1]})",
        )
        return Closed.LATER, failures

    async def begin_scan(self) -> None:
        """A full offer scan starts on this session: forget the ids of any earlier one."""
        async with translate("scan_begin"), self.conn.transaction():
            await self.conn.execute(self.q["scan_begin"])

    async def commit_offers(
        self, rows: Sequence[OfferRow], progress: Progress, checkpoint: dict[str, Any]
    ) -> tuple[int, int]:
        columns = _columns(rows, OfferRow.__slots__)
        return await self._commit("upsert_offers", progress, checkpoint, (self.account, *columns))

    async def commit_orders(
        self, rows: Sequence[OrderRow], progress: Progress, checkpoint: dict[str, Any]
    ) -> tuple[int, int]:
        columns = _columns(rows, OrderRow.__slots__)
        return await self._commit("upsert_orders", progress, checkpoint, (self.account, *columns))

    async def _commit(
        self, query: str, progress: Progress, checkpoint: dict[str, Any], args: tuple[Any, ...]
    ) -> tuple[int, int]:
        """Rows, progress/heartbeat/budget and checkpoint in one transaction -> (inserted, updated)."""
        async with translate(query), self.conn.transaction():
            row = await self.conn.fetchrow(self.q[query], *args)
            await self.conn.execute(self.q["save_progress"], *self._progress_args(progress))
            await self.conn.execute(self.q["save_checkpoint"], self.account, self.resource, checkpoint)
        return row["inserted"], row["updated"]

    async def state(self) -> SyncState:
        """The pair's watermark and resume checkpoint."""
        async with translate("get_state"):
            row = await self.conn.fetchrow(self.q["get_state"], self.account, self.resource)
        return SyncState(row["watermark"], row["checkpoint"]) if row else SyncState(None, None)

    async def save_checkpoint(self, checkpoint: dict[str, Any] | None) -> None:
        async with translate("save_checkpoint"):
            await self.conn.execute(self.q["save_checkpoint"], self.account, self.resource, checkpoint)

    async def complete(self, watermark: datetime | None, mark_missing: bool = False) -> int:
        """A finished scan: mark the offers it did not see (a full offer scan this session read
        from page 1), advance the watermark, drop the checkpoint, in one transaction. Returns
        the number of offers newly marked missing."""
        marked = 0
        async with translate("complete_state"), self.conn.transaction():
            if mark_missing:
                marked = (await self.conn.fetchrow(self.q["mark_missing_offers"], self.account))["marked"]
            await self.conn.execute(self.q["complete_state"], self.account, self.resource, watermark)
        return marked


async def close_on_pool(
    pool: asyncpg.Pool, queries: dict[str, str], args: tuple[Any, ...], drop_session: tuple[int, datetime] | None = None
) -> bool:
    """Close a run on a pool session (save_progress `args` carrying a status); False when it
    was already closed (e.g. by the monitor). `drop_session` (pid, backend_start): first end
    that session of the run's, which may hold the row's lock."""
    async with translate("finish_run"), pool.acquire() as conn:
        if drop_session is not None:
            await conn.execute(queries["terminate_session"], *drop_session)
        return bool(await conn.fetch(queries["save_progress"], *args))


async def unlock(conn: asyncpg.Connection, sql: str, key: int) -> None:
    # A broken connection has lost its session, and the lock with it; the pool discards it
    # (its reset also runs pg_advisory_unlock_all()).
    with contextlib.suppress(*DRIVER_ERRORS):
        await conn.fetchval(sql, key)


def _columns(rows: Sequence[Any], names: Sequence[str]) -> list[list[Any]]:
    return [[getattr(r, name) for r in rows] for name in names]
