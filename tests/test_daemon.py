"""The resident daemon as systemd runs it: a real `emag-sync run` process, a NOTIFY_SOCKET
bound by the test, the sandbox as a real process, and the database as the only witness."""

from __future__ import annotations

import signal
import time
from itertools import groupby, pairwise
from pathlib import Path

import pytest

from sandbox.testbed import config_doc, daemons_sharing, numbered_logins, terminate_timed, wait_for_runs, write_config
from tests.notify_socket import NotifySocket
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

pytestmark = pytest.mark.slow

FAST_SCHEDULE = {"offers_interval_s": 2.0, "orders_interval_s": 1.0, "jitter_s": 0.3, "shutdown_grace_s": 0.5}
# systemd's WatchdogSec for these tests: the daemon pings every half of it, and a silence of a
# whole one would get it restarted. 2 s leaves a busy 2-core machine a full second of lag per ping.
WATCHDOG_S = 2.0
WATCHDOG_ENV = {"WATCHDOG_USEC": str(int(WATCHDOG_S * 1_000_000))}


@pytest.fixture
def notify(tmp_path: Path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def _completed(db_url: str, account: str | None = None) -> int:
    rows = query(
        db_url,
        "SELECT count(*) AS n FROM emag_sync.sync_runs WHERE status = 'completed' "
        "AND ($1::text IS NULL OR account = $1)",
        account,
    )
    return rows[0]["n"]


def test_notify_lifecycle_and_clean_sigterm(db_url: str, tmp_path: Path, notify: NotifySocket) -> None:
    with sandbox_process(tmp_path, "--offers", "2000", "--orders", "200", "--latency-ms", "150") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url, schedule=FAST_SCHEDULE))
        proc = start_emag_sync(
            config,
            "run",
            env={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG_ENV},
            log=tmp_path / "daemon.log",
        )
        try:
            notify.wait_for("READY", "1")
            wait_until(lambda: _completed(db_url) >= 2, 40, "two completed runs")
            status = notify.wait_for("STATUS", predicate=lambda v: "main/offers page" in v)
            assert "·" in status and "fbe/" in status
            # every half WatchdogSec from READY on, while runs page and write: never a silence
            # of a whole WatchdogSec, the one since the last ping included
            wait_until(lambda: len(notify.fields("WATCHDOG")) >= 4, 10 * WATCHDOG_S, "four watchdog pings")
            (ready_at, _), *_ = notify.fields("READY")
            pings = [ready_at, *(at for at, _ in notify.fields("WATCHDOG")), time.monotonic()]
            assert max(b - a for a, b in pairwise(pings)) < WATCHDOG_S, pings
            # an offers run (20 pages at 3 req/s, 150 ms latency) is in flight with at least 6 pages
            # (2 s) still to go, so the 0.5 s drain grace cannot let it finish: stop now
            wait_for_runs(
                db_url,
                "status = 'running' AND resource = 'offers' AND pages_done >= 1 AND pages_total - pages_done >= 6",
                30,
                "an offers run in flight",
                interval_s=0.05,
            )
            assert terminate_timed([proc], 10)[0] == [0]
        finally:
            stop(proc)
        notify.wait_for("STOPPING", "1")
    statuses = {r["status"] for r in query(db_url, "SELECT status FROM emag_sync.sync_runs")}
    assert "running" not in statuses
    cancelled = query(db_url, "SELECT pages_done, error FROM emag_sync.sync_runs WHERE status = 'cancelled'")
    assert cancelled and any(r["pages_done"] >= 1 for r in cancelled)  # committed pages are kept
    kept = query(db_url, "SELECT count(*) AS n FROM emag_sync.offers")[0]["n"]
    assert kept >= 100


def test_database_unreachable_at_start_is_ready_and_waits_without_crashing(
    tmp_path: Path, notify: NotifySocket
) -> None:
    doc = config_doc("postgresql://postgres@127.0.0.1:1/none", "http://127.0.0.1:9/api-3")
    config = write_config(tmp_path / "c.toml", doc)
    proc = start_emag_sync(config, "run", env={"NOTIFY_SOCKET": str(notify.path), **WATCHDOG_ENV})
    try:
        # READY at once, so a database that is down at boot never holds the boot (no start deadline)
        notify.wait_for("READY", "1", timeout_s=10)
        notify.wait_for("STATUS", predicate=lambda v: v.startswith("waiting for database (attempt 1"))
        notify.wait_for("STATUS", predicate=lambda v: v.startswith("waiting for database (attempt 2"))
        assert proc.poll() is None  # still alive, retrying with backoff...
        # ...and the watchdog knows it is alive while waiting
        wait_until(lambda: len(notify.fields("WATCHDOG")) >= 2, 10 * WATCHDOG_S, "two watchdog pings")
        codes, took = terminate_timed([proc], 10)
        assert codes == [0] and took < 5
    finally:
        stop(proc)


