"""The sync engine end to end: real PostgreSQL, the sandbox over real HTTP.

Fidelity (tables equal the sandbox field by field), every fault mode ending by itself
with a terminal row, transient faults losing nothing, and the run history.
"""

from __future__ import annotations

import asyncpg
import pytest

from sandbox import Fault, Market, Sandbox
from tests.harness import assert_fidelity, make_settings, sync, with_sync

MARKET = {"offers": 450, "orders": 260, "seed": 7}  # the conftest's market fixture


async def _runs(conn: asyncpg.Connection) -> list[dict]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM emag_sync.sync_runs ORDER BY id")]


async def test_full_then_incremental_fidelity_two_accounts(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    async with Sandbox(market, rate_mode="off") as sb:
        settings = make_settings(db_url, sb.base_url)
        results = await sync(settings)
        assert [(r.account, r.resource, r.status) for r in results] == [
            ("fbe", "offers", "completed"),
            ("fbe", "orders", "completed"),
            ("main", "offers", "completed"),
            ("main", "orders", "completed"),
        ]
        for account in ("main", "fbe"):
            await assert_fidelity(conn, market, account)

        changed: dict[str, set[int]] = {}
        for account in ("main", "fbe"):
            acc = market.account(account)
            mutated = set(acc.mutate_offers(25)) | set(acc.add_offers(7))
            changed[account] = mutated - set(acc.remove_offers(4))
            acc.mutate_orders(30)
            acc.add_orders(5)
        results = await sync(settings)
        assert {r.status for r in results} == {"completed"}
        for account in ("main", "fbe"):
            await assert_fidelity(conn, market, account)
        by_pair = {(r.account, r.resource): r.progress for r in results}
        # incremental orders re-read only what changed (plus the overlap window), not all 260
        assert by_pair[("main", "orders")].items_seen < 100
        assert by_pair[("main", "offers")].items_written == len(changed["main"])
        assert by_pair[("main", "offers")].items_unchanged == 450 + 7 - 4 - len(changed["main"])

    missing = await conn.fetchval("SELECT count(*) FROM emag_sync.offers WHERE missing_since IS NOT NULL")
    assert missing == 8  # removed offers are marked, never deleted
    dupes = await conn.fetchval("SELECT count(*) - count(DISTINCT (account, id)) FROM emag_sync.orders")
    assert dupes == 0


TRANSIENT = [
    pytest.param([Fault("status", resource="offers", page=2, times=3, status=503)], id="5xx-burst"),
    pytest.param(
        [
            Fault("status", resource="orders", page=1, times=2, status=502),
            Fault("status", resource="offers", page=3, times=2, status=504),
        ],
        id="502-504",
    ),
    pytest.param([Fault("reset", resource="offers", page=2, times=2)], id="connection-reset"),
    pytest.param([Fault("hang", resource="offers", page=3, times=1, seconds=3600)], id="one-hang"),
    pytest.param([Fault("malformed", resource="orders", page=1, times=1)], id="malformed-json"),
    pytest.param([Fault("throttle", resource="offers", page=2, times=2)], id="forced-429"),
]


@pytest.mark.parametrize("faults", TRANSIENT)
async def test_transient_faults_lose_nothing(
    db_url: str, conn: asyncpg.Connection, market: Market, faults: list[Fault]
) -> None:
    market.account("main").faults.add(faults)
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(make_settings(db_url, sb.base_url, accounts=("main",)), read_timeout_s=1.0)
        results = await sync(settings)
    assert {r.status for r in results} == {"completed"}, [r.error for r in results]
    assert sum(r.progress.api_retries for r in results) >= 1
    await assert_fidelity(conn, market, "main")


FATAL = [
    pytest.param(
        Fault("is_error", resource="offers", page=2, times=0, message="Invalid vendor ip [1.2.3.4]"),
        "failed",
        "Invalid vendor ip",
        id="is-error",
    ),
    pytest.param(Fault("auth", resource="offers", times=0), "failed", "not allowed", id="auth-403"),
    pytest.param(Fault("repeat_page", resource="offers", page=3, times=0), "failed", "repeats", id="repeat-page"),
    pytest.param(Fault("endless", resource="offers", times=0), "failed", "count said", id="endless-pages"),
    pytest.param(
        Fault("lying_count", resource="offers", pages=1, items=50, times=0), "failed", "count said", id="count-too-low"
    ),
    pytest.param(Fault("cap_items", resource="offers", limit=10, times=0), "failed", "capped", id="capped-page-size"),
    pytest.param(Fault("status", resource="offers", page=2, times=0, status=500), "failed", "500", id="5xx-forever"),
]


@pytest.mark.parametrize(("fault", "status", "reason"), FATAL)
async def test_fatal_faults_end_by_themselves_with_a_reason(
    db_url: str, conn: asyncpg.Connection, market: Market, fault: Fault, status: str, reason: str
) -> None:
    if fault.kind == "endless":  # a catalog of whole pages: the page after the last would be empty
        market = Market.with_default_accounts(**{**MARKET, "offers": 400, "orders": 10})
    market.account("main").faults.add([fault])
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(
            make_settings(db_url, sb.base_url, accounts=("main",)),
            retry_attempts=3,
            retry_max_total_s=3.0,
            timeout_s=60.0,
        )
        (result,) = await sync(settings, resources=("offers",))
    assert result.status == status
    assert reason in (result.error or "")
    (row,) = await _runs(conn)
    assert (row["status"], row["finished_at"] is not None) == (status, True)
    assert reason in row["error"]


async def test_lying_count_too_high_still_completes_exactly(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    market.account("main").faults.add([Fault("lying_count", resource="offers", pages=40, items=4000, times=0)])
    async with Sandbox(market, rate_mode="off") as sb:
        (result,) = await sync(make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",))
    assert result.status == "completed"
    await assert_fidelity(conn, market, "main", include_missing=True, resources=("offers",))


async def test_max_pages_fails_loudly_never_truncates(db_url: str, market: Market) -> None:
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(make_settings(db_url, sb.base_url, accounts=("main",)), max_pages=2)
        (result,) = await sync(settings, resources=("offers",))
    assert result.status == "failed" and "max pages reached" in result.error
    assert result.progress.pages_done == 2


async def test_deadline_ends_the_run_as_timeout(db_url: str, conn: asyncpg.Connection, market: Market) -> None:
    async with Sandbox(market, rate_mode="off", latency_s=0.4) as sb:
        settings = with_sync(make_settings(db_url, sb.base_url, accounts=("main",)), timeout_s=1.0, prefetch_pages=1)
        (result,) = await sync(settings, resources=("offers",))
    assert result.status == "timeout"
    (row,) = await _runs(conn)
    assert row["status"] == "timeout" and "deadline" in row["error"]


async def test_invalid_records_are_counted_not_fatal(db_url: str, market: Market) -> None:
    offers = market.account("main").offers
    offers[3]["sale_price"] = "not-a-price"
    offers[10]["general_stock"] = "lots"
    async with Sandbox(market, rate_mode="off") as sb:
        (result,) = await sync(make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",))
    assert result.status == "completed"
    assert result.progress.items_invalid == 2
    assert result.progress.items_written == 450 - 2


async def test_page_by_page_commits_and_resume_after_a_dead_run(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    # The first run dies at page 4 (the page never comes back); pages 1-3 are committed.
    market.account("main").faults.add([Fault("is_error", resource="offers", page=4, times=1)])
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(make_settings(db_url, sb.base_url, accounts=("main",)), prefetch_pages=1)
        (first,) = await sync(settings, resources=("offers",))
        assert first.status == "failed" and first.progress.pages_done == 3
        assert await conn.fetchval("SELECT count(*) FROM emag_sync.offers") == 300
        (second,) = await sync(settings, resources=("offers",))
    assert second.status == "completed"
    assert second.progress.items_seen == 150  # resumed at page 4: pages 4 and 5 only
    await assert_fidelity(conn, market, "main", include_missing=True, resources=("offers",))


async def test_heartbeat_advances_while_waiting_on_the_api(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    import anyio

    market.account("main").faults.add([Fault("hang", resource="offers", page=1, times=1, seconds=2.5)])
    beats: list = []
    async with Sandbox(market, rate_mode="off") as sb:
        settings = with_sync(
            make_settings(db_url, sb.base_url, accounts=("main",)), heartbeat_interval_s=0.2, read_timeout_s=10.0
        )

        synced = anyio.Event()

        async def watch() -> None:  # until the run is done: then page 1 has long arrived
            while not synced.is_set():
                await anyio.sleep(0.1)
                row = await conn.fetchrow("SELECT heartbeat_at, pages_done FROM emag_sync.sync_runs")
                if row and row["pages_done"] == 0:
                    beats.append(row["heartbeat_at"])

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            (result,) = await sync(settings, resources=("offers",))
            synced.set()
    assert result.status == "completed"
    assert len(set(beats)) >= 5  # the row kept beating while page 1 hung for 2.5 s


async def test_each_run_records_the_api_latency_and_the_rate_limiter_wait(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    # eMAG answering in 80 ms, its limits on: the latency is eMAG's, the rest of the time our limiter's
    async with Sandbox(market, rate_mode="sliding", latency_s=0.08) as sb:
        (result,) = await sync(
            make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",), limits=True
        )
    progress = result.progress
    assert result.status == "completed" and progress.api_requests == 6  # count + 5 pages
    assert 0.08 <= progress.api_latency_p50_s <= progress.api_latency_p95_s <= progress.api_latency_max_s < 1.0
    # 6 requests at 3/s: at least ~1.5 s spent waiting for the limiter, not on eMAG
    assert progress.api_wait_s >= 1.3
    (row,) = await _runs(conn)
    assert (row["api_latency_p50_s"], row["api_latency_p95_s"], row["api_latency_max_s"], row["api_wait_s"]) == (
        progress.api_latency_p50_s,
        progress.api_latency_p95_s,
        progress.api_latency_max_s,
        progress.api_wait_s,
    )
