"""The store against a real PostgreSQL: single flight, one-shot close, batch upserts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import asyncpg
import pytest

from daemon.records import OfferRow, OrderRow
from daemon.store import Closed, LockBusy, Progress, Store, lock_key
from daemon.store.lease import CLOSE_ATTEMPT_S
from sandbox.testbed import wait_blocked_by


class _Refusing:
    """A pool whose server refuses every new session."""

    def acquire(self):
        raise OSError("connection refused")


async def _open(lease, mode: str, trigger: str) -> tuple[int, datetime]:
    opened = await lease.open_run(mode, trigger)
    return opened.id, opened.started_at


def offer(i: int, price: str = "10.0000", **extra) -> OfferRow:
    return OfferRow.from_api(
        {"id": i, "part_number": f"SKU-{i}", "sale_price": price, "general_stock": 3, "name": f"Offer {i}", **extra}
    )


async def test_lease_is_single_flight_across_connections_and_processes(store: Store, conn: asyncpg.Connection) -> None:
    async with store.lease("main", "offers"):
        with pytest.raises(LockBusy, match="main/offers: another run holds the lock"):
            async with store.lease("main", "offers"):
                pass
        # another pair is independent
        async with store.lease("main", "orders"):
            pass
        # another process (a plain connection) sees the lock too
        assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key("emag_sync", "main", "offers")) is False
    async with store.lease("main", "offers"):
        pass  # released on exit


async def test_run_row_is_committed_at_open_and_closed_once(store: Store, conn: asyncpg.Connection) -> None:
    async with store.lease("main", "offers") as lease:
        run_id, started = await _open(lease, "full", "manual")
        status = await conn.fetchval("SELECT status FROM emag_sync.sync_runs WHERE id = $1", run_id)
        assert status == "running"  # visible to others before any API request
        assert await lease.finish_run("completed", Progress(pages_done=3), None) is True
        assert await lease.finish_run("failed", Progress(), "late") is False
    (row,) = await store.history(5)
    assert (row["status"], row["pages_done"], row["error"]) == ("completed", 3, None)
    assert row["finished_at"] >= started


async def test_a_run_closes_on_its_own_session_even_if_a_cancel_left_it_in_a_transaction(
    store: Store, conn: asyncpg.Connection
) -> None:
    async with store.lease("main", "offers") as lease:
        run_id, _ = await _open(lease, "full", "manual")
        # what an interrupted page transaction leaves: the session idle in a transaction
        # holding the run row's lock (asyncpg's own ROLLBACK was cancelled too)
        await lease.conn.execute("BEGIN")
        await lease.conn.execute("UPDATE emag_sync.sync_runs SET pages_done = 99 WHERE id = $1", run_id)
        # any other session (the pool's) would wait on that lock
        with pytest.raises(asyncpg.LockNotAvailableError):
            await conn.execute("SELECT 1 FROM emag_sync.sync_runs WHERE id = $1 FOR UPDATE NOWAIT", run_id)
        with anyio.fail_after(5):
            assert await lease.finish_run("cancelled", Progress(pages_done=2), "stopped") is True
    (row,) = await store.history(5)
    assert (row["status"], row["pages_done"], row["error"]) == ("cancelled", 2, "stopped")


async def test_unchanged_offers_are_not_rewritten_nor_locked(store: Store, conn: asyncpg.Connection) -> None:
    async with store.lease("main", "offers") as lease:
        run_id, started = await _open(lease, "full", "manual")
        await lease.begin_scan()
        rows = [offer(i) for i in range(1, 6)]
        assert await lease.commit_offers(rows, Progress(pages_done=1), {"kind": "offers"}) == (5, 0)
        query = "SELECT id, xmin::text::bigint AS xmin, xmax::text::bigint AS xmax, change_seq FROM emag_sync.offers"
        before = {r["id"]: dict(r) for r in await conn.fetch(query)}
        changed = [offer(1, "11.5000")] + rows[1:]
        assert await lease.commit_offers(changed, Progress(pages_done=2), {"kind": "offers"}) == (0, 1)
        after = {r["id"]: dict(r) for r in await conn.fetch(query)}
        assert after[1]["xmin"] != before[1]["xmin"] and after[1]["change_seq"] > max(
            b["change_seq"] for b in before.values()
        )
        # the same tuple, not even row-locked: no new version, no WAL, no change number
        assert all(after[i] == before[i] and after[i]["xmax"] == 0 for i in range(2, 6))
        price = await conn.fetchval("SELECT sale_price::text FROM emag_sync.offers WHERE id = 1")
        assert price == "11.5000"
        progress = await conn.fetchrow("SELECT pages_done FROM emag_sync.sync_runs WHERE id = $1", run_id)
        assert progress["pages_done"] == 2


async def test_offers_absent_from_a_whole_scan_are_marked_not_deleted(store: Store, conn: asyncpg.Connection) -> None:
    async with store.lease("main", "offers") as lease:
        run_id, _ = await _open(lease, "full", "manual")
        await lease.begin_scan()
        await lease.commit_offers([offer(1), offer(2), offer(3)], Progress(), {})
        assert await lease.complete(None, mark_missing=True) == 0
        await lease.begin_scan()  # the next scan sees 1 and 3 only
        await lease.commit_offers([offer(1), offer(3)], Progress(), {})
        assert await lease.complete(None, mark_missing=True) == 1
        await lease.begin_scan()  # a scan resumed after page 1 knows too little to mark anything
        await lease.commit_offers([offer(3)], Progress(), {})
        assert await lease.complete(None, mark_missing=False) == 0
    rows = await conn.fetch("SELECT id, missing_since IS NOT NULL AS missing FROM emag_sync.offers ORDER BY id")
    assert [(r["id"], r["missing"]) for r in rows] == [(1, False), (2, True), (3, False)]


async def test_orders_keyed_by_account_and_bigint_id(store: Store, conn: asyncpg.Connection) -> None:
    tz = ZoneInfo("Europe/Bucharest")
    big = 2**31 + 17
    row = OrderRow.from_api({"id": big, "status": 1, "modified": "2026-11-01 10:00:00"}, tz)
    for account in ("main", "fbe"):
        async with store.lease(account, "orders") as lease:
            run_id, _ = await _open(lease, "incremental", "manual")
            assert await lease.commit_orders([row], Progress(), {"kind": "orders"}) == (1, 0)
            assert await lease.commit_orders([row], Progress(), {"kind": "orders"}) == (0, 0)
            await lease.complete(watermark=datetime(2026, 11, 1, tzinfo=UTC))
    assert await conn.fetchval("SELECT count(*) FROM emag_sync.orders WHERE id = $1", big) == 2
    async with store.lease("main", "orders") as lease:
        state = await lease.state()
    assert state.watermark == datetime(2026, 11, 1, tzinfo=UTC) and state.checkpoint is None


async def test_lease_slots_bound_concurrent_leases(db_settings) -> None:
    store = await Store.open(db_settings, max_size=3)  # one lease slot: two connections kept free
    try:
        order: list[str] = []

        async def hold(name: str) -> None:
            async with store.lease(name, "offers") as lease:
                order.append(f"{name}+")
                await anyio.sleep(0.2)
                await lease.heartbeat(Progress())  # needs a free connection meanwhile
                order.append(f"{name}-")

        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, "a")
            tg.start_soon(hold, "b")
        assert order in (["a+", "a-", "b+", "b-"], ["b+", "b-", "a+", "a-"])
    finally:
        await store.close()


async def test_a_run_closes_even_when_a_cancel_left_its_session_busy_and_holding_the_row(
    store: Store, conn: asyncpg.Connection
) -> None:
    blocker = conn  # another session, holding a lock the run's next statement waits on
    try:
        async with store.lease("main", "offers") as lease:
            run_id, _ = await _open(lease, "full", "manual")
            # mid-page: the session has updated (and row-locked) the run's row and is stuck in its next
            # statement, behind a lock another session holds; no statement can run on it meanwhile
            await blocker.execute("BEGIN; LOCK TABLE emag_sync.sync_state IN ACCESS EXCLUSIVE MODE")
            await lease.conn.execute("BEGIN")
            await lease.conn.execute("UPDATE emag_sync.sync_runs SET pages_done = 99 WHERE id = $1", run_id)
            stuck = asyncio.ensure_future(lease.conn.execute("SELECT count(*) FROM emag_sync.sync_state"))
            await wait_blocked_by(blocker)
            began = time.monotonic()
            closed, failures = await lease.close_run("cancelled", Progress(pages_done=2), "stopped")
            took = time.monotonic() - began
            with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await stuck
    finally:
        await blocker.execute("ROLLBACK")  # the lock goes
    assert closed is Closed.NOW and took < CLOSE_ATTEMPT_S + 1
    assert len(failures) == 1 and "another operation is in progress" in failures[0]
    (row,) = await store.history(5)
    assert (row["status"], row["pages_done"], row["error"]) == ("cancelled", 2, "stopped")
    assert not store.deferred


async def test_a_run_that_ends_while_the_database_is_away_is_closed_once_it_answers(store: Store) -> None:
    async with store.lease("main", "orders") as lease:
        run_id, _ = await _open(lease, "incremental", "schedule")
        await lease.conn.close()  # the server went away under the run's session...
        real_pool = lease.pool
        lease.pool = store.pool = _Refusing()  # ...and refuses new ones
        closed, _ = await lease.close_run("failed", Progress(pages_done=1), "save_progress: database unavailable")
        assert closed is Closed.LATER and run_id in store.deferred
        assert await store.close_deferred() == [] and run_id in store.deferred  # still away: kept
        lease.pool = store.pool = real_pool  # it is back
    (late,) = await store.close_deferred()
    assert late.run_id == run_id and not store.deferred
    (row,) = await store.history(5)
    assert row["status"] == "failed" and row["pages_done"] == 1
    assert row["error"].startswith("save_progress: database unavailable; row closed late: the database was unreachable")
