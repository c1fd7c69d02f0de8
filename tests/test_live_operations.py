"""Live: the operator's path on a real systemd — reloads good and broken, restarts by the
dozen, a crash loop, failures in `journalctl -p err`, the README's commands by bare name
for root, the service user and a group member, a database that is down, and re-install,
rollback, uninstall and purge. One box and one install for the module; tests run in order."""

from __future__ import annotations

import json
import re
import time
import urllib.request

import pytest

from tests.live.helpers import DAEMON, MONITOR, ensure_active, healthz, is_active
from tests.live.install import CONFIG, LiveHost, deploy
from tests.processes import query, wait_until

pytestmark = [pytest.mark.live, pytest.mark.slow, pytest.mark.timeout(300)]

FAST_RESTART = "/etc/systemd/system/emag-sync.service.d/live-restart.conf"


def journal_since(host: LiveHost, unit: str, since: float, *args: str) -> list[str]:
    """The unit's messages since `since` (time.time(): the box shares the host's clock). Not
    --after-cursor: with -p, journalctl 252 skips stdout entries that follow a cursor."""
    return host.run(
        "journalctl", "--no-pager", "-o", "cat", "-u", unit, f"--since=@{since:.6f}", *args
    ).stdout.splitlines()


def edit_config(host: LiveHost, old: str, new: str) -> str:
    """Replace text in the installed configuration; returns the previous text."""
    before = host.run("cat", CONFIG).stdout
    assert old in before, before
    host.box.run("sh", "-c", 'cat >"$1"', "sh", CONFIG, input=before.replace(old, new), check=True)
    return before


def restore_config(host: LiveHost, text: str) -> None:
    host.box.run("sh", "-c", 'cat >"$1"', "sh", CONFIG, input=text, check=True)


def test_reload_applies_a_good_config_and_refuses_a_broken_one(live_host: LiveHost) -> None:
    host = live_host
    ensure_active(host)
    pid = host.prop(DAEMON, "MainPID")
    for unit, applied in ((DAEMON, "service.reloaded"), (MONITOR, "monitor.reloaded")):
        mark = time.time()
        good = host.run("cat", CONFIG).stdout
        began = time.monotonic()
        assert host.box.run("systemctl", "reload", unit).returncode == 0
        wait_until(
            lambda unit=unit, mark=mark, applied=applied: any(
                line.startswith(applied) for line in journal_since(host, unit, mark)
            ),
            10,
            applied,
        )
        reload_s = time.monotonic() - began
        # a broken file: the reload fails visibly, nothing is sent, the running configuration stays
        restore_config(host, good + "\n[sync\n")
        mark = time.time()
        refused = host.box.run("systemctl", "reload", unit)
        restore_config(host, good)
        assert refused.returncode != 0, refused.stdout
        errors = wait_until(
            lambda unit=unit, mark=mark: [
                line for line in journal_since(host, unit, mark, "-p", "err") if "TOML syntax error" in line
            ],
            10,
            "the error in journalctl -p err",
        )
        assert len(errors) == 1, errors
        assert not [line for line in journal_since(host, unit, mark) if line.startswith(applied)]
        assert is_active(host, unit)
        print(
            f"\nlive: systemctl reload {unit}: applied in {reload_s:.1f} s; a broken file: reload exit "
            f"{refused.returncode}, one err entry, still active"
        )
    assert host.prop(DAEMON, "MainPID") == pid  # reloads never restart the daemon


def test_seven_restarts_in_a_row_leave_the_daemon_running(live_host: LiveHost) -> None:
    host = live_host
    host.run("systemctl", "reset-failed", DAEMON)  # earlier tests restarted it too
    ensure_active(host)
    began = time.monotonic()
    for _ in range(7):
        host.run("systemctl", "restart", DAEMON)
    took = time.monotonic() - began
    props = host.show(DAEMON, "ActiveState", "Result")
    assert props == {"ActiveState": "active", "Result": "success"}, props
    print(
        f"\nlive: 7 x systemctl restart emag-sync in {took:.1f} s: still active (StartLimitBurst=5 counts crashes only)"
    )


