"""`emag-sync-monitor run`: the resident monitor systemd supervises. One task group owns
the HTTP server, the database connection and recovery loop, the watchdog and the
signals. HTTP comes first and READY=1 with it, so a database outage shows as
/healthz 503 and `emag_sync_up 0`, never as a start that times out."""

from __future__ import annotations

import time

import anyio
import structlog

from daemon.config import Settings
from daemon.constants import EXIT_OK
from daemon.identity import identity
from daemon.lifecycle import reread, watch_signals
from daemon.notify import Notifier, watchdog_loop
from daemon.store import SchemaMismatch, Store, StoreUnavailable
from daemon.store.store import DB_RETRY_MAX_S
from monitor.http import MonitorContext, serve_http
from monitor.recovery_loop import recovery_loop
from monitor.state import MonitorState

log = structlog.get_logger("monitor.service")

POOL_SIZE = 4  # passes, scrapes and health checks; the monitor holds no long leases
APPLICATION_NAME = "emag-sync-monitor"


async def open_monitor_store(settings: Settings) -> Store:
    """A small pool whose per-statement client timeout is the database's setting."""
    return await Store.open(settings.database, max_size=POOL_SIZE, application_name=APPLICATION_NAME)


class MonitorService:
    def __init__(self, settings: Settings, notifier: Notifier | None = None, config_path: str | None = None) -> None:
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.ctx = MonitorContext(settings, MonitorState())
        self.by = identity("emag-sync-monitor")
        self.address: tuple[str, int] | None = None
        self.serving = anyio.Event()
        self._stop = anyio.Event()
        self._fatal: BaseException | None = None

    @property
    def state(self) -> MonitorState:
        return self.ctx.state

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    def stop(self) -> None:
        """What SIGTERM does; tests call it directly."""
        self._stop.set()

    def _on_stop_signal(self, name: str) -> None:
        log.info("monitor.signal", signal=name)
        self.stop()

    def alive(self) -> bool:
        """The watchdog's question: has the loop ticked (a pass, or a connection attempt) lately?"""
        limit = 3 * self.settings.monitor.interval_s + self.settings.database.statement_timeout_s + DB_RETRY_MAX_S
        return time.monotonic() - self.state.last_tick_mono < limit

    async def serve(self) -> int:
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_signals, self.reload, self._on_stop_signal)
                tg.start_soon(self._stop_on_request, tg.cancel_scope)
                async with serve_http(self.ctx, self.settings.monitor.host, self.settings.monitor.port) as address:
                    self.address = address
                    self.serving.set()
                    self.notifier.ready(f"serving on {address[0]}:{address[1]} · {self.state.status_line()}")
                    log.info("monitor.ready", host=address[0], port=address[1], by=self.by)
                    tg.start_soon(watchdog_loop, self.notifier, self.alive)
                    await self._work(tg.cancel_scope)
        finally:
            if self.ctx.store is not None:
                await self.ctx.store.close()
        if self._fatal is not None:
            raise self._fatal  # SchemaMismatch: the CLI exits 79 and systemd does not restart
        self.notifier.stopping("stopped")
        self.notifier.close()
        log.info("monitor.stopped")
        return EXIT_OK

    async def _work(self, scope: anyio.CancelScope) -> None:
        store = await self._connect()
        try:
            await store.check_schema()
        except SchemaMismatch as exc:
            await store.close()
            self._fatal = exc
            scope.cancel()
            return
        self.ctx.store = store
        log.info("monitor.database_connected")
        await recovery_loop(
            store,
            lambda: self.settings,
            self.state,
            self.by,
            on_pass=lambda: self.notifier.status(self.state.status_line()),
        )

    async def _connect(self) -> Store:
        def waiting(attempt: int, retry_in_s: float, error: StoreUnavailable) -> None:
            self.state.last_error = str(error)
            self.state.tick()
            self.notifier.status(f"waiting for database (attempt {attempt}, retry in {retry_in_s:.0f}s): {error}"[:200])
            log.warning("monitor.database_unavailable", attempt=attempt, retry_in_s=retry_in_s, error=str(error))

        # A database that refuses us is waited for too: the monitor is what reports it (emag_sync_up 0).
        return await Store.open_when_up(
            self.settings.database,
            max_size=POOL_SIZE,
            application_name=APPLICATION_NAME,
            on_wait=waiting,
            wait_on_rejection=True,
        )

    async def _stop_on_request(self, scope: anyio.CancelScope) -> None:
        await self._stop.wait()
        self.notifier.stopping("stopping")
        log.info("monitor.stopping")
        scope.cancel()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration (intervals, thresholds, retention, accounts, log);
        a bad file keeps the running one. The listen address and the database need a restart."""
        new = reread(self.config_path, self.notifier, "monitor", need_secrets=False)
        if new is None:
            return
        old = self.settings
        for key, before, after in (
            ("monitor.listen", (old.monitor.host, old.monitor.port), (new.monitor.host, new.monitor.port)),
            ("database", old.database, new.database),
        ):
            if before != after:
                log.warning("monitor.reload_needs_restart", key=key, reason="kept until the monitor restarts")
        self.ctx.settings = new
        log.info("monitor.reloaded", accounts=",".join(new.names), interval_s=new.monitor.interval_s)
        self.notifier.ready(self.state.status_line())
