"""The systemd units: lint-clean, hardened to an exposure of at most 2.0, and carrying the
directives the daemon's and the monitor's behaviour relies on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.constants import EXIT_UNAVAILABLE
from sandbox.testbed import REPO
from tests.tools import debian_tool

UNITS = ("emag-sync.service", "emag-sync-monitor.service")
MAX_EXPOSURE = 2.0


def parse_unit(unit: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; comments and blank lines dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in (REPO / "systemd" / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert "=" in line, f"{unit}: not a key=value line: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def local_copy(tmp_path: Path, unit: str) -> Path:
    """The unit with ExecStart pointing at an executable that exists on this machine: the
    console script of the venv running the tests, else /bin/true."""
    text = (REPO / "systemd" / unit).read_text()
    assert f"/opt/emag-sync/venv/bin/{unit.removesuffix('.service')} " in text
    for script in ("emag-sync-monitor", "emag-sync"):  # the longer name first: it holds the shorter
        installed = Path(sys.executable).parent / script
        target = str(installed) if os.access(installed, os.X_OK) else "/bin/true"
        text = text.replace(f"/opt/emag-sync/venv/bin/{script} ", f"{target} ")
    path = tmp_path / unit
    path.write_text(text)
    return path


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert match and match.group(2) in {"", *units}, value
    return float(match.group(1)) * units.get(match.group(2), 1)


@pytest.mark.parametrize("unit", UNITS)
def test_verify_is_clean(tmp_path: Path, unit: str) -> None:
    copy = local_copy(tmp_path, unit)
    proc = subprocess.run(
        [debian_tool("systemd-analyze", "systemd"), "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = proc.stdout + proc.stderr
    # systemd may grumble about the host's own units; nothing may be about ours.
    ours = [line for line in output.splitlines() if unit in line or str(tmp_path) in line]
    assert proc.returncode == 0 and not ours, output


@pytest.mark.parametrize("unit", UNITS)
def test_exposure_at_most_2(tmp_path: Path, unit: str) -> None:
    copy = local_copy(tmp_path, unit)
    # --threshold takes the internal 0-100 scale: exposure 2.0 is 20; above it the exit code is non-zero
    proc = subprocess.run(
        [
            debian_tool("systemd-analyze", "systemd"),
            "security",
            "--offline=true",
            f"--threshold={int(MAX_EXPOSURE * 10)}",
            str(copy),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_service_lifecycle_directives(unit: str) -> None:
    s = parse_unit(unit)
    svc, meta = s["Service"], s["Unit"]
    script = unit.removesuffix(".service")
    assert svc["Type"] == ["notify"] and svc["NotifyAccess"] == ["main"]
    # straight at the venv's console script: the notify socket and $MAINPID see the Python process
    assert svc["ExecStart"] == [f"/opt/emag-sync/venv/bin/{script} --config /etc/emag-sync/emag-sync.toml run"]
    assert seconds(svc["WatchdogSec"][0]) > 0
    assert svc["Restart"] == ["on-failure"] and seconds(svc["RestartSec"][0]) > 0
    assert {"78", "79"} <= set(svc["RestartPreventExitStatus"][0].split())
    assert seconds(svc["TimeoutStopSec"][0]) >= 15
    # start limits belong to [Unit]; in [Service] systemd ignores them with a warning
    assert int(meta["StartLimitBurst"][0]) > 0 and seconds(meta["StartLimitIntervalSec"][0]) > 0
    assert "StartLimitBurst" not in svc and "StartLimitIntervalSec" not in svc
    assert set(meta["After"][0].split()) >= {"network-online.target", "postgresql.service"}
    assert "network-online.target" in meta["Wants"][0].split()
    assert s["Install"]["WantedBy"] == ["multi-user.target"]


@pytest.mark.parametrize("unit", UNITS)
def test_identity_and_hardening_directives(unit: str) -> None:
    svc = parse_unit(unit)["Service"]
    assert svc["User"] == ["emag-sync"] and svc["Group"] == ["emag-sync"]
    assert svc["ConfigurationDirectory"] == ["emag-sync"] and svc["ConfigurationDirectoryMode"] == ["0750"]
    assert "PYTHONUNBUFFERED=1" in " ".join(svc["Environment"]).split()
    expected = {
        "UMask": "0077",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "PrivateUsers": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "ProtectClock": "yes",
        "ProtectHostname": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictNamespaces": "yes",
        "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes",
        "LockPersonality": "yes",
        "RemoveIPC": "yes",
        "DevicePolicy": "closed",
        "SystemCallArchitectures": "native",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    }
    assert {key: svc.get(key, ["<missing>"])[-1] for key in expected} == expected
    assert svc["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    # an IP allow list would cut the daemon off from eMAG's CDN and a remote PostgreSQL
    assert "IPAddressAllow" not in svc and "IPAddressDeny" not in svc


CHECK = "/opt/emag-sync/venv/bin/emag-sync --config /etc/emag-sync/emag-sync.toml check-config"


@pytest.mark.parametrize("unit", UNITS)
def test_reload_checks_the_file_before_sighup(unit: str) -> None:
    svc = parse_unit(unit)["Service"]
    assert svc["ExecReload"] == [f"{CHECK} --quiet", "/bin/kill -HUP $MAINPID"]


@pytest.mark.parametrize("unit", UNITS)
def test_clean_stops_do_not_use_up_the_start_limit(unit: str) -> None:
    svc = parse_unit(unit)["Service"]
    (post,) = svc["ExecStopPost"]
    assert post.startswith("+/bin/sh -c ") and '"$$SERVICE_RESULT" = success' in post
    assert "systemctl reset-failed %n" in post


def test_daemon_gets_each_accounts_password_and_a_start_deadline() -> None:
    svc = parse_unit("emag-sync.service")["Service"]
    creds = dict(value.split(":", 1) for value in svc["LoadCredential"])
    assert creds == {"main.password": "/etc/emag-sync/main.password", "fbe.password": "/etc/emag-sync/fbe.password"}
    # READY=1 comes before the database (it waits on its own), so the start has a deadline again
    assert seconds(svc["TimeoutStartSec"][0]) <= 120


def test_monitor_gets_no_secrets_and_starts_on_its_own() -> None:
    unit = parse_unit("emag-sync-monitor.service")
    assert "LoadCredential" not in unit["Service"]
    assert "emag-sync.service" not in " ".join(unit["Unit"].get("After", []) + unit["Unit"].get("Requires", []))


def test_monitor_starts_without_account_secrets(tmp_path: Path) -> None:
    """The monitor unit hands over no credentials, so the monitor must load a configuration
    whose password files it cannot read: it gets past the configuration and fails on the
    database, which refuses it here (69), never on the secrets with EX_CONFIG (78), which
    would leave the unit dead without a restart."""
    config = tmp_path / "emag-sync.toml"
    config.write_text(
        '[database]\nurl = "postgresql://postgres@127.0.0.1:1/postgres"\nconnect_timeout_s = 2.0\n'
        '[accounts.main]\nbase_url = "http://127.0.0.1:9/api-3"\nusername = "main@example.test"\n'
        f'password_file = "{tmp_path}/absent/main.password"\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    proc = subprocess.run(
        [sys.executable, "-m", "monitor.cli", "--config", str(config), "once"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == EXIT_UNAVAILABLE, proc.stderr
    assert "database unavailable" in proc.stderr and "configuration error" not in proc.stderr