def test_a_crash_loop_still_stops(live_host: LiveHost) -> None:
    host = live_host
    host.run("sh", "-c", 'mkdir -p "${1%/*}" && printf "%s\\n" "[Service]" RestartSec=1s >"$1"', "sh", FAST_RESTART)
    host.run("systemctl", "daemon-reload")
    host.run("systemctl", "restart", DAEMON)
    last_pid, kills, mark = "0", 0, time.time()

    def up_or_given_up() -> tuple[str, str] | None:
        props = host.show(DAEMON, "ActiveState", "MainPID")
        if props["ActiveState"] == "failed":  # no restart came: the start limit
            return ("gave up", "")
        if props["ActiveState"] == "active" and props["MainPID"] not in ("0", last_pid):
            return ("up", props["MainPID"])
        return None

    try:
        began = time.monotonic()
        while kills < 8:
            state, last_pid = wait_until(up_or_given_up, 15, "a restart or the start limit", interval_s=0.1)
            if state == "gave up":
                break
            host.run("kill", "-9", last_pid)
            kills += 1
        took = time.monotonic() - began
        props = host.show(DAEMON, "ActiveState", "Result", "NRestarts")
        refused = [line for line in journal_since(host, DAEMON, mark) if "Start request repeated too quickly" in line]
    finally:
        host.run("rm", "-f", FAST_RESTART)
        host.run("systemctl", "daemon-reload")
        host.run("systemctl", "reset-failed", DAEMON)
        host.run("systemctl", "start", DAEMON)
    assert props["ActiveState"] == "failed" and kills == 5 and refused, (kills, props)  # StartLimitBurst=5
    print(
        f"\nlive: kill -9 x {kills}: systemd gave up after {props['NRestarts']} restarts in {took:.1f} s "
        f"({refused[0]!r})"
    )


def test_a_failed_run_is_one_err_entry(live_host: LiveHost) -> None:
    host = live_host
    ensure_active(host)
    control = host.base_url.rsplit("/api-3", 1)[0] + "/_sandbox/accounts/fbe/faults"
    mark = time.time()
    request = urllib.request.Request(
        control,
        method="POST",
        data=json.dumps([{"kind": "auth", "resource": "orders", "times": 1}]).encode(),
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=5).close()
    (failed,) = wait_until(
        lambda: query(
            host.db_url,
            "SELECT id, error FROM emag_sync.sync_runs WHERE account = 'fbe' "
            "AND resource = 'orders' AND status = 'failed'",
        ),
        30,
        "the failed run",
    )
    errors = wait_until(lambda: journal_since(host, DAEMON, mark, "-p", "err"), 10, "an err entry")
    assert len(errors) == 1 and errors[0].startswith("sync.run_ended ") and f"run_id={failed['id']}" in errors[0]
    assert "authentication refused" in errors[0]
    wait_until(
        lambda: any(line.startswith("sync.run_finished ") for line in journal_since(host, DAEMON, mark)),
        30,
        "the other runs to go on",
    )
    print(f"\nlive: an injected 403 on fbe/orders: one journalctl -p err entry: {errors[0][:110]}...")


@pytest.mark.parametrize("user", ["root", "emag-sync", "alice"])
def test_the_readme_commands_by_bare_name(live_host: LiveHost, user: str) -> None:
    host = live_host
    if user == "alice":  # an operator: a member of the service's group
        host.run("useradd", "--create-home", "--groups", "emag-sync", user)
    commands = [
        "emag-sync status",
        "emag-sync history --limit 5",
        "emag-sync check-config",
        "emag-sync-monitor once",
        "systemctl status emag-sync emag-sync-monitor --no-pager --lines=0",
    ]
    for command in commands:
        proc = host.box.run("runuser", "-u", user, "--", "sh", "-c", f"cd / && {command}")
        assert proc.returncode == 0, f"{user}: {command}: {proc.stdout}{proc.stderr}"
    print(f"\nlive: as {user}: {', '.join(c.split(' --')[0] for c in commands)}: all exit 0")


