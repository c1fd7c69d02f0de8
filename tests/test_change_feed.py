"""The ERP's change feed: every insert or content change (an offer going missing included)
takes a number from one sequence, in commit order, so `WHERE change_seq > $last ORDER BY
change_seq` never misses or re-reads a change; an unchanged re-scan writes nothing at all;
NOTIFY emag_sync_changes wakes a listener after each page that changed rows."""

from __future__ import annotations

import asyncio
import json
import time

import anyio
import asyncpg

from sandbox import Market, Sandbox
from sandbox.testbed import connection, wait_blocked_by
from tests.harness import make_settings, sync

# What an ERP runs; orders never go missing (they stay on eMAG), offers may.
FEEDS = {
    table: f"SELECT account, id, change_seq, content_hash, {missing} AS missing_since "
    f"FROM emag_sync.{table} WHERE change_seq > $1 ORDER BY change_seq"
    for table, missing in (("offers", "missing_since"), ("orders", "NULL::timestamptz"))
}


MARKET = {"offers": 600, "orders": 300, "seed": 5}  # the conftest's market fixture


async def _versions(conn: asyncpg.Connection, table: str) -> dict[tuple[str, int], tuple]:
    """Every row's physical identity: the same tuple (ctid, xmin, xmax) means untouched."""
    rows = await conn.fetch(
        f"SELECT account, id, ctid::text AS ctid, xmin::text AS xmin, xmax::text AS xmax FROM emag_sync.{table}"
    )
    return {(r["account"], r["id"]): (r["ctid"], r["xmin"], r["xmax"]) for r in rows}


