"""The monitor as Prometheus sees it: promtool lints the exposition and runs the alert
tests, the example config and the Grafana dashboard are valid, and a real Prometheus
server scrapes the monitor and answers a PromQL query with a run the test inserted."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import asyncpg
import pytest

from daemon.config import Settings
from daemon.store import Store
from monitor.http import MonitorContext
from monitor.recovery_loop import run_pass
from monitor.state import MonitorState
from sandbox.testbed import REPO
from tests.history import SCHEMA, insert_run, seed, settings_for
from tests.scrape import get, monitor_http
from tests.tools import debian_tool

CONFIG = REPO / "config" / "prometheus"


async def metrics_body(settings: Settings, conn: asyncpg.Connection, store: Store) -> str:
    await seed(conn)
    state = MonitorState()
    await run_pass(store, settings, state, "emag-sync-monitor test:1")
    async with monitor_http(MonitorContext(settings, state, store)) as base:
        return (await get(base + "/metrics"))[2]


async def test_promtool_check_metrics_accepts_the_exposition(
    db_url: str, conn: asyncpg.Connection, store: Store
) -> None:
    body = await metrics_body(settings_for(db_url), conn, store)
    result = subprocess.run(
        [debian_tool("promtool", "prometheus"), "check", "metrics"],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == ""  # no lint findings at all


def test_promtool_alert_rule_tests_pass() -> None:
    result = subprocess.run(
        [debian_tool("promtool", "prometheus"), "test", "rules", str(CONFIG / "alerts_test.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_silent_cases() -> None:
    rules = (CONFIG / "alerts.yml").read_text()
    tests = (CONFIG / "alerts_test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(names) == 9
    blocks = tests.split("- eval_time:")[1:]
    for name in names:
        mine = [b for b in blocks if f"alertname: {name}\n" in b]
        assert any("exp_alerts: []" in b for b in mine), f"{name}: no not-firing case"
        assert any("exp_labels:" in b for b in mine), f"{name}: no firing case"


def test_example_scrape_config_is_valid(tmp_path: Path) -> None:
    text = (CONFIG / "prometheus.yml.example").read_text()
    installed = "/opt/emag-sync/share/prometheus/alerts.yml"  # where deploy_sync_system.sh puts it (test_deploy)
    assert installed in text
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(installed, str(CONFIG / "alerts.yml")))
    result = subprocess.run(
        [debian_tool("promtool", "prometheus"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


async def test_grafana_dashboard_is_valid_and_its_history_sql_runs(conn: asyncpg.Connection) -> None:
    dashboard = json.loads((REPO / "config" / "grafana" / "emag-sync.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    exprs = " ".join(t.get("expr", "") for p in panels for t in p["targets"])
    for name in (
        "emag_sync_last_success_timestamp_seconds",
        "emag_sync_runs_total",
        "emag_sync_duration_seconds",
        "emag_sync_last_success_items_seen",
        "emag_sync_api_throttled_total",
        "emag_sync_recovered_syncs_total",
        "emag_sync_api_latency_seconds",
        "emag_sync_api_wait_seconds_total",
        "emag_sync_build_info",
    ):
        assert name in exprs, name
    sql = [t["rawSql"] for p in panels for t in p["targets"] if "rawSql" in t]
    assert len(sql) == 1 and "emag_sync.sync_runs" in sql[0]
    query = (
        sql[0]
        .replace("$__timeFilter(started_at)", "started_at > now() - interval '1 day'")
        .replace("${account:regex}", "main|fbe")
    )
    await insert_run(conn, status="failed", started_ago_s=60)
    rows = await conn.fetch(query)
    assert [r["status"] for r in rows] == ["failed"] and rows[0]["duration_s"] == 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prom_query(base: str, expr: str) -> list[dict]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=5) as response:
        doc = json.loads(response.read())
    assert doc["status"] == "success", doc
    return doc["data"]["result"]


@pytest.mark.slow
async def test_real_prometheus_scrapes_the_last_success(
    db_url: str, conn: asyncpg.Connection, store: Store, tmp_path: Path
) -> None:
    import anyio

    settings = settings_for(db_url)
    server: subprocess.Popen | None = None
    try:
        run_id = await insert_run(conn, "fbe", "orders", status="completed", started_ago_s=90, duration_s=12)
        finished = await conn.fetchval(
            f"SELECT extract(epoch FROM finished_at)::float8 FROM {SCHEMA}.sync_runs WHERE id = $1", run_id
        )
        state = MonitorState()
        await run_pass(store, settings, state, "emag-sync-monitor test:1")
        async with monitor_http(MonitorContext(settings, state, store)) as base:
            target = base.removeprefix("http://")
            port = free_port()
            config = tmp_path / "prometheus.yml"
            config.write_text(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                f"rule_files:\n  - {CONFIG / 'alerts.yml'}\n"
                "scrape_configs:\n  - job_name: emag-sync-monitor\n    scrape_interval: 1s\n"
                f"    static_configs:\n      - targets: ['{target}']\n"
            )
            with (tmp_path / "prometheus.log").open("w") as log:  # the child keeps its own descriptor
                server = subprocess.Popen(
                    [
                        debian_tool("prometheus", "prometheus"),
                        f"--config.file={config}",
                        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                        f"--web.listen-address=127.0.0.1:{port}",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            prom = f"http://127.0.0.1:{port}"
            result: list[dict] = []
            deadline = time.monotonic() + 45
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    result = await anyio.to_thread.run_sync(
                        prom_query, prom, 'emag_sync_last_success_timestamp_seconds{account="fbe",resource="orders"}'
                    )
                except OSError:
                    result = []
                if result:
                    break
                await anyio.sleep(0.5)
            assert result, (
                f"no sample within 45 s; prometheus log:\n{(tmp_path / 'prometheus.log').read_text()[-2000:]}"
            )
            assert result[0]["metric"]["job"] == "emag-sync-monitor"
            assert float(result[0]["value"][1]) == pytest.approx(finished, abs=0.001)
            up = await anyio.to_thread.run_sync(prom_query, prom, 'up{job="emag-sync-monitor"}')
            assert up[0]["value"][1] == "1"
            db_up = await anyio.to_thread.run_sync(prom_query, prom, "emag_sync_up")
            assert db_up[0]["value"][1] == "1"
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(5)
