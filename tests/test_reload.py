"""Reload as systemd does it (ExecReload=): the configuration is checked first, and a process
that gets SIGHUP re-reads it, keeping the running one when the new file is broken."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox.testbed import REPO, config_doc, toml_text, write_config
from tests.processes import stop, wait_until


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE", "NOTIFY_SOCKET", "WATCHDOG"))}


def test_the_reload_check_is_quiet_when_good_and_one_line_78_when_broken(tmp_path: Path, db_url: str) -> None:
    config = write_config(tmp_path / "c.toml", config_doc(db_url, "http://127.0.0.1:9/api-3"))

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "daemon.cli", "--config", str(config), "check-config", "--secrets", "--quiet"],
            cwd=REPO,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )

    good = check()
    assert (good.returncode, good.stdout, good.stderr) == (0, "", "")
    config.write_text(config.read_text().replace("[sync]", "[sync\n"))
    bad = check()
    assert bad.returncode == 78 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "TOML syntax error" in bad.stderr


@pytest.mark.slow
def test_the_monitor_rereads_its_configuration_on_sighup(tmp_path: Path, db_url: str) -> None:
    doc = config_doc(db_url, "http://127.0.0.1:9/api-3")
    doc["monitor"] = {"listen": "127.0.0.1:0", "interval_s": 30.0}
    config = write_config(tmp_path / "c.toml", doc)
    log = tmp_path / "monitor.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "--config", str(config), "run"],
            cwd=REPO,
            env=_clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: "monitor.database_connected" in log.read_text(), 20, "the monitor connected")
        doc["monitor"]["interval_s"] = 2.0
        config.write_text(toml_text(doc))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "monitor.reloaded" in log.read_text(), 10, "monitor.reloaded")
        assert "monitor.reloaded accounts=main,fbe interval_s=2" in log.read_text()
        config.write_text(config.read_text().replace("[monitor]", "[monitor\n"))
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "monitor.reload_failed" in log.read_text(), 10, "monitor.reload_failed")
        assert proc.poll() is None  # a broken file is not a reason to stop (nor is SIGHUP itself)
    finally:
        code = stop(proc)
    assert code == 0, log.read_text()[-2000:]
