"""Failure paths of a run that a happy sandbox never shows: cancels landing inside a
page transaction, bugs and bad credentials at start, early ends of a scan."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

import anyio
import asyncpg
import pytest

from daemon.config import Settings
from daemon.store import Store, StoreError
from daemon.store.lease import RunLease
from daemon.sync import run as run_module
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_pair
from daemon.sync.run import RunRequest
from sandbox import Fault, Market, Sandbox
from sandbox.testbed import wait_blocked_by
from tests.harness import assert_fidelity, make_settings, sync, with_sync

MARKET = {"offers": 450, "orders": 260, "seed": 11}  # the conftest's market fixture


async def _rows(conn: asyncpg.Connection, sql: str) -> list[dict]:
    return [dict(r) for r in await conn.fetch(sql)]


async def test_a_cancel_inside_a_blocked_page_commit_still_closes_the_row(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    # Another session holds the checkpoint row, so page 1's transaction blocks after it has
    # already updated (and row-locked) its sync_runs row; then the run is cancelled.
    blocker = conn
    await blocker.execute("INSERT INTO emag_sync.sync_state (account, resource) VALUES ('main', 'offers')")
    async with blocker.transaction():
        await blocker.execute("SELECT 1 FROM emag_sync.sync_state WHERE account = 'main' FOR UPDATE")
        async with Sandbox(market, rate_mode="off") as sb, anyio.create_task_group() as tg:
            tg.start_soon(partial(sync, make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",)))
            await wait_blocked_by(blocker)  # the page's transaction waits on the checkpoint row
            began = time.monotonic()
            tg.cancel_scope.cancel()
        elapsed = time.monotonic() - began
    (row,) = await _rows(conn, "SELECT status, pages_done, error FROM emag_sync.sync_runs")
    assert row["status"] == "cancelled" and row["pages_done"] == 0
    assert elapsed < 6  # closed at once, not after the close timeout
    assert await _rows(conn, "SELECT id FROM emag_sync.offers") == []  # the blocked page rolled back


async def _run_main_offers(settings: Settings, reload: Settings | None = None):
    """run_pair for main/offers, as the scheduler calls it; `reload` arrives (SIGHUP) just before."""
    store = await Store.open(settings.database)
    try:
        async with Clients(settings) as clients:
            if reload is not None:
                clients.update(reload)
            return await run_pair(store, clients, settings.sync, RunRequest(settings.account("main"), "offers"))
    finally:
        await store.close()


async def test_an_account_dropped_by_a_reload_fails_its_pair_not_the_daemon(db_url: str, market: Market) -> None:
    async with Sandbox(market, rate_mode="off") as sb:
        settings = make_settings(db_url, sb.base_url, accounts=("main",))
        result = await _run_main_offers(settings, reload=make_settings(db_url, sb.base_url, accounts=("fbe",)))
    assert (result.status, result.run_id) == ("failed", None)
    assert "accounts.main: no such account" in result.error


async def test_a_bug_in_a_run_is_a_failed_result_not_a_crash(
    db_url: str, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self, *args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(Clients, "_new", broken)
    async with Sandbox(market, rate_mode="off") as sb:
        result = await _run_main_offers(make_settings(db_url, sb.base_url, accounts=("main",)))
    assert result.status == "failed" and result.error == "internal error: KeyError: 'surprise'"


async def test_a_page_whose_write_fails_is_not_counted(
    db_url: str, conn: asyncpg.Connection, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = RunLease.commit_offers
    calls = 0

    async def third_fails(self: RunLease, *args: Any) -> tuple[int, int]:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StoreError("injected: the page's transaction failed")
        return await commit(self, *args)

    monkeypatch.setattr(RunLease, "commit_offers", third_fails)
    async with Sandbox(market, rate_mode="off") as sb:
        result = await _run_main_offers(make_settings(db_url, sb.base_url, accounts=("main",)))
    progress = result.progress
    assert result.status == "failed" and "injected" in (result.error or "")
    assert (progress.pages_done, progress.items_seen, progress.items_written) == (2, 200, 200)
    (row,) = await _rows(conn, "SELECT pages_done, items_seen, items_written FROM emag_sync.sync_runs")
    assert row == {"pages_done": 2, "items_seen": 200, "items_written": 200}  # the row agrees with the tables
    assert await conn.fetchval("SELECT count(*) FROM emag_sync.offers") == 200


async def test_a_database_too_slow_to_open_the_run_fails_the_pair_saying_so(
    db_url: str, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hangs(self: RunLease, *args: Any) -> None:
        await anyio.sleep(30)

    monkeypatch.setattr(RunLease, "open_run", hangs)
    monkeypatch.setattr(run_module, "OPEN_TIMEOUT_S", 0.2)
    async with Sandbox(market, rate_mode="off") as sb:
        result = await _run_main_offers(make_settings(db_url, sb.base_url, accounts=("main",)))
    assert (result.status, result.error) == ("failed", "open_run: no answer from the database within 0.2 s")


async def test_an_early_empty_page_fails_the_scan_and_the_next_run_resumes(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    market.account("main").faults.add([Fault("empty_page", resource="offers", page=3, times=1)])
    async with Sandbox(market, rate_mode="off") as sb:
        settings = make_settings(db_url, sb.base_url, accounts=("main",))
        (first,) = await sync(settings, resources=("offers",))
        assert first.status == "failed" and first.progress.pages_done == 2
        assert "ended the scan after page 2 of 5 counted" in first.error
        (second,) = await sync(settings, resources=("offers",))
    assert second.status == "completed" and second.progress.items_seen == 250  # pages 3-5
    await assert_fidelity(conn, market, "main", resources=("offers",))
    assert await _rows(conn, "SELECT id FROM emag_sync.offers WHERE missing_since IS NOT NULL") == []


async def test_a_catalog_that_shrank_since_the_count_ends_the_scan_cleanly(db_url: str, market: Market) -> None:
    # the count says 5 pages; by the time page 4 is asked, only 3 pages of offers are left
    market.account("main").faults.add([Fault("lying_count", resource="offers", items=450, pages=5, times=0)])
    removed = market.account("main").remove_offers(200)
    async with Sandbox(market, rate_mode="off") as sb:
        (result,) = await sync(make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",))
    assert result.status == "completed" and result.progress.items_seen == 250
    assert len(removed) == 200


async def test_an_order_shifted_past_a_page_boundary_is_not_lost(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    account = market.account("main")
    read = account.read
    slipped: list[int] = []

    def shifting_read(resource, query):
        matching = [o for o in account.orders if query.match(o)]
        if resource == "orders" and query.page == 2 and len(matching) > 2 * query.per_page and not slipped:
            # page 1 was read; now its first order is modified out of the window: every later
            # order moves up one place, and the one that led page 2 would go unread
            slipped.append(matching[query.per_page]["id"])
            matching[0]["modified"] = "2099-01-01 00:00:00"
        return read(resource, query)

    account.read = shifting_read
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(make_settings(db_url, sb.base_url, accounts=("main",)), page_size=20)
        (result,) = await sync(settings, resources=("orders",), mode="full")
    assert slipped, "no window held three pages of orders"
    assert result.status == "completed"
    assert await _rows(conn, f"SELECT id FROM emag_sync.orders WHERE id = {slipped[0]}") == [{"id": slipped[0]}]
    assert await _rows(conn, "SELECT count(*) AS n FROM emag_sync.orders") == [{"n": 260}]
