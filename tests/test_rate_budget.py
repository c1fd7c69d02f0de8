"""One rate budget per eMAG login, whichever process spends it: a run that follows another
process's run of the same login (another daemon, or this daemon's previous life before a
restart) starts where that budget stands, so the sandbox, counting the strictest way
(sliding 1 s and 60 s windows per login), answers no 429."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from daemon.store import Budget, Progress, Store
from sandbox.testbed import config_doc, daemons_sharing, numbered_logins, throttled, wait_for_runs, write_config
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

pytestmark = pytest.mark.slow

IN_FULL_SWING = "status = 'running' AND resource = 'offers' AND pages_done >= 3"


async def test_the_next_run_takes_over_the_budget_the_last_one_handed_back(store: Store) -> None:
    key = ("marketplace-api.emag.ro/seller@example.ro", "other")
    async with store.lease("main", "offers") as lease:
        first = await lease.open_run("full", "schedule", key)
        assert (first.budget.wait_s, first.budget.orphaned) == (0, False)  # a login never used
        lease.budget = lambda: Budget(wait_s=0.8, slowdown=1.5)  # what its limiter says at the close
        await lease.close_run("completed", Progress(), None)
    async with store.lease("main", "offers") as lease:
        second = await lease.open_run("full", "schedule", key)
        # where the previous run left it, on the database's clock, and handed back cleanly
        assert 0.5 < second.budget.wait_s <= 0.8 and second.budget.slowdown == 1.5
        assert not second.budget.orphaned
    async with store.lease("main", "offers") as lease:  # `second` never closed: its process died
        third = await lease.open_run("full", "schedule", key)
        assert third.budget.orphaned


def test_a_restarted_daemon_goes_on_from_its_previous_lifes_budget(db_url: str, tmp_path: Path) -> None:
    """systemctl restart: the old process is stopped mid-scan and the new one starts at once."""
    schedule = {"offers_interval_s": 30.0, "orders_interval_s": 30.0, "jitter_s": 0.1, "shutdown_grace_s": 0.2}
    with sandbox_process(tmp_path, "--offers", "3000", "--orders", "20", "--latency-ms", "20") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url, accounts=("main",), schedule=schedule))
        for life in range(4):  # the first life and three restarts, each stopped mid-scan
            proc = start_emag_sync(config, "run", log=tmp_path / f"d{life}.log")
            try:
                wait_for_runs(db_url, IN_FULL_SWING, 30, f"an offers scan in full swing (life {life})")
            finally:
                assert stop(proc, signal.SIGTERM) == 0
        count = throttled(base_url, ["main"])
    runs = query(db_url, "SELECT status FROM emag_sync.sync_runs WHERE resource = 'offers' ORDER BY id")
    print(f"restart x 3 mid-scan: {len(runs)} offers runs, 429s {count}")
    assert len(runs) >= 4 and count == 0


def test_three_daemons_sharing_twenty_logins_get_no_429(db_url: str, tmp_path: Path) -> None:
    logins = numbered_logins(20)
    schedule = {"offers_interval_s": 5.0, "orders_interval_s": 5.0, "jitter_s": 1.0, "shutdown_grace_s": 1.0}
    sandbox_args = ("--offers", "400", "--orders", "120", "--latency-ms", "60")
    with daemons_sharing(tmp_path, db_url, logins, 3, sandbox_args, schedule=schedule) as (url, procs):
        began = time.monotonic()
        # every pair has run at least three times, handed from process to process
        wait_until(
            lambda: (
                query(
                    db_url,
                    "SELECT min(n) AS n FROM (SELECT count(*) AS n FROM emag_sync.sync_runs "
                    "WHERE status = 'completed' GROUP BY account, resource) c "
                    "HAVING count(*) = 40",
                )[0:1]
                and query(
                    db_url,
                    "SELECT min(n) AS n FROM (SELECT count(*) AS n FROM emag_sync.sync_runs "
                    "WHERE status = 'completed' GROUP BY account, resource) c",
                )[0]["n"]
                >= 3
            ),
            120,
            "three completed runs of every pair",
        )
        took = time.monotonic() - began
        codes = [stop(proc) for proc in procs]
        counts = {name: throttled(url, [name]) for name in logins}
    runs = query(db_url, "SELECT count(*) AS n, count(DISTINCT pid) AS pids FROM emag_sync.sync_runs")[0]
    print(
        f"3 daemons x 20 logins for {took:.0f} s: {runs['n']} runs from {runs['pids']} processes, "
        f"429s {sum(counts.values())}"
    )
    assert codes == [0, 0, 0] and runs["pids"] == 3
    assert sum(counts.values()) == 0, counts
