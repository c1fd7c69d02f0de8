"""`emag-sync run`: the resident process systemd supervises.

One task group owns every task — scheduler, signal watcher, status line, watchdog —
so a failing side loop stops the process loudly instead of dying silently.
"""

from __future__ import annotations

import signal

import anyio
import structlog

from daemon import logs
from daemon.config import ConfigError, Settings, load
from daemon.constants import EXIT_OK
from daemon.notify import Notifier, watchdog_loop
from daemon.scheduler import Scheduler
from daemon.store import Store, StoreRejected, StoreUnavailable
from daemon.sync.runner import Marketplace

log = structlog.get_logger("daemon.service")

DB_RETRY_MIN_S = 1.0
DB_RETRY_MAX_S = 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def open_store(settings: Settings, notifier: Notifier, *, application_name: str = "emag-sync") -> Store:
    """Connect, retrying with capped exponential backoff while STATUS= says why (no crash loop)."""
    delay, attempt = DB_RETRY_MIN_S, 0
    while True:
        attempt += 1
        try:
            return await Store.open(settings.database, max_size=settings.pool_size,
                                    application_name=application_name)
        except StoreRejected:
            raise  # a wrong password or database name: exit 78, no point waiting
        except StoreUnavailable as exc:
            notifier.status(f"waiting for database (attempt {attempt}, retry in {delay:.0f}s): {exc}"[:200])
            log.warning("service.database_unavailable", attempt=attempt, retry_in_s=delay, error=str(exc))
            await anyio.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX_S)


async def open_store_or_stop(settings: Settings, notifier: Notifier, application_name: str) -> Store | None:
    """open_store, abandoned (None) when SIGTERM/SIGINT arrives while waiting."""
    store: Store | None = None
    async with anyio.create_task_group() as tg:
        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
                async for _ in signals:
                    log.info("service.signal_while_starting")
                    tg.cancel_scope.cancel()
                    return
        tg.start_soon(stop_on_signal)
        store = await open_store(settings, notifier, application_name=application_name)
        tg.cancel_scope.cancel()
    return store


class Service:
    def __init__(self, settings: Settings, config_path: str | None, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier or Notifier()

    async def serve(self) -> int:
        store = await open_store_or_stop(self.settings, self.notifier, "emag-sync")
        if store is None:
            self.notifier.stopping("stopped before start")
            self.notifier.close()
            return EXIT_OK
        try:
            await store.check_schema()  # SchemaMismatch -> the CLI exits 79, the unit won't restart
            async with Marketplace(self.settings) as market:
                self.market = market
                self.scheduler = Scheduler(store, market, self.settings)
                await self._run()
        finally:
            await store.close()
        self.notifier.stopping("stopped")
        self.notifier.close()
        log.info("service.stopped")
        return EXIT_OK

    async def _run(self) -> None:
        stopping = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watch_signals)
            tg.start_soon(watchdog_loop, self.notifier, self.scheduler.alive)
            tg.start_soon(self._status_loop, stopping)
            self.notifier.ready(self.scheduler.status_line())
            log.info("service.ready", accounts=",".join(self.settings.names), jobs=len(self.scheduler.jobs))
            await self.scheduler.run()
            stopping.set()
            tg.cancel_scope.cancel()

    async def _status_loop(self, stopping: anyio.Event) -> None:
        while not stopping.is_set():
            self.notifier.status(self.scheduler.status_line())
            await anyio.sleep(1.0)

    async def _watch_signals(self) -> None:
        with anyio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.reload()
                    continue
                log.info("service.signal", signal=signal.Signals(signum).name)
                self.notifier.stopping("stopping: draining runs")
                self.scheduler.stop()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; a bad file keeps the old one running."""
        self.notifier.reloading()
        try:
            new = load(self.config_path)
        except ConfigError as exc:
            log.error("service.reload_failed", error=str(exc))
            self.notifier.ready(f"reload failed, kept the previous configuration: {exc}"[:200])
            return
        logs.configure(new.log.format, new.log.level, secrets=[a.password for a in new.accounts])
        self.settings = new
        self.market.update(new)
        self.scheduler.apply(new)
        log.info("service.reloaded", accounts=",".join(new.names), jobs=len(self.scheduler.jobs))
        self.notifier.ready(self.scheduler.status_line())


async def serve(settings: Settings, config_path: str | None) -> int:
    return await Service(settings, config_path).serve()