def test_older_schema_exits_with_the_schema_code(empty_db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.toml", config_doc(empty_db_url, "http://127.0.0.1:9/api-3"))
    proc = start_emag_sync(config, "run")
    assert proc.wait(30) == 79
    assert "emag-sync migrate" in proc.stderr.read()
    stop(proc)


def test_sighup_adds_an_account_without_dropping_a_run(db_url: str, tmp_path: Path, notify: NotifySocket) -> None:
    with sandbox_process(tmp_path, "--offers", "1275", "--orders", "50", "--latency-ms", "150") as base_url:
        config = tmp_path / "c.toml"
        write_config(config, config_doc(db_url, base_url, accounts=("main",), schedule=FAST_SCHEDULE))
        proc = start_emag_sync(config, "run", env={"NOTIFY_SOCKET": str(notify.path)}, log=tmp_path / "d.log")
        try:
            notify.wait_for("READY", "1")
            (in_flight,) = wait_until(
                lambda: query(
                    db_url,
                    "SELECT id FROM emag_sync.sync_runs WHERE status = 'running' AND account = 'main' "
                    "AND resource = 'offers' AND pages_done >= 1",
                ),
                30,
                "main/offers in flight",
            )
            write_config(config, config_doc(db_url, base_url, accounts=("main", "fbe"), schedule=FAST_SCHEDULE))
            proc.send_signal(signal.SIGHUP)
            wait_until(lambda: _completed(db_url, "fbe") >= 2, 40, "fbe synced after reload")
            wait_until(
                lambda: query(
                    db_url, "SELECT 1 FROM emag_sync.sync_runs WHERE id = $1 AND status <> 'running'", in_flight["id"]
                ),
                30,
                "the in-flight run to end",
            )
            (row,) = query(db_url, "SELECT status FROM emag_sync.sync_runs WHERE id = $1", in_flight["id"])
            assert row["status"] == "completed"
            assert proc.poll() is None
        finally:
            assert stop(proc) == 0


def test_three_daemons_six_accounts_never_overlap(db_url: str, tmp_path: Path) -> None:
    sandbox_args = ("--offers", "250", "--orders", "60", "--latency-ms", "20")
    with daemons_sharing(tmp_path, db_url, numbered_logins(6), 3, sandbox_args, schedule=FAST_SCHEDULE) as (_, procs):
        wait_until(
            lambda: (
                len(
                    query(
                        db_url,
                        "SELECT DISTINCT account, resource FROM emag_sync.sync_runs WHERE status = 'completed'",
                    )
                )
                == 12
            ),
            90,
            "every pair completed",
        )
        time.sleep(4)  # several more cycles with all three competing
        codes = [stop(p) for p in procs]
    assert codes == [0, 0, 0]
    runs = query(
        db_url,
        "SELECT account, resource, status, started_at, finished_at, pid FROM emag_sync.sync_runs "
        "ORDER BY account, resource, started_at",
    )
    assert {r["status"] for r in runs} <= {"completed", "cancelled"}
    assert len({r["pid"] for r in runs}) >= 2  # the work really was shared
    for _, pair_runs in groupby(runs, key=lambda r: (r["account"], r["resource"])):
        pair_runs = list(pair_runs)
        for before, after in pairwise(pair_runs):
            assert after["started_at"] >= before["finished_at"], (before, after)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("postgresql://postgres@127.0.0.1:5432/emag_sync_no_such_db", "does not exist"),
        ("postgresql://no_such_role@127.0.0.1:5432/test", "no_such_role"),
    ],
    ids=["unknown-database", "unknown-role"],
)
@pytest.mark.parametrize("command", ["run", "status"])
def test_a_database_that_refuses_us_is_a_config_error_not_a_wait(
    tmp_path: Path, notify: NotifySocket, url: str, why: str, command: str
) -> None:
    config = write_config(tmp_path / "c.toml", config_doc(url, "http://127.0.0.1:9/api-3"))
    proc = start_emag_sync(config, command, env={"NOTIFY_SOCKET": str(notify.path)})
    try:
        assert proc.wait(30) == 78  # RestartPreventExitStatus: systemd shows it failed, no restart loop
        lines = proc.stderr.read().splitlines()
    finally:
        stop(proc)
    # the daemon said READY (it waits for a database that is down), then found this one refuses it
    assert len(lines) == (2 if command == "run" else 1), lines
    assert command == "status" or "service.ready" in lines[0]
    assert "configuration error" in lines[-1] and why in lines[-1], lines
