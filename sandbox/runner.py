"""Run the sandbox inside the current event loop: `async with Sandbox(market) as sb:`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from aiohttp import web

from sandbox.market import Market
from sandbox.server import API_PREFIX, create_app

SHUTDOWN_TIMEOUT_S = 1.0


class Sandbox:
    """Serves `market` on host:port (port 0 = a free one) until the block exits.

    `app_opts` go to `create_app` (latency_s, jitter_s, rate_mode, clock, ...).
    Handlers still running at exit (a `hang` fault) are cancelled after
    SHUTDOWN_TIMEOUT_S; handlers are also cancelled when their client goes away.
    """

    def __init__(self, market: Market, *, host: str = "127.0.0.1", port: int = 0, **app_opts: Any) -> None:
        self.market = market
        self.host = host
        self.port = port
        self.app = create_app(market, **app_opts)
        self._runner: web.AppRunner | None = None

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base, like https://marketplace-api.emag.ro/api-3."""
        return self.root_url + API_PREFIX

    @property
    def control_url(self) -> str:
        return self.root_url + "/_sandbox"

    async def start(self) -> None:
        runner = web.AppRunner(
            self.app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_TIMEOUT_S, access_log=None
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
