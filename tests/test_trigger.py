""" "Sync now" from the ERP: one SQL call grantable on its own, or `emag-sync trigger`; the
resident daemon hears it at once and starts the idle pair within a second; presses
coalesce (10 in a second make at most 2 runs); with no daemon the request waits."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import asyncpg
import pytest

from sandbox.testbed import (
    REPO,
    config_doc,
    connection,
    press_sync_now,
    served_after,
    sync_now,
    wait_for_runs,
    write_config,
)
from tests.notify_socket import NotifySocket
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

LONG = {"offers_interval_s": 3600.0, "orders_interval_s": 3600.0, "jitter_s": 0.2, "shutdown_grace_s": 0.5}


def emag_sync(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "NOTIFY_SOCKET"))}
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def test_request_sync_is_one_call_grantable_on_its_own(db_url: str, conn: asyncpg.Connection) -> None:
    owner = conn
    role = f"erp_{uuid.uuid4().hex[:8]}"
    try:
        await owner.execute(
            "INSERT INTO emag_sync.sync_state (account, resource) VALUES ('main', 'offers'), "
            "('main', 'orders'), ('fbe', 'orders')"
        )
        await owner.execute(f'CREATE ROLE "{role}" LOGIN')
        erp_url = db_url.replace("postgres@", f"{role}@", 1)
        async with connection(erp_url) as erp:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # EXECUTE is not PUBLIC's
                await erp.fetch("SELECT emag_sync.request_sync('main', 'orders')")
        await owner.execute(f'GRANT USAGE ON SCHEMA emag_sync TO "{role}"')
        await owner.execute(f'GRANT EXECUTE ON FUNCTION emag_sync.request_sync(text, text) TO "{role}"')
        async with connection(erp_url) as erp:
            (one,) = await erp.fetch("SELECT emag_sync.request_sync('main', 'orders')")
            both = await erp.fetch("SELECT * FROM emag_sync.request_sync('main')")  # all: offers and orders
            only_orders = await erp.fetch("SELECT emag_sync.request_sync('fbe', 'all')")  # fbe syncs orders only
            with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown account 'nope'.*known: fbe, main"):
                await erp.fetch("SELECT emag_sync.request_sync('nope', 'orders')")
            with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown resource 'stock'"):
                await erp.fetch("SELECT emag_sync.request_sync('main', 'stock')")
            with pytest.raises(asyncpg.InvalidParameterValueError, match="account fbe does not sync offers"):
                await erp.fetch("SELECT emag_sync.request_sync('fbe', 'offers')")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):  # the tables stay the owner's
                await erp.fetch("SELECT * FROM emag_sync.sync_requests")
        rows = await owner.fetch(
            "SELECT id, account, resource, requested_by, served_at FROM emag_sync.sync_requests ORDER BY id"
        )
        assert [(r["account"], r["resource"]) for r in rows] == [
            ("main", "orders"),
            ("main", "offers"),
            ("main", "orders"),
            ("fbe", "orders"),
        ]
        assert rows[0]["id"] == one[0] and len(both) == 2 and len(only_orders) == 1
        assert {r["requested_by"] for r in rows} == {role} and all(r["served_at"] is None for r in rows)
    finally:
        await owner.execute("DELETE FROM emag_sync.sync_requests")
        await owner.execute(f'DROP OWNED BY "{role}"')
        await owner.execute(f'DROP ROLE "{role}"')


def test_with_no_daemon_a_request_waits_and_status_shows_it(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", config_doc(db_url, "http://127.0.0.1:9/api-3"))
    queued = emag_sync(config, "trigger", "--account", "main", "--resource", "orders")
    assert queued.returncode == 0 and queued.stdout.startswith("queued main/orders (request "), queued.stderr
    status = emag_sync(config, "status")
    assert '"Sync now" requests waiting for a run:' in status.stdout and "main/orders  1" in status.stdout
    waited = emag_sync(config, "trigger", "--account", "main", "--resource", "orders", "--wait", "--timeout", "1")
    assert waited.returncode == 1 and "gave up waiting after 1 s: 1 request(s) not served yet" in waited.stdout
    unknown = emag_sync(config, "trigger", "--account", "nope")
    assert unknown.returncode == 78 and "accounts.nope: no such account" in unknown.stderr


@pytest.mark.slow
def test_the_daemon_starts_a_requested_pair_at_once_and_presses_coalesce(db_url: str, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    with sandbox_process(tmp_path, "--offers", "300", "--orders", "600", "--latency-ms", "60") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url, accounts=("main",), schedule=LONG))
        proc = start_emag_sync(config, "run", env={"NOTIFY_SOCKET": str(notify.path)}, log=tmp_path / "d.log")
        try:
            # the first scheduled runs (intervals of an hour: no other run comes meanwhile)
            wait_for_runs(db_url, "status = 'completed'", 40, "the first two runs", count=2)
            # one press: the idle pair starts within a second
            latencies = []
            for _ in range(3):
                latencies.append(served_after(db_url, sync_now(db_url, "main", "orders"), ended=True))
            # ten presses in a second: at most two runs serve them all
            runs = press_sync_now(db_url, "main", "orders", 10, timeout_s=20, settle_s=1.5)
            # history and the STATUS= line say so too
            history = emag_sync(config, "history", "--limit", "3").stdout
        finally:
            assert stop(proc) == 0
            notify.close()
    print(
        f"sync now: started {', '.join(f'{s:.2f}' for s in latencies)} s after the request; "
        f"10 presses in 1 s -> {len(runs)} runs"
    )
    assert max(latencies) < 1.0
    assert 1 <= len(runs) <= 2 and {r["trigger"] for r in runs} == {"request"}
    assert {r["status"] for r in runs} == {"completed"}
    assert " request " in history.splitlines()[1]


@pytest.mark.slow
def test_trigger_wait_exits_as_once_does(db_url: str, tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--offers", "300", "--orders", "100") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url, schedule=LONG))
        proc = start_emag_sync(config, "run", log=tmp_path / "d.log")
        try:
            done = emag_sync(config, "trigger", "--account", "main", "--resource", "offers", "--wait", timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            assert done.stdout.splitlines()[-1].startswith("main/offers: completed (run ")
            wait_until(
                lambda: (
                    query(
                        db_url,
                        "SELECT count(DISTINCT (account, resource)) AS n FROM emag_sync.sync_runs "
                        "WHERE status = 'completed'",
                    )[0]["n"]
                    == 4
                    and not query(db_url, "SELECT 1 FROM emag_sync.sync_runs WHERE status = 'running'")
                ),
                40,
                "the first runs of every pair",
            )  # so the fault below meets the requested run
            fault = base_url.rsplit("/api-3", 1)[0] + "/_sandbox/accounts/fbe/faults"
            urllib.request.urlopen(
                urllib.request.Request(
                    fault, data=b'{"kind": "auth", "resource": "orders", "times": 1}', method="POST"
                ),
                timeout=10,
            ).close()
            failed = emag_sync(config, "trigger", "--account", "fbe", "--resource", "orders", "--wait", timeout=60)
        finally:
            assert stop(proc) == 0
    assert failed.returncode == 1 and "fbe/orders: failed (run " in failed.stdout and "403" in failed.stdout