def test_a_database_that_is_down_holds_nothing(live_host: LiveHost) -> None:
    """At boot with PostgreSQL down: both units become active at once, the daemon waits on its
    own (STATUS=), the monitor reports emag_sync_up 0; both recover when it is back."""
    host = live_host
    ensure_active(host)
    good = edit_config(host, host.db_url.rsplit("@", 1)[1].split("/", 1)[0], "127.0.0.1:1")
    try:
        began = time.monotonic()
        host.run("systemctl", "restart", DAEMON, MONITOR, timeout=60)
        start_s = time.monotonic() - began
        assert is_active(host, DAEMON) and is_active(host, MONITOR)
        wait_until(lambda: host.prop(DAEMON, "StatusText").startswith("waiting for database"), 15, "STATUS=waiting")
        assert healthz(host.health_url) == 503
        with urllib.request.urlopen(host.health_url.replace("/healthz", "/metrics"), timeout=5) as response:
            assert "emag_sync_up 0.0" in response.read().decode()
    finally:
        restore_config(host, good)
    host.run("systemctl", "restart", DAEMON, MONITOR)
    wait_until(lambda: healthz(host.health_url) == 200, 30, "the monitor healthy again")
    print(
        f"\nlive: database down: both units active in {start_s:.1f} s, STATUS=waiting for database, "
        "/healthz 503, emag_sync_up 0"
    )


def test_installed_monitoring_files_are_valid_as_installed(live_host: LiveHost) -> None:
    host = live_host
    proc = host.box.run("promtool", "check", "config", "/opt/emag-sync/share/prometheus/prometheus.yml.example")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert host.box.run("test", "-s", "/opt/emag-sync/share/grafana/emag-sync.json").returncode == 0


def test_rollback_reinstall_uninstall_purge(live_host: LiveHost, live_wheelhouse) -> None:
    host = live_host
    ensure_active(host)
    current = host.run("readlink", "/opt/emag-sync/venv").stdout.strip()
    began = time.monotonic()
    rolled = deploy(host.box, live_wheelhouse, "--rollback")
    rollback_s = time.monotonic() - began
    assert "running venv-" in rolled.stdout and host.run("readlink", "/opt/emag-sync/venv").stdout.strip() != current
    assert is_active(host, DAEMON) and is_active(host, MONITOR)
    removed = deploy(host.box, live_wheelhouse, "--uninstall")
    assert "kept /etc/emag-sync" in removed.stdout
    assert host.box.run("test", "-e", "/usr/local/bin/emag-sync").returncode != 0
    assert host.box.run("systemctl", "is-active", DAEMON).stdout.strip() in ("inactive", "unknown")
    began = time.monotonic()
    again = deploy(host.box, live_wheelhouse)  # the kept configuration: straight to running
    reinstall_s = time.monotonic() - began
    assert "first install" not in again.stdout and re.search(r"^==> healthy$", again.stdout, re.MULTILINE)
    assert host.run("runuser", "-u", "emag-sync", "--", "emag-sync", "status").returncode == 0
    purged = deploy(host.box, live_wheelhouse, "--uninstall", "--purge")
    assert "purged /etc/emag-sync" in purged.stdout
    for path in ("/etc/emag-sync", "/opt/emag-sync", "/usr/local/bin/emag-sync"):
        assert host.box.run("test", "-e", path).returncode != 0, path
    assert host.box.run("id", "emag-sync").returncode != 0
    # the group goes too, members or not (an operator was added for `emag-sync status`), so a
    # later install starts clean; a kept group once made its useradd fail
    assert host.box.run("getent", "group", "emag-sync").returncode != 0, purged.stdout
    assert query(host.db_url, "SELECT count(*) AS n FROM emag_sync.sync_runs")[0]["n"] > 0  # the data stays
    host.run("groupadd", "--system", "emag-sync")  # as if left by an older release's purge
    fresh = deploy(host.box, live_wheelhouse)
    assert "first install" in fresh.stdout and host.box.run("id", "emag-sync").returncode == 0, fresh.stderr
    print(
        f"\nlive: --rollback {rollback_s:.1f} s; --uninstall kept the config; re-install to healthy "
        f"{reinstall_s:.1f} s; --uninstall --purge removed config, venvs, commands and user, kept the database"
    )
