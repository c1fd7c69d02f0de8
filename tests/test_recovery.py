"""Recovery and retention against a real PostgreSQL: dead runs are failed once, live ones
are reported, nothing closed is ever overwritten, retention keeps what it must."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from daemon import cli as daemon_cli
from daemon.report import status_text
from daemon.store import Store, lock_key
from daemon.store.recovery import fail_if_stuck, recover_stuck, recovery_pass, running_runs, trim_history
from sandbox.testbed import connection, query, toml_text
from tests.history import SCHEMA, insert_run

BY = f"emag-sync-monitor {socket.gethostname()}:4242"


async def status_of(conn: asyncpg.Connection, run_id: int) -> dict[str, Any]:
    row = await conn.fetchrow(f"SELECT status, error, finished_at FROM {SCHEMA}.sync_runs WHERE id = $1", run_id)
    return dict(row) if row else {}


async def test_dead_run_is_failed_within_one_pass_after_the_threshold(conn, store) -> None:
    run_id = await insert_run(conn, heartbeat_ago_s=0, started_ago_s=5)
    report = await recovery_pass(store, stale_after_s=1.0, max_age_s=3600, by=BY)
    assert report.failed == [] and [r.id for r in report.running] == [run_id]
    assert (await status_of(conn, run_id))["status"] == "running"  # heartbeat still fresh
    # time passes: the heartbeat is now older than the threshold
    await conn.execute(f"UPDATE {SCHEMA}.sync_runs SET heartbeat_at = now() - interval '1.2 s' WHERE id = $1", run_id)
    report = await recovery_pass(store, stale_after_s=1.0, max_age_s=3600, by=BY)
    assert [f["id"] for f in report.failed] == [run_id]
    row = await status_of(conn, run_id)
    assert row["status"] == "failed" and row["finished_at"] is not None
    assert row["error"].startswith("stuck: no heartbeat for ")
    assert "lock is gone" in row["error"] and f"by {BY}" in row["error"] and "failed at 20" in row["error"]


async def test_slow_live_run_is_reported_not_failed(db_url, conn, store) -> None:
    run_id = await insert_run(conn, heartbeat_ago_s=600)
    async with connection(db_url) as holder:  # the run's process, holding the pair's lock
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(SCHEMA, "main", "offers"))
        report = await recovery_pass(store, stale_after_s=60, max_age_s=3600, by=BY)
        assert report.failed == [] and [r.id for r in report.stale_alive] == [run_id]
        assert report.running[0].lock_held and not report.running[0].dead
        assert (await status_of(conn, run_id))["status"] == "running"
    # its process dies: the lock goes with its session, and the next pass fails the run
    report = await recovery_pass(store, stale_after_s=60, max_age_s=3600, by=BY)
    assert [f["id"] for f in report.failed] == [run_id]


async def test_run_past_max_age_is_failed_even_with_its_lock_held(db_url, conn, store) -> None:
    run_id = await insert_run(conn, started_ago_s=5 * 3600, heartbeat_ago_s=1)
    async with connection(db_url) as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(SCHEMA, "main", "offers"))
        failed = await recover_stuck(store, stale_after_s=60, max_age_s=4 * 3600, by="emag-sync recover")
    assert [f["id"] for f in failed] == [run_id]
    assert "over the max run age of 14400 s" in failed[0]["error"]
    assert "by emag-sync recover " in failed[0]["error"]


async def test_a_newer_run_of_the_pair_means_the_old_one_lost_the_lock(db_url, conn, store) -> None:
    old = await insert_run(conn, started_ago_s=900, heartbeat_ago_s=800)
    new = await insert_run(conn, started_ago_s=10, heartbeat_ago_s=700)  # stale too, but alive
    async with connection(db_url) as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(SCHEMA, "main", "offers"))
        report = await recovery_pass(store, stale_after_s=60, max_age_s=3600, by=BY)
    assert [f["id"] for f in report.failed] == [old]
    assert [r.id for r in report.stale_alive] == [new]


async def test_two_monitors_at_once_fail_each_run_exactly_once(db_settings, conn) -> None:
    pairs = [(f"acct{i}", r) for i in range(10) for r in ("offers", "orders")]
    ids = {await insert_run(conn, a, r) for a, r in pairs}
    stores = [await Store.open(db_settings, max_size=3) for _ in range(2)]
    results: list[list[dict[str, Any]]] = [[], []]
    try:

        async def monitor(n: int) -> None:
            results[n] = await recover_stuck(stores[n], stale_after_s=60, max_age_s=3600, by=f"monitor-{n} h:{n}")

        async with anyio.create_task_group() as tg:
            for n in range(2):
                tg.start_soon(monitor, n)
    finally:
        for s in stores:
            await s.close()
    failed = [f["id"] for r in results for f in r]
    assert sorted(failed) == sorted(ids)  # every run once, none twice
    errors = await conn.fetch(f"SELECT id, error FROM {SCHEMA}.sync_runs")
    by_row = {r["id"]: r["error"] for r in errors}
    for n, result in enumerate(results):
        assert all(f"by monitor-{n} h:{n}" in by_row[f["id"]] for f in result)
    totals = await conn.fetchval(f"SELECT sum(runs) FROM {SCHEMA}.sync_run_totals WHERE status = 'failed'")
    assert totals == len(ids)  # the trigger counted each failure once


async def test_run_completed_between_detection_and_update_is_not_overwritten(db_url, conn, store) -> None:
    run_id = await insert_run(conn)
    async with connection(db_url) as finisher:  # the daemon's session
        tx = finisher.transaction()
        await tx.start()
        # the daemon's finish_run, not yet committed: the row is locked, still 'running' to others
        await finisher.execute(
            f"UPDATE {SCHEMA}.sync_runs SET status = 'completed', finished_at = now(), "
            "heartbeat_at = now() WHERE id = $1 AND status = 'running'",
            run_id,
        )
        async with anyio.create_task_group() as tg:
            result: list[list[dict[str, Any]]] = []

            async def recover() -> None:
                result.append(await recover_stuck(store, stale_after_s=60, max_age_s=3600, by=BY))

            tg.start_soon(recover)
            with anyio.fail_after(10):  # the monitor detected the run and now waits on the row lock
                while not await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                    "'Lock' AND query LIKE '-- Compare-and-set%'"
                ):
                    await anyio.sleep(0.02)
            await tx.commit()
    assert result == [[]]
    row = await status_of(conn, run_id)
    assert row["status"] == "completed" and row["error"] is None


async def test_the_compare_and_set_rechecks_everything(conn, store) -> None:
    done = await insert_run(conn, status="completed", started_ago_s=900)
    assert await fail_if_stuck(store, done, stale_after_s=60, max_age_s=600, by=BY) is None
    fresh = await insert_run(conn, "fbe", heartbeat_ago_s=1)
    assert await fail_if_stuck(store, fresh, stale_after_s=60, max_age_s=3600, by=BY) is None
    await conn.execute(
        f"UPDATE {SCHEMA}.sync_runs SET heartbeat_at = now() - interval '2 minutes' WHERE id = $1", fresh
    )
    assert (await fail_if_stuck(store, fresh, stale_after_s=60, max_age_s=3600, by=BY))["id"] == fresh
    assert await fail_if_stuck(store, fresh, stale_after_s=60, max_age_s=3600, by=BY) is None  # once
    assert (await status_of(conn, done))["status"] == "completed"


async def test_retention_trims_only_old_closed_runs_in_batches(conn, store) -> None:
    day = 86400
    old_closed = [
        await insert_run(conn, status=s, started_ago_s=100 * day)
        for s in ("failed", "timeout", "cancelled", "completed", "completed", "failed", "completed")
    ]
    last_success = await insert_run(conn, "fbe", status="completed", started_ago_s=95 * day)  # fbe's only success
    old_running = await insert_run(conn, status="running", started_ago_s=100 * day)
    recent = [await insert_run(conn, status="completed", started_ago_s=s) for s in (60, 89 * day)]
    newest_main = await insert_run(conn, status="completed", started_ago_s=30)
    deleted = await trim_history(store, retention_days=90, batch=2, max_batches=100)
    assert deleted == len(old_closed)
    left = {r["id"] for r in await conn.fetch(f"SELECT id FROM {SCHEMA}.sync_runs")}
    assert left == {last_success, old_running, *recent, newest_main}
    # counters never go down when history goes
    assert await conn.fetchval(f"SELECT sum(runs) FROM {SCHEMA}.sync_run_totals") == len(old_closed) + 4


async def test_a_run_counts_the_same_closed_later_or_inserted_closed(conn) -> None:
    """Both ways into sync_run_totals add the same figures, requested runs included."""
    columns = "account, resource, mode, trigger, status, started_at, finished_at, items_seen, api_requests"
    columns += ", host, pid, lock_key"
    values = "'main', 'orders', 'incremental', 'request', $1, now(), CASE $1 WHEN 'running' THEN NULL ELSE now() END"
    values += ", 7, 3, 'h', 1, 0"
    closing = await conn.fetchval(
        f"INSERT INTO {SCHEMA}.sync_runs ({columns}) VALUES ({values}) RETURNING id", "running"
    )
    await conn.execute(
        f"UPDATE {SCHEMA}.sync_runs SET status = 'completed', finished_at = now() WHERE id = $1", closing
    )
    await conn.execute(f"INSERT INTO {SCHEMA}.sync_runs ({columns}) VALUES ({values})", "completed")
    (totals,) = await conn.fetch(f"SELECT runs, items_seen, api_requests, runs_requested FROM {SCHEMA}.sync_run_totals")
    assert dict(totals) == {"runs": 2, "items_seen": 14, "api_requests": 6, "runs_requested": 2}


async def test_trimming_is_bounded_per_call(conn, store) -> None:
    await conn.execute(f"""INSERT INTO {SCHEMA}.sync_runs (account, resource, mode, trigger, status, started_at,
                           finished_at, host, pid, lock_key)
                           SELECT 'main', 'orders', 'incremental', 'test', 'completed', now() - interval '200 days',
                                  now() - interval '200 days', 'h', 1, 0 FROM generate_series(1, 25)""")
    assert await trim_history(store, retention_days=90, batch=10, max_batches=2) == 20
    assert await trim_history(store, retention_days=90, batch=10, max_batches=2) == 5


def test_emag_sync_recover_command(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def setup() -> tuple[int, int]:
        async with connection(db_url) as c:
            return await insert_run(c, heartbeat_ago_s=300), await insert_run(c, "fbe", heartbeat_ago_s=5)

    dead, fresh = asyncio.run(setup())
    config = tmp_path / "emag-sync.toml"
    doc = {
        "database": {"url": db_url},
        "accounts": {"main": {"base_url": "http://127.0.0.1:9", "username": "u", "password": "pw-secret"}},
    }
    config.write_text(toml_text(doc))
    assert daemon_cli.main(["--config", str(config), "recover", "--older-than", "60"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"failed run {dead} (main/offers): stuck: no heartbeat for 300 s")
    assert "by emag-sync recover " in out[0] and out[-1] == "1 stuck run(s) failed"
    statuses = {r["id"]: r["status"] for r in query(db_url, f"SELECT id, status FROM {SCHEMA}.sync_runs")}
    assert statuses == {dead: "failed", fresh: "running"}


async def test_status_and_the_monitor_read_one_answer_to_is_its_lock_held(db_url, conn, store) -> None:
    """A dead run whose pair has a newer, live run: the pair's lock is held, but not by it."""
    dead = await insert_run(conn, heartbeat_ago_s=600, started_ago_s=700)
    async with connection(db_url) as holder:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(SCHEMA, "main", "offers"))
        live = await insert_run(conn, heartbeat_ago_s=0, started_ago_s=5)
        runs = {r.id: r for r in await running_runs(store, stale_after_s=60, max_age_s=3600)}
        assert (runs[dead].lock_held, runs[live].lock_held) == (False, True)
        status = status_text(list(runs.values()), [])
        assert "gone: dead, the monitor fails it" in next(
            line for line in status.splitlines() if line.startswith(f"{dead} ")
        )
        report = await recovery_pass(store, stale_after_s=60, max_age_s=3600, by=BY)
        assert [f["id"] for f in report.failed] == [dead]  # the monitor agrees, and acts