async def test_an_unchanged_rescan_writes_nothing_and_missing_offers_are_still_found(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    async with Sandbox(market, rate_mode="off") as sb:
        settings = make_settings(db_url, sb.base_url)
        assert {r.status for r in await sync(settings, mode="full")} == {"completed"}
        before = {t: await _versions(conn, t) for t in ("offers", "orders")}
        results = await sync(settings, mode="full")  # every offer and every order read again
        assert {r.status for r in results} == {"completed"}
        assert sum(r.progress.items_seen for r in results) == 2 * (600 + 300)
        assert {t: await _versions(conn, t) for t in ("offers", "orders")} == before  # not one row touched
        removed = set(market.account("main").remove_offers(3))
        await sync(settings, resources=("offers",))
    missing = {r["id"] for r in await conn.fetch("SELECT id FROM emag_sync.offers WHERE missing_since IS NOT NULL")}
    after = await _versions(conn, "offers")
    assert missing == removed
    untouched = {key for key, version in before["offers"].items() if key[1] not in removed}
    assert all(after[key] == before["offers"][key] for key in untouched)


async def test_change_numbers_become_visible_in_the_order_they_were_taken(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    """Two writers: the first takes its number and is slow to commit; the second must not
    commit a later number meanwhile, or a reader would move past the first's and skip it."""
    async with Sandbox(market, rate_mode="off") as sb:
        await sync(make_settings(db_url, sb.base_url, accounts=("main",)), resources=("offers",))
    reader = conn
    async with connection(db_url) as first, connection(db_url) as second:
        last = await reader.fetchval("SELECT max(change_seq) FROM emag_sync.offers")
        await first.execute("BEGIN")
        await first.execute(
            "UPDATE emag_sync.offers SET content_hash = '\\x01' WHERE id = (SELECT min(id) FROM emag_sync.offers)"
        )
        await second.execute("BEGIN")
        later = asyncio.ensure_future(
            second.execute(
                "UPDATE emag_sync.offers SET content_hash = '\\x02' WHERE id = (SELECT max(id) FROM emag_sync.offers); "
                "COMMIT"
            )
        )
        await wait_blocked_by(first)
        assert not later.done()  # waits for the first writer's commit...
        assert await reader.fetch(FEEDS["offers"], last) == []  # ...so nothing is visible yet
        await first.execute("COMMIT")
        await asyncio.wait_for(later, 5)
        seen = [r["change_seq"] for r in await reader.fetch(FEEDS["offers"], last)]
        assert seen == [last + 1, last + 2]


async def test_the_erp_sees_every_change_once_while_the_marketplace_changes_mid_scan(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    reader = conn  # the ERP's session
    read: dict[str, list[tuple]] = {"offers": [], "orders": []}
    last = {"offers": 0, "orders": 0}

    async def follow() -> None:  # the ERP: poll the feed as fast as it likes
        for table in read:
            for row in await reader.fetch(FEEDS[table], last[table]):
                read[table].append(tuple(row))
                last[table] = row["change_seq"]

    async with Sandbox(market, rate_mode="off", latency_s=0.02) as sb:
        settings = make_settings(db_url, sb.base_url)
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def erp() -> None:
                while not done.is_set():
                    await follow()
                    await anyio.sleep(0.01)

            async def churn() -> None:  # the marketplace changes while the scans page
                for _ in range(8):
                    await anyio.sleep(0.15)
                    for name in ("main", "fbe"):
                        account = market.account(name)
                        account.mutate_offers(15)
                        account.add_offers(3)
                        account.remove_offers(2)
                        account.mutate_orders(10)
                        account.add_orders(2)

            tg.start_soon(erp)
            tg.start_soon(churn)
            await sync(settings, mode="full", limits=True)  # eMAG's pace: the churn lands mid-scan
            await sync(settings, mode="full")  # catches what changed behind the first scans
            done.set()
        await follow()
    for table in read:
        numbers = [row[2] for row in read[table]]
        assert numbers == sorted(set(numbers)), f"{table}: a change read twice or out of order"
        latest = {
            (r["account"], r["id"]): (r["change_seq"], r["content_hash"], r["missing_since"])
            for r in await reader.fetch(FEEDS[table], 0)
        }
        erp_view = {(row[0], row[1]): (row[2], row[3], row[4]) for row in read[table]}
        assert erp_view == latest, f"{table}: the ERP's copy differs from the table"
    assert any(row[4] is not None for row in read["offers"])  # disappearances came through the feed


async def test_a_listener_hears_each_page_that_changed_rows(
    db_url: str, conn: asyncpg.Connection, market: Market
) -> None:
    listener = conn
    heard: list[tuple[float, dict]] = []
    await listener.add_listener(
        "emag_sync_changes", lambda *args: heard.append((time.monotonic(), json.loads(args[3])))
    )
    async with Sandbox(market, rate_mode="off") as sb:
        settings = make_settings(db_url, sb.base_url, accounts=("main",))
        await sync(settings)
        await asyncio.sleep(0.2)
        first = list(heard)
        await sync(settings)  # nothing changed: nothing to hear
        await asyncio.sleep(0.2)
        assert heard == first
        market.account("main").mutate_offers(1)
        await sync(settings, resources=("offers",))
        await asyncio.sleep(0.2)
    newest = {(n["account"], n["resource"]): n["change_seq"] for _, n in heard}
    for resource in ("offers", "orders"):
        top = await listener.fetchval(f"SELECT max(change_seq) FROM emag_sync.{resource} WHERE account = 'main'")
        assert newest[("main", resource)] == top  # the payload names the newest committed change
    assert len([n for _, n in first if n["resource"] == "offers"]) == 6  # one per page that changed rows
    assert len(heard) == len(first) + 1
    # any writer is announced, not only the daemon's queries: the tables' triggers send it
    seq = await listener.fetchval(
        "UPDATE emag_sync.orders SET content_hash = '\\x01' WHERE account = 'main' "
        "AND id = (SELECT min(id) FROM emag_sync.orders) RETURNING change_seq"
    )
    await asyncio.sleep(0.2)
    assert heard[-1][1] == {"account": "main", "resource": "orders", "change_seq": seq}
