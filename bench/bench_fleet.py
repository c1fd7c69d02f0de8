"""The fleet and the ERP: daemons sharing logins, restarts, "sync now".

    .venv/bin/python bench/bench_fleet.py              # all three
    .venv/bin/python bench/bench_fleet.py --fleet      # 3 daemons x 20 logins, 5 s cycles, 60 ms latency, 50 s
    .venv/bin/python bench/bench_fleet.py --restart    # a daemon restarted 5 times mid-scan
    .venv/bin/python bench/bench_fleet.py --trigger    # request-to-start latency, runs per 10 presses

Real processes: the sandbox (eMAG's limits enforced the strictest way, sliding 1 s and 60 s
windows per login) and `emag-sync run`, on a scratch database. Exits non-zero on any 429,
a request served later than 1 s on an idle pair, or more than 2 runs for 10 presses.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sandbox import DEFAULT_LOGINS
from sandbox.testbed import (
    account_args,
    config_doc,
    daemons_sharing,
    drop_db,
    dsn_for,
    migrated_db,
    numbered_logins,
    press_sync_now,
    query,
    sandbox_process,
    served_after,
    start_emag_sync,
    stop,
    sync_now,
    throttled,
    wait_for_runs,
    wait_until,
    write_config,
)

MAIN = {"main": DEFAULT_LOGINS["main"]}


def sandbox_args(offers: int, orders: int) -> list[str]:
    return ["--offers", str(offers), "--orders", str(orders), "--latency-ms", "60"]


def fleet(db_url: str, work: Path, seconds: float) -> bool:
    logins = numbered_logins(20)
    schedule = {"offers_interval_s": 5, "orders_interval_s": 5, "jitter_s": 1, "shutdown_grace_s": 1}
    with daemons_sharing(work, db_url, logins, 3, sandbox_args(400, 120), schedule=schedule, quick=False) as (
        base_url,
        procs,
    ):
        time.sleep(seconds)
        codes = [stop(p) for p in procs]
        count = throttled(base_url, list(logins))
    runs = query(
        db_url,
        "SELECT count(*) AS n, count(DISTINCT pid) AS pids, sum(api_requests) AS requests FROM emag_sync.sync_runs",
    )[0]
    ok = count == 0 and codes == [0, 0, 0]
    print(
        f"fleet: 3 daemons x 20 logins, 5 s cycles, 60 ms latency, {seconds:.0f} s: {runs['n']} runs from "
        f"{runs['pids']} processes, {runs['requests']} requests, 429s {count} (target 0) -> {'OK' if ok else 'MISSED'}"
    )
    return ok


def restart(db_url: str, work: Path, lives: int = 5) -> bool:
    with sandbox_process(work, *sandbox_args(3000, 50), *account_args(MAIN)) as base_url:
        schedule = {"offers_interval_s": 30, "orders_interval_s": 30, "jitter_s": 0.1, "shutdown_grace_s": 0.2}
        doc = config_doc(db_url, base_url, MAIN, schedule=schedule, quick=False)
        restart_toml = write_config(work / "restart.toml", doc)
        for life in range(lives):
            proc = start_emag_sync(restart_toml, "run", log=work / f"life{life}.log")
            try:
                wait_for_runs(db_url, "status = 'running' AND resource = 'offers' AND pages_done >= 3", 60, "a scan")
            finally:
                stop(proc, signal.SIGTERM)
        count = throttled(base_url, list(MAIN))
    ok = count == 0
    print(
        f"restart: a daemon stopped mid-scan and started again at once, {lives} times: 429s {count} (target 0) "
        f"-> {'OK' if ok else 'MISSED'}"
    )
    return ok


def trigger(db_url: str, work: Path) -> bool:
    schedule = {"offers_interval_s": 3600, "orders_interval_s": 3600, "jitter_s": 0.2, "shutdown_grace_s": 0.5}
    with daemons_sharing(work, db_url, MAIN, 1, sandbox_args(300, 600), schedule=schedule, quick=False):
        wait_for_runs(db_url, "status = 'completed'", 60, "the first runs", count=2)
        latencies = []
        for _ in range(10):
            time.sleep(1.2)  # the pair is idle again
            latencies.append(served_after(db_url, sync_now(db_url, "main", "orders")))
        wait_until(lambda: not query(db_url, "SELECT 1 FROM emag_sync.sync_runs WHERE status = 'running'"), 30, "quiet")
        time.sleep(1.2)
        runs = len(press_sync_now(db_url, "main", "orders", 10, timeout_s=30, settle_s=2))
    ok = max(latencies) < 1.0 and runs <= 2
    print(
        f"trigger: request to run start on an idle pair: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"max {max(latencies) * 1000:.0f} ms (target < 1 s); 10 presses in 1 s -> {runs} runs (target <= 2) "
        f"-> {'OK' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--fleet", "--restart", "--trigger"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--seconds", type=float, default=50.0, help="how long the fleet runs")
    args = parser.parse_args()
    chosen = [name for name in ("fleet", "restart", "trigger") if getattr(args, name)] or [
        "fleet",
        "restart",
        "trigger",
    ]
    ok = True
    for name in chosen:
        db = asyncio.run(migrated_db("emag_sync_bench"))
        try:
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as work:
                if name == "fleet":
                    ok = fleet(dsn_for(db), Path(work), args.seconds) and ok
                else:
                    ok = {"restart": restart, "trigger": trigger}[name](dsn_for(db), Path(work)) and ok
        finally:
            asyncio.run(drop_db(db))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
