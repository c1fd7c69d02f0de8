"""Run-end notifications: NOTIFY emag_sync_runs for every run that ends, whoever closes it,
and signed webhook POSTs with bounded retries from an outbox, never on a run's time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import asyncpg
import pytest
from aiohttp import web

from daemon import webhooks
from daemon.settings import WebhookSettings
from daemon.store import Progress, Store
from daemon.store.recovery import recover_stuck
from daemon.webhooks import BATCH, PARALLEL, WebhookSender
from sandbox.testbed import config_doc, write_config
from tests.processes import query, sandbox_process, start_emag_sync, stop, wait_until

SECRET = "s3cret-hook"


class Receiver:
    """The ERP's endpoint: records what it gets; `mode` ok | error | hang."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode, self.got = mode, []

    async def handle(self, request: web.Request) -> web.Response:
        self.got.append((dict(request.headers), await request.read()))
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return web.Response(status=500 if self.mode == "error" else 204)


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    finally:
        await runner.cleanup()


async def close_a_run(store: Store, status: str = "completed") -> int:
    async with store.lease("main", "orders") as lease:
        opened = await lease.open_run("incremental", "schedule")
        await lease.close_run(status, Progress(pages_done=2, items_seen=150, items_written=7), None)
    return opened.id


async def deliveries(conn: asyncpg.Connection) -> list[dict]:
    return [dict(r) for r in await conn.fetch("SELECT * FROM emag_sync.webhook_deliveries ORDER BY id")]


async def test_every_run_end_is_notified_whoever_closes_it(store: Store, conn: asyncpg.Connection) -> None:
    listener = conn
    heard: list[dict] = []
    await listener.add_listener("emag_sync_runs", lambda *args: heard.append(json.loads(args[3])))
    closed = await close_a_run(store)
    async with store.lease("main", "offers") as lease:  # a run whose process dies...
        dead = (await lease.open_run("full", "schedule")).id
    await listener.execute(
        "UPDATE emag_sync.sync_runs SET heartbeat_at = now() - interval '1 hour' WHERE id = $1", dead
    )
    await recover_stuck(store, stale_after_s=60, max_age_s=7200, by="test")  # ...is closed by the monitor
    await asyncio.sleep(0.2)
    assert [(n["run_id"], n["status"]) for n in heard] == [(closed, "completed"), (dead, "failed")]
    first = heard[0]
    assert (first["event"], first["account"], first["resource"], first["items_written"]) == (
        "run.ended",
        "main",
        "orders",
        7,
    )
    assert "stuck" in heard[1]["error"]


async def test_a_webhook_is_posted_signed_and_logged(store: Store, conn: asyncpg.Connection) -> None:
    receiver = Receiver()
    async with receiving(receiver) as url:
        await store.set_webhook_targets((url,))
        run_id = await close_a_run(store)
        sender = WebhookSender(store, lambda: WebhookSettings(urls=(url,), secret=SECRET, timeout_s=2))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run)
            with anyio.fail_after(10):
                while not receiver.got:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    (headers, body) = receiver.got[0]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Emag-Sync-Signature"] == expected and headers["X-Emag-Sync-Event"] == "run.ended"
    payload = json.loads(body)
    assert (payload["run_id"], payload["status"], payload["pages_done"]) == (run_id, "completed", 2)
    (row,) = await deliveries(conn)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 204)
    assert headers["X-Emag-Sync-Delivery"] == str(row["id"])


@pytest.mark.parametrize("mode", ["down", "error"])
async def test_a_receiver_that_fails_gets_bounded_retries(
    store: Store, conn: asyncpg.Connection, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks, "RETRY_BASE_S", 0.05)
    receiver = Receiver("error")
    async with receiving(receiver) as url:
        target = url if mode == "error" else "http://127.0.0.1:1/hook"  # nothing listens there
        await store.set_webhook_targets((target,))
        await close_a_run(store)
        sender = WebhookSender(
            store, lambda: WebhookSettings(urls=(target,), secret=SECRET, timeout_s=1, max_attempts=3)
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run)
            with anyio.fail_after(15):
                while (await deliveries(conn))[0]["status"] == "pending":
                    sender.poke()
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    (row,) = await deliveries(conn)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert (row["last_error"] == "HTTP 500") if mode == "error" else ("ClientConnector" in row["last_error"])
    assert len(receiver.got) == (3 if mode == "error" else 0)


