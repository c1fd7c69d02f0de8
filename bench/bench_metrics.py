"""Scrape latency of the monitor's /metrics with 100,000 rows of run history.

    .venv/bin/python bench/bench_metrics.py                  # 100k runs, 200 scrapes
    .venv/bin/python bench/bench_metrics.py --rows 1000000 --scrapes 100

Creates a scratch database on $EMAG_SYNC_TEST_DSN's server, migrates it, inserts the
runs across 6 accounts x 2 resources (mostly completed, some failed/timeout/cancelled,
one running run per account), runs one recovery pass (as the resident monitor would),
starts the monitor's HTTP app on 127.0.0.1 port 0, requests /metrics N times over one
connection and prints median / p95 latency. Drops the database. Exits 1 when the median
is above the target (50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp
import asyncpg

from daemon import logs
from daemon.config import parse
from daemon.store import Store, lock_key
from monitor.http import MonitorContext, serve_http
from monitor.recovery_loop import run_pass
from monitor.state import MonitorState
from sandbox import Login
from sandbox.testbed import config_doc, drop_db, dsn_for, migrated_db

ACCOUNTS = [f"acct{i}" for i in range(6)]
TARGET_MEDIAN_MS = 50.0


async def fill(url: str, rows: int) -> float:
    """`rows` runs over the last 60 days, one every few minutes per pair, plus one running run per account."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO emag_sync.sync_runs (account, resource, mode, trigger, status, started_at, heartbeat_at,
                   finished_at, pages_done, items_seen, items_written, api_requests, api_retries, api_throttled,
                   error, host, pid, lock_key)
            SELECT a.account, r.resource, 'incremental', 'schedule', s.status,
                   now() - make_interval(secs => g * 60.0), now() - make_interval(secs => g * 60.0 - 20),
                   now() - make_interval(secs => g * 60.0 - 20), 3, 250, g % 7, 4, g % 3, (g % 50 = 0)::int,
                   CASE WHEN s.status <> 'completed' THEN 'bench: ' || s.status END, 'bench', 1, 0
              FROM generate_series(1, $1::int) g
             CROSS JOIN LATERAL (SELECT $2::text[] AS accounts) x
             CROSS JOIN LATERAL (SELECT x.accounts[1 + g % array_length(x.accounts, 1)] AS account) a
             CROSS JOIN LATERAL (SELECT CASE WHEN (g / 6) % 2 = 0 THEN 'orders' ELSE 'offers' END AS resource) r
             CROSS JOIN LATERAL (SELECT CASE WHEN g % 97 = 0 THEN 'failed' WHEN g % 193 = 0 THEN 'timeout'
                                             WHEN g % 389 = 0 THEN 'cancelled' ELSE 'completed' END AS status) s
        """,
            rows,
            ACCOUNTS,
        )
        await conn.execute(
            "INSERT INTO emag_sync.sync_state (account, resource) SELECT a, r FROM unnest($1::text[]) a, "
            "unnest(ARRAY['offers', 'orders']) r",
            ACCOUNTS,
        )
        for account in ACCOUNTS:
            await conn.execute(
                "INSERT INTO emag_sync.sync_runs (account, resource, mode, trigger, host, pid, lock_key) "
                "VALUES ($1, 'offers', 'full', 'schedule', 'bench', 1, $2)",
                account,
                lock_key("emag_sync", account, "offers"),
            )
        await conn.execute("VACUUM ANALYZE emag_sync.sync_runs")
        await conn.execute("VACUUM ANALYZE emag_sync.sync_run_totals")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def scrape(url: str, count: int) -> tuple[list[float], int, int]:
    logins = {a: Login(a, "bench") for a in ACCOUNTS}
    doc = config_doc(url, "http://127.0.0.1:9", logins, quick=False)
    settings = parse({**doc, "monitor": {"listen": "127.0.0.1:0"}}, env={})
    store = await Store.open(settings.database, max_size=4, application_name="bench-metrics")
    try:
        state = MonitorState()
        await run_pass(store, settings, state, "bench h:1")
        async with serve_http(MonitorContext(settings, state, store), "127.0.0.1", 0) as (host, port):
            latencies: list[float] = []
            async with aiohttp.ClientSession() as session:
                for i in range(count + 10):  # 10 warm-up scrapes
                    t0 = time.perf_counter()
                    async with session.get(f"http://{host}:{port}/metrics") as response:
                        body = await response.read()
                        assert response.status == 200, response.status
                    if i >= 10:
                        latencies.append((time.perf_counter() - t0) * 1000)
            return latencies, len(body), body.count(b"\n")
    finally:
        await store.close()


async def main(rows: int, count: int) -> int:
    logs.configure("kv", "warning")
    name = await migrated_db("emag_sync_bench")
    try:
        url = dsn_for(name)
        fill_s = await fill(url, rows)
        latencies, size, lines = await scrape(url, count)
    finally:
        await drop_db(name)
    latencies.sort()
    median = statistics.median(latencies)
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    ok = median <= TARGET_MEDIAN_MS
    print(
        f"bench_metrics: {rows} runs ({len(ACCOUNTS)} accounts x 2 resources, filled in {fill_s:.1f}s), "
        f"{count} scrapes of {size} bytes / {lines} lines: median {median:.1f} ms, p95 {p95:.1f} ms, "
        f"max {latencies[-1]:.1f} ms (target median <= {TARGET_MEDIAN_MS:g} ms) {'OK' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=200)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rows, args.scrapes)))
