"""Rows PostgreSQL rewrites when nothing changed: a second full run and an incremental run
of 2 accounts x 1,275 offers and 300 orders, then one with 5 offers gone (still found).

    .venv/bin/python bench/bench_rescan.py

Counts come from pg_stat_user_tables (n_tup_upd, n_tup_hot_upd, n_tup_ins) before and after
each run; the daemon's sessions end with each run, which flushes their statistics. Exits
non-zero when an unchanged re-scan rewrites a row, or missing offers are not found.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import asyncpg

from daemon import logs
from daemon.config import parse
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_many
from daemon.sync.run import RunRequest
from sandbox import Market, Sandbox
from sandbox.testbed import config_doc, drop_db, dsn_for, migrated_db

ACCOUNTS = ("main", "fbe")


async def table_writes(db_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(db_url)
    try:
        await conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = await conn.fetch(
            "SELECT relname, n_tup_upd, n_tup_ins FROM pg_stat_user_tables "
            "WHERE schemaname = 'emag_sync' AND relname IN ('offers', 'orders')"
        )
        return {f"{r['relname']}_{kind}": r[f"n_tup_{kind}"] for r in rows for kind in ("upd", "ins")}
    finally:
        await conn.close()


async def run(db_url: str, base_url: str, mode: str) -> dict[str, int]:
    """One run of every pair; returns the rows it inserted and updated, per table."""
    settings = parse(config_doc(db_url, base_url, accounts=ACCOUNTS, quick=False), env={})
    before = await table_writes(db_url)
    store = await Store.open(settings.database)
    try:
        requests = [RunRequest(settings.account(a), r, mode, "bench") for a in ACCOUNTS for r in ("offers", "orders")]
        async with Clients(settings, unlimited=True) as clients:
            results = await run_many(store, clients, settings.sync, requests)
    finally:
        await store.close()
    assert {r.status for r in results} == {"completed"}, results
    for _ in range(50):  # the backends' statistics arrive as they exit
        after = await table_writes(db_url)
        if after != before or mode == "missing":
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    after = await table_writes(db_url)
    return {key: after[key] - before[key] for key in after}


async def main() -> int:
    logs.configure("kv", "warning")
    market = Market.with_default_accounts(offers=1275, orders=300, seed=3)
    name = await migrated_db("emag_sync_bench")
    try:
        async with Sandbox(market, rate_mode="off") as sb:
            first = await run(dsn_for(name), sb.base_url, "full")
            full = await run(dsn_for(name), sb.base_url, "full")
            incremental = await run(dsn_for(name), sb.base_url, "incremental")
            for account in ACCOUNTS:
                market.account(account).remove_offers(5)
            missing = await run(dsn_for(name), sb.base_url, "incremental")
    finally:
        await drop_db(name)
    ok = (
        first["offers_ins"] == 2 * 1275
        and full["offers_upd"] == full["orders_upd"] == 0
        and incremental["offers_upd"] == incremental["orders_upd"] == 0
        and missing["offers_upd"] == 2 * 5
    )
    print(
        f"rescan: 2 accounts x 1275 offers + 300 orders; rows rewritten by an unchanged re-scan: full run "
        f"offers {full['offers_upd']}, orders {full['orders_upd']}; incremental run offers "
        f"{incremental['offers_upd']}, orders {incremental['orders_upd']} (target 0; before the change feed "
        f"release: 2550 offers per re-scan); 5 offers gone per account: {missing['offers_upd']} rows marked "
        f"missing -> {'OK' if ok else 'MISSED'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