async def test_a_receiver_that_hangs_never_holds_a_run_or_a_stop(store: Store, conn: asyncpg.Connection) -> None:
    receiver = Receiver("hang")
    async with receiving(receiver) as url:
        await store.set_webhook_targets((url,))
        await close_a_run(store)
        sender = WebhookSender(store, lambda: WebhookSettings(urls=(url,), secret=SECRET, timeout_s=0.5))
        async with anyio.create_task_group() as tg:
            tg.start_soon(sender.run)
            with anyio.fail_after(10):
                while not receiver.got:
                    await anyio.sleep(0.02)
            began = time.monotonic()
            await close_a_run(store)  # the sender is stuck in its POST: runs close at their own pace
            close_s = time.monotonic() - began
            with anyio.fail_after(5):
                while (await deliveries(conn))[0]["attempts"] < 1 or (await deliveries(conn))[0]["last_error"] is None:
                    await anyio.sleep(0.05)
            began = time.monotonic()
            tg.cancel_scope.cancel()
        stop_s = time.monotonic() - began
    first = (await deliveries(conn))[0]
    assert close_s < 0.5 and stop_s < 0.5
    assert first["status"] == "pending" and first["last_error"] == "no answer within 0.5 s"


async def test_an_expired_claim_is_the_new_claimants_to_record(store: Store, conn: asyncpg.Connection) -> None:
    await store.set_webhook_targets(("http://127.0.0.1:9/hook",))
    await close_a_run(store)
    (first,) = await store.claim_deliveries(10, lease_s=60)
    await conn.execute("UPDATE emag_sync.webhook_deliveries SET next_attempt_at = now()")  # the claim ran out
    (second,) = await store.claim_deliveries(10, lease_s=60)  # another sender takes it
    assert (first["id"], first["attempts"], second["attempts"]) == (second["id"], 1, 2)
    await store.delivery_attempted(first["id"], first["attempts"], "failed", None, "late")  # the first one, late
    (row,) = await deliveries(conn)
    assert (row["status"], row["last_error"]) == ("pending", None)  # not overwritten
    await store.delivery_attempted(second["id"], second["attempts"], "delivered", 204, None)
    (row,) = await deliveries(conn)
    assert (row["status"], row["last_status"]) == ("delivered", 204)


def test_a_claim_outlasts_a_whole_batch() -> None:
    sender = WebhookSender(None, lambda: WebhookSettings(timeout_s=5.0))  # type: ignore[arg-type]
    rounds = -(-BATCH // PARALLEL)  # the batch's last delivery waits for the rounds before it
    assert sender._claim_s() > rounds * 5.0


@pytest.mark.slow
def test_the_daemon_posts_each_run_end_and_logs_the_deliveries(db_url: str, tmp_path: Path) -> None:
    receiver_log = tmp_path / "received.jsonl"
    script = tmp_path / "receiver.py"
    script.write_text(
        "import sys\nfrom aiohttp import web\n"
        "async def hook(request):\n"
        "    body = await request.read()\n"
        "    with open(sys.argv[1], 'a') as f: f.write(request.headers['X-Emag-Sync-Signature'] + ' ' + "
        "body.decode() + '\\n')\n"
        "    return web.Response(status=200)\n"
        "app = web.Application(); app.router.add_post('/hook', hook)\n"
        "web.run_app(app, host='127.0.0.1', port=int(sys.argv[2]), print=None)\n"
    )
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    receiver = subprocess.Popen([sys.executable, str(script), str(receiver_log), str(port)])
    try:
        with sandbox_process(tmp_path, "--offers", "200", "--orders", "50") as base_url:
            doc = config_doc(
                db_url,
                base_url,
                accounts=("main",),
                schedule={
                    "offers_interval_s": 3600.0,
                    "orders_interval_s": 3600.0,
                    "jitter_s": 0.2,
                    "shutdown_grace_s": 0.5,
                },
            )
            doc["webhooks"] = {"urls": [f"http://127.0.0.1:{port}/hook"], "secret": SECRET}
            config = write_config(tmp_path / "c.toml", doc)
            proc = start_emag_sync(config, "run", log=tmp_path / "d.log")
            try:
                wait_until(
                    lambda: receiver_log.exists() and len(receiver_log.read_text().splitlines()) == 2,
                    30,
                    "a POST for each of the two runs",
                )
                shown = subprocess.run(
                    [sys.executable, "-m", "daemon.cli", "--config", str(config), "deliveries"],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
            finally:
                assert stop(proc, signal.SIGTERM) == 0
    finally:
        receiver.terminate()
        receiver.wait(10)
    for line in receiver_log.read_text().splitlines():
        sig, body = line.split(" ", 1)
        assert sig == "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
        assert json.loads(body)["status"] == "completed"
    assert shown.returncode == 0 and shown.stdout.count(" delivered ") == 2
    assert (
        query(db_url, "SELECT count(*) AS n FROM emag_sync.webhook_deliveries WHERE status = 'delivered'")[0]["n"] == 2
    )
