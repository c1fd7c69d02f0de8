"""Live: emag-sync under a real systemd — PID 1 of a box (tests/live/), installed there by
deploy_sync_system.sh as an operator would, syncing the sandbox marketplace into a fresh
database. The tests run in order on one install; each prints what it measured (`-s`)."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from tests.live.helpers import DAEMON, MONITOR, ensure_active, healthz, is_active
from tests.live.install import LiveHost
from tests.processes import query, wait_until

# The first test's setup may also build the box's wheelhouse (once per pyproject.toml).
pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(300)]

# What an operator would put in `systemctl edit emag-sync` to make recovery quick.
FAST_RECOVERY = "/etc/systemd/system/emag-sync.service.d/live-test.conf"


def fast_recovery(host: LiveHost) -> None:
    """RestartSec=1s and WatchdogSec=5s in a drop-in; the restart hands the daemon the new
    WATCHDOG_USEC. reset-failed: these tests start the unit more often than StartLimitBurst
    allows in 300 s, which is the limit doing its job, not what is under test here."""
    host.run(
        "sh",
        "-c",
        'mkdir -p "${1%/*}" && printf "%s\\n" "[Service]" RestartSec=1s WatchdogSec=5s >"$1"',
        "sh",
        FAST_RECOVERY,
    )
    host.run("systemctl", "daemon-reload")
    host.run("systemctl", "reset-failed", DAEMON)
    restart_for_a_fresh_scan(host)
    assert host.prop(DAEMON, "WatchdogUSec") == "5s"


def restart_for_a_fresh_scan(host: LiveHost) -> None:
    """Restart once main/offers is idle with no checkpoint left (its last scan completed):
    the new daemon's first scan then starts at page 1 within seconds, not resuming near the
    end of an interrupted one."""
    ensure_active(host)
    wait_until(
        lambda: (
            not query(
                host.db_url,
                """
        SELECT 1 FROM emag_sync.sync_runs WHERE account = 'main' AND resource = 'offers' AND status = 'running'
        UNION ALL
        SELECT 1 FROM emag_sync.sync_state WHERE account = 'main' AND resource = 'offers' AND checkpoint IS NOT NULL
        """,
            )
        ),
        45,
        "main/offers to finish its scan",
        interval_s=0.2,
    )
    host.run("systemctl", "restart", DAEMON)


def offers_in_flight(host: LiveHost, pages_left: int, timeout_s: float = 45) -> dict[str, Any]:
    """The running main/offers run, once it has committed a page and has `pages_left` to go."""

    def find() -> dict[str, Any] | None:
        for run in reversed(host.runs("account = 'main' AND resource = 'offers' AND status = 'running'")):
            total = run["pages_total"]
            if run["pages_done"] >= 1 and total is not None and total - run["pages_done"] >= pages_left:
                return run
        return None

    return wait_until(find, timeout_s, f"a main/offers run with {pages_left}+ pages to go", interval_s=0.1)


def wait_for_row(host: LiveHost, run_id: int, status: str, timeout_s: float) -> dict[str, Any]:
    return wait_until(
        lambda: next(iter(host.runs("id = $1 AND status = $2", run_id, status)), None),
        timeout_s,
        f"run {run_id} to be {status}",
        interval_s=0.2,
    )


def wait_for_restart(host: LiveHost, restarts_before: int, old_pid: str, timeout_s: float) -> dict[str, str]:
    def restarted() -> dict[str, str] | None:
        props = host.show(DAEMON, "NRestarts", "MainPID", "ActiveState")
        if (
            int(props["NRestarts"]) > restarts_before
            and props["MainPID"] not in ("0", old_pid)
            and props["ActiveState"] == "active"
        ):
            return props
        return None

    return wait_until(restarted, timeout_s, "systemd to restart emag-sync", interval_s=0.2)


def committed_pages(host: LiveHost, run_id: int) -> list[int]:
    """Page numbers of a main/offers run's sync.page_committed lines, in journal order."""
    pattern = re.compile(rf"^sync\.page_committed account=main resource=offers run_id={run_id} page=(\d+) ")
    return [int(m.group(1)) for m in map(pattern.search, host.journal(DAEMON, "-p", "info")) if m]


