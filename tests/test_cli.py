"""`emag-sync once | history | status` as an operator runs them: real processes, real exit codes."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from sandbox.testbed import config_doc, write_config
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

pytestmark = pytest.mark.slow


def test_once_then_history_and_status(db_url: str, tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--offers", "230", "--orders", "40") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url))
        once = start_emag_sync(config, "once")
        out, err = once.communicate(timeout=90)
        assert once.returncode == 0, err
        assert sorted(out.split("\n")[:4]) == sorted(out.split("\n")[:4])
        for pair in (
            "main/offers: completed",
            "main/orders: completed",
            "fbe/offers: completed",
            "fbe/orders: completed",
        ):
            assert pair in out
        history = start_emag_sync(config, "history", "--limit", "10")
        out, _ = history.communicate(timeout=30)
        lines = out.splitlines()
        assert lines[0].split()[:6] == ["ID", "ACCOUNT", "RESOURCE", "MODE", "TRIGGER", "STATUS"]
        assert len(lines) == 5 and all("completed" in line for line in lines[1:])
        as_json = start_emag_sync(config, "history", "--json")
        rows = json.loads(as_json.communicate(timeout=30)[0])
        assert {(r["account"], r["resource"], r["status"]) for r in rows} == {
            (a, r, "completed") for a in ("main", "fbe") for r in ("offers", "orders")
        }
        status = start_emag_sync(config, "status")
        out, _ = status.communicate(timeout=30)
        assert "Running now: nothing" in out and "main/offers" in out and "ago" in out


def test_two_concurrent_once_for_one_pair(db_url: str, tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--offers", "900", "--orders", "10", "--latency-ms", "200") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url))
        args = ("once", "--account", "main", "--resource", "offers")
        first = start_emag_sync(config, *args)
        wait_until(
            lambda: query(db_url, "SELECT 1 FROM emag_sync.sync_runs WHERE status = 'running'"),
            30,
            "the first run to start",
        )
        second = start_emag_sync(config, *args)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 75
        assert out.strip() == "main/offers: skipped - main/offers: another run holds the lock"
        assert first.wait(90) == 0
        stop(first)
    runs = query(db_url, "SELECT status FROM emag_sync.sync_runs")
    assert [r["status"] for r in runs] == ["completed"]  # the loser never opened a run


def test_ctrl_c_ends_the_run_cancelled(db_url: str, tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--offers", "1500", "--orders", "10", "--latency-ms", "200") as base_url:
        config = write_config(tmp_path / "c.toml", config_doc(db_url, base_url, accounts=("main",)))
        proc = start_emag_sync(config, "once", "--resource", "offers")
        wait_until(
            lambda: query(db_url, "SELECT 1 FROM emag_sync.sync_runs WHERE pages_done >= 2"), 40, "two committed pages"
        )
        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 130
        assert time.monotonic() - began < 5
        stop(proc)
    (run,) = query(db_url, "SELECT status, error, pages_done, finished_at FROM emag_sync.sync_runs")
    assert run["status"] == "cancelled" and run["finished_at"] is not None and run["pages_done"] >= 2
    assert query(db_url, "SELECT count(*) AS n FROM emag_sync.offers")[0]["n"] >= 200  # committed pages kept


def test_failed_and_timeout_exit_1(db_url: str, tmp_path: Path) -> None:
    with sandbox_process(tmp_path, "--offers", "500", "--orders", "10", "--latency-ms", "300") as base_url:
        doc = config_doc(db_url, base_url, accounts=("main",), sync={"timeout_s": 1.0})
        config = write_config(tmp_path / "c.toml", doc)
        proc = start_emag_sync(config, "once", "--resource", "offers")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
        assert "main/offers: timeout" in out
        bad = config_doc(db_url, base_url, accounts=("main",))
        bad["accounts"]["main"]["password"] = "wrong"
        config = write_config(tmp_path / "bad.toml", bad)
        proc = start_emag_sync(config, "once", "--resource", "orders")
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 1
        assert "main/orders: failed" in out and "403" in out and "wrong" not in out
    statuses = sorted(r["status"] for r in query(db_url, "SELECT status FROM emag_sync.sync_runs"))
    assert statuses == ["failed", "timeout"]
