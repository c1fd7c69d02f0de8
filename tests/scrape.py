"""The monitor's HTTP endpoints as the tests read them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from monitor.http import MonitorContext, serve_http


@asynccontextmanager
async def monitor_http(ctx: MonitorContext) -> AsyncIterator[str]:
    """The monitor's HTTP server on a free loopback port; yields its base URL."""
    async with serve_http(ctx, "127.0.0.1", 0) as (host, port):
        yield f"http://{host}:{port}"


async def get(url: str) -> tuple[int, str, str]:
    """(status, Content-Type, body)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()