def test_start_reaches_active_once_ready(live_host: LiveHost) -> None:
    host = live_host
    host.run("systemctl", "stop", MONITOR, DAEMON)
    assert not is_active(host, DAEMON) and not is_active(host, MONITOR)
    began = time.monotonic()
    # Type=notify: `systemctl start` returns once each process has sent READY=1.
    host.run("systemctl", "start", DAEMON, MONITOR, timeout=90)
    start_s = time.monotonic() - began
    for unit in (DAEMON, MONITOR):
        props = host.show(unit, "Type", "ActiveState", "SubState", "StatusText")
        assert (props["Type"], props["ActiveState"], props["SubState"]) == ("notify", "active", "running"), props
        assert props["StatusText"], f"{unit} sent no STATUS= with READY=1"
    assert any(line.startswith("service.ready ") for line in host.journal(DAEMON, "-n", "50"))
    wait_until(lambda: healthz(host.health_url) == 200, 20, "the monitor's /healthz to answer 200")
    healthy_s = time.monotonic() - began
    print(
        f"\nlive: systemctl start emag-sync emag-sync-monitor: both active (READY=1) in {start_s:.1f} s, "
        f"/healthz 200 after {healthy_s:.1f} s"
    )
    assert start_s < 20


def test_status_shows_progress(live_host: LiveHost) -> None:
    host = live_host
    ensure_active(host)
    began = time.monotonic()
    progress = wait_until(
        lambda: re.search(r"main/offers page \d+/\d+", host.prop(DAEMON, "StatusText")),
        45,
        "STATUS= to show main/offers paging",
    )
    status = host.box.run("systemctl", "status", "--no-pager", "--lines=0", DAEMON)
    assert status.returncode == 0, status.stdout + status.stderr
    line = re.search(r"^\s*Status: \"(.*)\"$", status.stdout, re.MULTILINE)
    assert line, status.stdout
    assert all(pair in line.group(1) for pair in ("main/offers", "main/orders", "fbe/offers", "fbe/orders")), line
    print(
        f"\nlive: STATUS= showed {progress.group(0)!r} after {time.monotonic() - began:.1f} s; "
        f"systemctl status: {line.group(1)!r}"
    )


def test_journal_has_run_lines_at_their_priorities(live_host: LiveHost) -> None:
    host = live_host
    ensure_active(host)
    wait_until(
        lambda: any(line.startswith("sync.run_finished ") for line in host.journal(DAEMON)),
        45,
        "a completed run in the journal",
    )
    info = host.journal(DAEMON, "-p", "info")
    started = [line for line in info if line.startswith("sync.run_started ")]
    committed = [line for line in info if line.startswith("sync.page_committed ")]
    assert started and committed, "\n".join(info[-30:])
    for account in ("main", "fbe"):
        assert any(f"account={account} resource=offers" in line for line in committed), account
    # The <6> prefix became the priority (journald stripped it); nothing routine is a warning.
    warnings = host.journal(DAEMON, "-p", "warning")
    assert not [line for line in warnings if line.startswith(("sync.page_committed", "sync.run_started", "<"))]
    print(
        f"\nlive: journalctl -u emag-sync -p info: {len(started)} sync.run_started, {len(committed)} "
        f"sync.page_committed; -p warning: {len(warnings)} lines, none of them routine"
    )


