"""The resident daemon when PostgreSQL goes away under it: it lives on, closes the rows of
the runs the outage interrupted once the database is back, and always stops in time."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sandbox.testbed import (
    REPO,
    config_doc,
    daemons_sharing,
    numbered_logins,
    terminate_timed,
    wait_for_runs,
    write_config,
)
from tests.notify_socket import NotifySocket
from tests.pgproxy import PgProxy
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

pytestmark = pytest.mark.slow


GRACE_S = 0.5
SCHEDULE = {"offers_interval_s": 2.0, "orders_interval_s": 1.0, "jitter_s": 0.3, "shutdown_grace_s": GRACE_S}
OFFERS_IN_FLIGHT = "status = 'running' AND resource = 'offers' AND pages_done >= 1"


def _running(db_url: str) -> list[dict]:
    return query(db_url, "SELECT id, resource, pages_done FROM emag_sync.sync_runs WHERE status = 'running'")


def _closed(db_url: str, ids: set[int]) -> list[dict]:
    return query(
        db_url,
        "SELECT id, status, error FROM emag_sync.sync_runs WHERE id = ANY($1::bigint[]) AND status <> 'running'",
        list(ids),
    )


def test_a_database_restart_mid_run_closes_the_interrupted_rows_and_stops_in_time(db_url: str, tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    with (
        PgProxy(db_url) as proxy,
        sandbox_process(tmp_path, "--offers", "3000", "--orders", "200", "--latency-ms", "100") as base_url,
    ):
        config = write_config(tmp_path / "c.toml", config_doc(proxy.dsn, base_url, schedule=SCHEDULE))
        proc = start_emag_sync(config, "run", env={"NOTIFY_SOCKET": str(notify.path)}, log=tmp_path / "d.log")
        try:
            wait_for_runs(db_url, OFFERS_IN_FLIGHT, 40, "an offers run in flight")
            interrupted = {r["id"] for r in _running(db_url)}
            proxy.cut()  # PostgreSQL goes down: every connection dropped, new ones refused
            time.sleep(3)
            proxy.restore()
            wait_until(
                lambda: len(_closed(db_url, interrupted)) == len(interrupted),
                20,
                "the interrupted rows closed by the daemon itself",
            )
            closed = _closed(db_url, interrupted)
            assert {r["status"] for r in closed} == {"failed"}
            assert all("database" in r["error"] for r in closed), closed
            assert proc.poll() is None  # it lived on
            (code,), took = terminate_timed([proc], GRACE_S + 5)
        finally:
            stop(proc)
            notify.close()
    assert code == 0, (tmp_path / "d.log").read_text()[-3000:]
    assert took < GRACE_S + 5
    assert not _running(db_url)


def test_a_stop_while_the_database_stops_answering_exits_in_time(db_url: str, tmp_path: Path) -> None:
    with (
        PgProxy(db_url) as proxy,
        sandbox_process(tmp_path, "--offers", "3000", "--orders", "200", "--latency-ms", "100") as base_url,
    ):
        config = write_config(tmp_path / "c.toml", config_doc(proxy.dsn, base_url, schedule=SCHEDULE))
        proc = start_emag_sync(config, "run", log=tmp_path / "d.log")
        try:
            wait_for_runs(db_url, OFFERS_IN_FLIGHT, 40, "an offers run in flight")
            proxy.freeze()  # a network partition: every statement and every close hangs, no error
            time.sleep(0.5)
            (code,), took = terminate_timed([proc], GRACE_S + 5)
        finally:
            stop(proc)
    print(f"stop with a frozen database: exit {code} in {took:.1f} s")
    assert code == 0 and took < GRACE_S + 5


def test_three_daemons_sharing_twenty_accounts_all_stop_in_time(db_url: str, tmp_path: Path) -> None:
    logins = numbered_logins(20)
    grace_s = 5.0
    schedule = {"offers_interval_s": 5.0, "orders_interval_s": 5.0, "jitter_s": 1.0, "shutdown_grace_s": grace_s}
    sandbox_args = ("--offers", "600", "--orders", "60", "--latency-ms", "60")
    with daemons_sharing(tmp_path, db_url, logins, 3, sandbox_args, schedule=schedule) as (_, procs):
        wait_for_runs(db_url, "status = 'running'", 60, "twenty runs in flight", count=20)
        codes, took = terminate_timed(procs, grace_s + 5)
    print(f"three daemons stopped in {took:.1f} s")
    assert codes == [0, 0, 0] and took < grace_s + 5
    assert not _running(db_url)
    logs = [(tmp_path / f"d{i}.log").read_text() for i in range(3)]
    assert all("service.stopped" in text for text in logs)


def test_the_last_resort_of_a_stop_exits_zero_with_a_line(tmp_path: Path) -> None:
    code = (
        "import time; from daemon import logs; from daemon.service import _exit_anyway_after; "
        "logs.configure(); _exit_anyway_after(0.3); time.sleep(30)"
    )
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0 and time.monotonic() - began < 10
    assert "service.forced_exit" in proc.stderr and "failed by the monitor" in proc.stderr
