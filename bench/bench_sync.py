"""Sync speed against eMAG's rate-limit floor, and memory that stays flat with catalog size.

    .venv/bin/python bench/bench_sync.py            # speed: 2 accounts x 1,275 offers, limits on,
                                                     # 250 ms +- 50 ms latency; then memory 10k vs 100k
    .venv/bin/python bench/bench_sync.py --speed     # only the speed figure
    .venv/bin/python bench/bench_sync.py --memory    # only the memory figures

The floor is requests needed / 3 req/s per account (accounts run in parallel, each
login has its own budget). Exits non-zero when a target is missed: time > 1.10 x floor,
any 429, or peak RSS at 100k offers more than 1.5 x the 10k figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from daemon import logs
from daemon.config import parse
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_many
from daemon.sync.run import RunRequest
from sandbox import Market, Sandbox
from sandbox.testbed import config_doc, drop_db, dsn_for, migrated_db

OTHER_PER_S = 3.0


async def sync_offers(db_url: str, base_url: str, accounts: list[str], limits: bool) -> tuple[float, list]:
    settings = parse(config_doc(db_url, base_url, accounts=accounts, resources=["offers"], quick=False), env={})
    store = await Store.open(settings.database)
    try:
        requests = [RunRequest(settings.account(a), "offers", "full", "bench") for a in accounts]
        async with Clients(settings, unlimited=not limits) as clients:
            began = time.perf_counter()
            results = await run_many(store, clients, settings.sync, requests)
            return time.perf_counter() - began, results
    finally:
        await store.close()


async def speed(offers: int) -> bool:
    market = Market.with_default_accounts(offers=offers, orders=0, seed=3)
    name = await migrated_db("emag_sync_bench")
    try:
        async with Sandbox(market, latency_s=0.25, jitter_s=0.05, rate_mode="sliding") as sb:
            elapsed, results = await sync_offers(dsn_for(name), sb.base_url, ["main", "fbe"], limits=True)
            throttled = sum(market.account(a).stats.throttled for a in ("main", "fbe"))
    finally:
        await drop_db(name)
    pages = math.ceil(offers / 100)
    requests = pages + 1 + (1 if offers % 100 == 0 else 0)  # count + reads (+ the empty page after a full one)
    floor = requests / OTHER_PER_S
    ratio = elapsed / floor
    ok = all(r.status == "completed" for r in results) and throttled == 0 and ratio <= 1.10
    print(
        f"speed: 2 accounts x {offers} offers, limits on, latency 250+-50 ms: {elapsed:.2f} s, "
        f"floor {floor:.2f} s ({requests} requests / 3 req/s per account), ratio {ratio:.3f} (target <= 1.10), "
        f"429s {throttled}, statuses {sorted({r.status for r in results})} -> {'OK' if ok else 'MISSED'}"
    )
    return ok


async def child(offers: int) -> None:
    market = Market.with_default_accounts(offers=offers, orders=0, seed=3)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    name = await migrated_db("emag_sync_bench")
    try:
        async with Sandbox(market, rate_mode="off") as sb:
            # The sandbox's own records live in this process: measure the sync's growth beyond them.
            elapsed, results = await sync_offers(dsn_for(name), sb.base_url, ["main"], limits=False)
    finally:
        await drop_db(name)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "offers": offers,
                "elapsed_s": elapsed,
                "status": results[0].status,
                "rss_before_kib": base_rss,
                "rss_peak_kib": peak,
                "growth_kib": peak - base_rss,
            }
        )
    )


def memory() -> bool:
    figures = {}
    for offers in (10_000, 100_000):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(offers)], capture_output=True, text=True, check=True, timeout=1200
        )
        figures[offers] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = figures[10_000], figures[100_000]
    ratio = large["growth_kib"] / max(small["growth_kib"], 1)
    ok = small["status"] == large["status"] == "completed" and ratio <= 1.5
    print(
        f"memory: sync growth over the sandbox's own data: 10k offers {small['growth_kib'] / 1024:.1f} MiB "
        f"({small['elapsed_s']:.1f} s), 100k offers {large['growth_kib'] / 1024:.1f} MiB "
        f"({large['elapsed_s']:.1f} s), ratio {ratio:.2f} (target <= 1.5) -> {'OK' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--offers", type=int, default=1275)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logs.configure("kv", "warning")
    if args.child:
        asyncio.run(child(args.child))
        return 0
    both = not (args.speed or args.memory)
    ok = True
    if args.speed or both:
        ok &= asyncio.run(speed(args.offers))
    if args.memory or both:
        ok &= memory()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