def test_stop_mid_run_cancels_and_exits_0(live_host: LiveHost) -> None:
    host = live_host
    ensure_active(host)
    grace_s = host.config["schedule"]["shutdown_grace_s"]
    restart_for_a_fresh_scan(host)
    run = offers_in_flight(host, pages_left=6)  # at 3 pages/s, longer than the grace
    began = time.monotonic()
    host.run("systemctl", "stop", DAEMON)
    stop_s = time.monotonic() - began
    props = host.show(DAEMON, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    row, left_running = host.runs("id = $1", run["id"])[0], host.runs("status = 'running'")
    host.run("systemctl", "start", DAEMON)
    assert is_active(host, DAEMON)
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1", "ExecMainStatus": "0"}, props
    assert stop_s <= grace_s + 5
    assert row["status"] == "cancelled" and row["pages_done"] < row["pages_total"], row
    assert not left_running, f"a clean stop left runs running: {left_running}"
    print(
        f"\nlive: systemctl stop mid-run (main/offers run {run['id']} at page {run['pages_done']}/"
        f"{run['pages_total']}): stopped in {stop_s:.1f} s (grace {grace_s:g} s), exit status 0, "
        f"row cancelled at page {row['pages_done']}/{row['pages_total']}"
    )


def test_kill_9_restarts_and_fails_the_orphaned_run(live_host: LiveHost) -> None:
    host = live_host
    fast_recovery(host)
    run = offers_in_flight(host, pages_left=4)
    before = host.show(DAEMON, "NRestarts", "MainPID")
    host.run("kill", "-9", before["MainPID"])
    began = time.monotonic()
    after = wait_for_restart(host, int(before["NRestarts"]), before["MainPID"], 20)
    restart_s = time.monotonic() - began
    assert any("status=9/KILL" in line for line in host.journal(DAEMON, "-n", "200"))
    row = wait_for_row(host, run["id"], "failed", 30)
    failed_s = time.monotonic() - began
    assert "stuck" in row["error"], row["error"]
    print(
        f"\nlive: kill -9 of MainPID {before['MainPID']} mid-run: restarted as {after['MainPID']} "
        f"(NRestarts {before['NRestarts']} -> {after['NRestarts']}) after {restart_s:.1f} s (RestartSec=1s); "
        f"orphaned run {run['id']} failed by the monitor after {failed_s:.1f} s (stuck threshold "
        f"{host.config['monitor']['stuck_threshold_s']:g} s)"
    )


def test_frozen_daemon_is_killed_by_the_watchdog_and_resumes(live_host: LiveHost) -> None:
    host = live_host
    fast_recovery(host)
    run = offers_in_flight(host, pages_left=4)
    before = host.show(DAEMON, "NRestarts", "MainPID")
    host.run("kill", "-STOP", before["MainPID"])
    began = time.monotonic()
    after = wait_for_restart(host, int(before["NRestarts"]), before["MainPID"], 30)
    restart_s = time.monotonic() - began
    systemd_lines = host.journal(DAEMON, "-n", "200")
    assert any("Watchdog timeout" in line for line in systemd_lines), "\n".join(systemd_lines[-20:])
    assert any("Failed with result 'watchdog'" in line for line in systemd_lines)
    wait_for_row(host, run["id"], "failed", 30)
    failed_s = time.monotonic() - began
    # The next run of the pair starts right after the last page the frozen one committed.
    resumed = wait_until(
        lambda: next(
            iter(host.runs("account = 'main' AND resource = 'offers' AND id > $1 AND pages_done >= 1", run["id"])), None
        ),
        30,
        "the next main/offers run to commit a page",
    )
    frozen_at = max(committed_pages(host, run["id"]))
    pages = committed_pages(host, resumed["id"])
    assert any(
        line.startswith("sync.resuming account=main resource=offers ")
        for line in host.journal(DAEMON, f"_PID={after['MainPID']}")
    )
    assert pages[0] == frozen_at + 1 > 1, (frozen_at, pages)
    print(
        f"\nlive: kill -STOP of MainPID {before['MainPID']}: watchdog (WatchdogSec=5s) killed it and systemd "
        f"restarted it as {after['MainPID']} after {restart_s:.1f} s; frozen run {run['id']} failed after "
        f"{failed_s:.1f} s at page {frozen_at}; run {resumed['id']} resumed at page {pages[0]}"
    )


def test_journal_values_are_encoded_once(live_host: LiveHost) -> None:
    """A value is quoted at most once: `scan_started_at="2026-11-30 10:27:41+00:00"`, never
    `scan_started_at="\\"2026-...\\""` (datetimes were JSON-encoded, then quoted again)."""
    lines = live_host.journal(DAEMON)
    assert lines and not [line for line in lines if '="\\"' in line]
