"""/metrics and /healthz with aiohttp.web, on the event loop (no thread).

/metrics awaits a database snapshot (bounded by monitor.statement_timeout_s) and renders
it with a fresh registry; when the database is unreachable it still answers 200 with
`emag_sync_up 0` and the monitor's own series, so Prometheus' `up` means "the monitor
runs" and `emag_sync_up` means "the database answers".
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from daemon import logs
from daemon.config import Settings
from daemon.store import Store, StoreError
from daemon.store.observe import ping, read_snapshot
from monitor.metrics import render
from monitor.state import MonitorState

log = structlog.get_logger("monitor.http")

HEALTHY_PASS_INTERVALS = 3  # /healthz is 503 once the last pass is older than 3 x interval_s


@dataclass
class MonitorContext:
    """What the handlers read; `store` is None until the database has been reached."""

    settings: Settings
    state: MonitorState
    store: Store | None = None


CONTEXT = web.AppKey("monitor", MonitorContext)


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    snapshot = None
    if ctx.store is not None:
        try:
            snapshot = await read_snapshot(
                ctx.store,
                timeout_s=ctx.settings.monitor.statement_timeout_s,
                stale_after_s=ctx.settings.stuck_threshold_s,
                max_age_s=ctx.settings.monitor.max_run_age_s,
            )
        except StoreError as exc:
            log.warning("monitor.scrape_database_error", error=str(exc))
    body = render(ctx.settings, ctx.state, snapshot)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def health(ctx: MonitorContext) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body): 200 when the database answers and the last pass is recent."""
    state, interval_s = ctx.state, ctx.settings.monitor.interval_s
    reasons: list[str] = []
    database = "unreachable"
    if ctx.store is None:
        reasons.append(f"waiting for database: {state.last_error or 'connecting'}")
    else:
        try:
            await ping(ctx.store, ctx.settings.monitor.statement_timeout_s)
            database = "ok"
        except StoreError as exc:
            reasons.append(f"database unreachable: {exc}")
    age = state.last_pass_age_s()
    limit = HEALTHY_PASS_INTERVALS * interval_s
    if age is None:
        reasons.append("no successful recovery pass yet")
    elif age > limit:
        reasons.append(f"last successful pass {age:.0f}s ago (limit {limit:g}s)")
    body = {
        "status": "ok" if not reasons else "unhealthy",
        "reasons": [logs.REDACTOR.text(r) for r in reasons],
        "database": database,
        "last_pass_age_s": None if age is None else round(age, 3),
        "running": state.running,
        "stale_heartbeat_runs": state.stale_alive,
    }
    return (200 if not reasons else 503), body


async def healthz(request: web.Request) -> web.Response:
    status, body = await health(request.app[CONTEXT])
    return web.json_response(body, status=status)


def make_app(ctx: MonitorContext) -> web.Application:
    app = web.Application()
    app[CONTEXT] = ctx
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


@asynccontextmanager
async def serve_http(ctx: MonitorContext, host: str, port: int) -> AsyncIterator[tuple[str, int]]:
    """Listen on host:port (0: any free port) until the block exits; yields the bound address."""
    runner = web.AppRunner(make_app(ctx), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        address = runner.addresses[0]
        log.info("monitor.listening", host=address[0], port=address[1])
        yield address[0], address[1]
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
