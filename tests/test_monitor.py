"""The monitor: /metrics family by family, /healthz, the resident service (database down
at start, READY/STATUS/STOPPING, SIGTERM) and `emag-sync-monitor once`, in process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import __version__
from daemon.notify import Notifier
from daemon.store import Store, lock_key
from monitor import cli as monitor_cli
from monitor.http import MonitorContext
from monitor.recovery_loop import run_pass
from monitor.service import MonitorService
from monitor.state import MonitorState
from sandbox.testbed import connection, toml_text
from tests.history import SCHEMA, insert_run, seed, settings_for
from tests.notify_socket import NotifySocket
from tests.scrape import get, monitor_http


def families(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """name -> {sorted labels: value}, with the family type checked below by name."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def pair(account: str, resource: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"account": account, "resource": resource, **extra}.items()))


async def test_metrics_family_by_family(db_url: str, conn: asyncpg.Connection, store: Store) -> None:
    settings = settings_for(db_url)
    async with connection(db_url) as holder:  # a live run's session, holding main/offers' lock
        ids = await seed(conn)
        await conn.execute(
            f"UPDATE {SCHEMA}.sync_runs SET api_latency_p50_s = 0.2, api_latency_p95_s = 0.9, "
            "api_latency_max_s = 2.5 WHERE id = $1",
            ids["ok_last"],
        )
        await conn.execute(
            f"UPDATE {SCHEMA}.sync_run_totals SET api_wait_s = 12.5 WHERE account = 'main' "
            "AND resource = 'offers' AND status = 'completed'"
        )
        await conn.execute(f"UPDATE {SCHEMA}.sync_runs SET api_wait_s = 1.5 WHERE id = $1", ids["alive"])
        await conn.execute(  # two "sync now" presses no run has served yet
            f"INSERT INTO {SCHEMA}.sync_requests (account, resource, requested_at) "
            "VALUES ('main', 'orders', now() - interval '90 s'), ('main', 'orders', now())"
        )
        await holder.execute("SELECT pg_advisory_lock($1)", lock_key(SCHEMA, "main", "offers"))
        state = MonitorState()
        report = await run_pass(store, settings, state, "emag-sync-monitor test:1")
        assert [f["id"] for f in report.failed] == [ids["dead"]]
        last_ok = await conn.fetchval(
            f"SELECT extract(epoch FROM finished_at)::float8 FROM {SCHEMA}.sync_runs WHERE id = $1", ids["ok_last"]
        )
        async with monitor_http(MonitorContext(settings, state, store)) as base:
            status, content_type, text = await get(base + "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    m, t = families(text), types(text)
    assert m["emag_sync_up"] == {(): 1.0}
    # run outcomes: monotonic totals (the trigger), zero-filled for every known pair and status
    runs = m["emag_sync_runs_total"]
    assert t["emag_sync_runs"] == "counter"
    assert runs[pair("main", "offers", status="completed")] == 2
    assert runs[pair("main", "offers", status="failed")] == 1
    assert runs[pair("main", "offers", status="timeout")] == 0
    assert runs[pair("main", "orders", status="timeout")] == 1
    assert runs[pair("fbe", "offers", status="cancelled")] == 1
    assert runs[pair("fbe", "orders", status="failed")] == 1  # the dead run this pass failed
    assert len(runs) == 4 * 4  # 2 accounts x 2 resources x 4 terminal statuses
    assert m["emag_sync_errors_total"][pair("main", "offers")] == 1
    assert m["emag_sync_errors_total"][pair("main", "orders")] == 1
    assert m["emag_sync_errors_total"][pair("fbe", "offers")] == 0
    assert m["emag_sync_items_seen_total"][pair("main", "offers")] == 500 + 700 + 5
    assert m["emag_sync_items_written_total"][pair("main", "orders")] == 9
    # API counters per account: ended runs plus the live one
    assert m["emag_sync_api_requests_total"] == {
        (("account", "main"),): 10 + 12 + 3 + 4 + 2 + 7,
        (("account", "fbe"),): 0,
    }
    assert m["emag_sync_api_retries_total"][(("account", "main"),)] == 6
    assert m["emag_sync_api_throttled_total"][(("account", "main"),)] == 1 + 2 + 5
    assert m["emag_sync_api_wait_seconds_total"] == {(("account", "main"),): 12.5 + 1.5, (("account", "fbe"),): 0}
    # is eMAG slow, or are we: the last completed run's latency quantiles
    latency = m["emag_sync_api_latency_seconds"]
    assert t["emag_sync_api_latency_seconds"] == "gauge"
    assert {q: latency[pair("main", "offers", quantile=q)] for q in ("0.5", "0.95", "1")} == {
        "0.5": 0.2,
        "0.95": 0.9,
        "1": 2.5,
    }
    assert pair("main", "orders", quantile="0.5") not in latency  # its run recorded none (older release)
    (build,) = m["emag_sync_build_info"]
    assert dict(build)["version"] == __version__ and m["emag_sync_build_info"][build] == 1
    # last success per pair
    success = m["emag_sync_last_success_timestamp_seconds"]
    assert t["emag_sync_last_success_timestamp_seconds"] == "gauge"
    assert success[pair("main", "offers")] == pytest.approx(last_ok)
    assert set(success) == {pair("main", "offers"), pair("main", "orders")}  # fbe never succeeded
    assert m["emag_sync_duration_seconds"][pair("main", "offers")] == pytest.approx(42.5)
    assert t["emag_sync_duration_seconds"] == "gauge"
    assert m["emag_sync_last_success_items_seen"][pair("main", "offers")] == 700
    assert m["emag_sync_last_success_items_written"][pair("main", "orders")] == 9
    last = m["emag_sync_last_run_status"]
    assert last[pair("main", "offers", status="failed")] == 1 and last[pair("main", "offers", status="completed")] == 0
    assert last[pair("fbe", "orders", status="failed")] == 1
    # what runs now
    assert m["emag_sync_in_progress"][pair("main", "offers")] == 1
    assert m["emag_sync_in_progress"][pair("fbe", "orders")] == 0
    assert 245 < m["emag_sync_oldest_running_age_seconds"][()] < 300
    assert m["emag_sync_stale_heartbeat_runs"] == {(): 1.0}
    assert m["emag_sync_pending_requests"][pair("main", "orders")] == 2
    assert m["emag_sync_pending_requests"][pair("main", "offers")] == 0
    assert 90 <= m["emag_sync_oldest_pending_request_age_seconds"][pair("main", "orders")] < 120
    # configuration
    assert m["emag_sync_expected_interval_seconds"][pair("main", "offers")] == 900
    assert m["emag_sync_expected_interval_seconds"][pair("fbe", "orders")] == 120
    # tables (refreshed by the pass)
    assert m["emag_products"] == {(("account", "main"),): 8}
    assert m["emag_orders"] == {(("account", "fbe"),): 3, (("account", "main"),): 3}
    # the monitor's own
    assert t["emag_sync_stuck_syncs"] == "counter"
    assert m["emag_sync_stuck_syncs_total"] == {(): 2.0}  # the dead one and the live stale one
    assert m["emag_sync_recovered_syncs_total"] == {(("reason", "max_age"),): 0, (("reason", "stale_heartbeat"),): 1}
    assert m["emag_sync_monitor_passes_total"][(("result", "ok"),)] == 1
    assert m["emag_sync_retention_deleted_runs_total"] == {(): 0.0}
    assert 0 < m["emag_sync_monitor_pass_duration_seconds"][()] < 5
    assert abs(m["emag_sync_monitor_last_pass_timestamp_seconds"][()] - time.time()) < 30
    # nothing unbounded or secret in any label
    labels = {k for series in m.values() for key in series for k, _ in key}
    assert labels <= {"account", "resource", "status", "reason", "result", "quantile", "version", "python"}
    assert "pw-secret" not in text and "h:" not in text


async def test_metrics_when_the_database_is_gone(db_url: str) -> None:
    settings = settings_for(db_url)
    state = MonitorState()
    async with monitor_http(MonitorContext(settings, state, None)) as base:
        status, _, text = await get(base + "/metrics")
        assert status == 200
        m = families(text)
        assert m["emag_sync_up"] == {(): 0.0}
        assert "emag_sync_runs_total" not in m and m["emag_sync_stuck_syncs_total"] == {(): 0.0}
        health_status, _, body = await get(base + "/healthz")
        assert health_status == 503 and json.loads(body)["reasons"][0].startswith("waiting for database")


async def test_healthz_ok_and_its_503_reasons(db_url: str, store: Store) -> None:
    settings = settings_for(db_url, interval_s=1.0)
    ctx = MonitorContext(settings, MonitorState(), store)
    async with monitor_http(ctx) as base:
        status, _, body = await get(base + "/healthz")
        assert status == 503 and json.loads(body)["reasons"] == ["no successful recovery pass yet"]
        await run_pass(store, settings, ctx.state, "t h:1")
        status, content_type, body = await get(base + "/healthz")
        assert status == 200 and content_type.startswith("application/json")
        doc = json.loads(body)
        assert doc["status"] == "ok" and doc["database"] == "ok" and doc["reasons"] == []
        ctx.state.last_pass_mono = time.monotonic() - 10  # > 3 x interval_s
        status, _, body = await get(base + "/healthz")
        assert status == 503 and "last successful pass 10s ago (limit 3s)" in json.loads(body)["reasons"][0]
        await run_pass(store, settings, ctx.state, "t h:1")
        await store.close()  # the database goes away
        status, _, body = await get(base + "/healthz")
        doc = json.loads(body)
        assert status == 503 and doc["database"] == "unreachable"
        assert doc["reasons"][0].startswith("database unreachable")


async def test_service_waits_for_the_database_then_serves_and_stops(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    try:
        unreachable = settings_for("postgresql://postgres@127.0.0.1:1/nothing")
        service = MonitorService(unreachable, Notifier())
        async with anyio.create_task_group() as tg:
            result: list[int] = []

            async def run() -> None:
                result.append(await service.serve())

            tg.start_soon(run)
            with anyio.fail_after(10):
                await service.serving.wait()
                base = f"http://127.0.0.1:{service.address[1]}"
                while service.state.last_error is None:
                    await anyio.sleep(0.05)
            status, _, body = await get(base + "/healthz")
            assert status == 503 and "waiting for database" in json.loads(body)["reasons"][0]
            assert families((await get(base + "/metrics"))[2])["emag_sync_up"] == {(): 0.0}
            service.stop()
        assert result == [0]
        sock.wait_for("READY", "1", timeout_s=5)
        assert any("waiting for database" in v for _, v in sock.fields("STATUS"))
        sock.wait_for("STOPPING", "1", timeout_s=5)
    finally:
        sock.close()


async def test_service_fails_dead_runs_on_its_own_and_reports_status(
    db_url: str, conn: asyncpg.Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = NotifySocket(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    try:
        dead = await insert_run(conn, heartbeat_ago_s=300)
        service = MonitorService(settings_for(db_url), Notifier())
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.serve)
            with anyio.fail_after(15):
                while await conn.fetchval(f"SELECT status FROM {SCHEMA}.sync_runs WHERE id = $1", dead) != "failed":
                    await anyio.sleep(0.05)
                await service.serving.wait()
                base = f"http://127.0.0.1:{service.address[1]}"
                while (await get(base + "/healthz"))[0] != 200:
                    await anyio.sleep(0.05)
            m = families((await get(base + "/metrics"))[2])
            assert m["emag_sync_up"] == {(): 1.0}
            assert m["emag_sync_recovered_syncs_total"][(("reason", "stale_heartbeat"),)] == 1
            service.stop()
        statuses = [v for _, v in sock.fields("STATUS")]
        assert any(v.startswith("last pass ") and v.endswith("· 0 stuck · 0 running") for v in statuses), statuses
        sock.wait_for("WATCHDOG", "1", timeout_s=5)
        sock.wait_for("STOPPING", "1", timeout_s=5)
    finally:
        sock.close()


def write_monitor_config(path: Path, db_url: str, port: int = 0) -> Path:
    doc: dict[str, Any] = {
        "database": {"url": db_url},
        "accounts": {"main": {"base_url": "http://127.0.0.1:9", "username": "u", "password": "pw-secret"}},
        "monitor": {"listen": f"127.0.0.1:{port}", "interval_s": 0.2},
    }
    path.write_text(toml_text(doc))
    return path


def test_once_command(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async def setup() -> int:
        async with connection(db_url) as c:
            await insert_run(c, status="completed", started_ago_s=200 * 86400)
            return await insert_run(c, "main", "orders", heartbeat_ago_s=600)

    dead = asyncio.run(setup())
    config = write_monitor_config(tmp_path / "c.toml", db_url)
    assert monitor_cli.main(["--config", str(config), "once"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"failed run {dead} (main/orders): stuck: no heartbeat for 600 s")
    assert out[-1] == "pass done: 1 running, 1 failed, 0 not heartbeating, 0 old run(s) trimmed"


def test_once_needs_no_account_secrets(db_url: str, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        toml_text(
            {
                "database": {"url": db_url},
                "accounts": {
                    "main": {
                        "base_url": "http://127.0.0.1:9",
                        "username": "u",
                        "password_file": str(tmp_path / "absent"),
                    }
                },
            }
        )
    )
    assert monitor_cli.main(["--config", str(config), "once"]) == 0


def test_config_error_exits_78_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[database]\nurl = "postgresql://x@127.0.0.1/db"\n[monitor]\nlisten = "nope"\n')
    assert monitor_cli.main(["--config", str(bad), "once"]) == 78
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("emag-sync-monitor: configuration error: ")


def test_once_without_schema_exits_79(empty_db_url: str, tmp_path: Path, capsys) -> None:
    config = write_monitor_config(tmp_path / "c.toml", empty_db_url)
    assert monitor_cli.main(["--config", str(config), "once"]) == 79
    assert "emag-sync migrate" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_command_stops_cleanly_on_sigterm(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    config = write_monitor_config(tmp_path / "c.toml", db_url, port)
    healthy = threading.Event()

    def terminate_when_healthy() -> None:
        import urllib.request

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        healthy.set()
                        os.kill(os.getpid(), signal.SIGTERM)  # handled by the monitor's signal receiver
                        return
            except OSError:
                pass
            time.sleep(0.05)

    killer = threading.Thread(target=terminate_when_healthy)
    killer.start()
    try:
        assert monitor_cli.main(["--config", str(config), "run"]) == 0
    finally:
        killer.join(30)
    assert healthy.is_set()
