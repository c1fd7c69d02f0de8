"""`emag-sync run`: the resident process systemd supervises.

One task group owns every task — signal watcher, watchdog, database connection, status
line, scheduler, late row closes — so a failing side loop stops the process loudly.
READY=1 goes out as soon as the configuration is valid: the daemon then waits for
PostgreSQL on its own (STATUS= says so), so a database that is down at boot never holds
the boot, and a stop is honoured in every phase within shutdown_grace_s + 5 s.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import anyio
import structlog

from daemon.config import Settings
from daemon.constants import EXIT_OK
from daemon.lifecycle import reread, watch_signals
from daemon.listen import Listener
from daemon.notify import Notifier, watchdog_loop
from daemon.requests import CHANNEL as REQUESTS_CHANNEL
from daemon.requests import PendingRequests
from daemon.scheduler import Scheduler
from daemon.store import Store, StoreError, StoreUnavailable
from daemon.store.store import DB_RETRY_MAX_S
from daemon.sync.clients import Clients
from daemon.webhooks import CHANNEL as WEBHOOKS_CHANNEL
from daemon.webhooks import WebhookSender

log = structlog.get_logger("daemon.service")

DEFERRED_CLOSE_EVERY_S = 2.0
REGISTER_RETRY_S = 2.0  # the pairs and webhook targets, again after a database error
# After a stop signal: the drain grace, then this long for cancelled runs to close their
# rows and the pool to close. Past it the process exits anyway (a last resort for a
# database or network that stopped answering mid-close); rows left running are failed by
# the monitor once their heartbeat is stale, as for any process that dies.
STOP_MARGIN_S = 4.5


class Service:
    def __init__(self, settings: Settings, config_path: str | None, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.notifier = notifier or Notifier()
        self.scheduler: Scheduler | None = None
        self.clients: Clients | None = None
        self._last_tick = time.monotonic()

    def alive(self) -> bool:
        """For the watchdog: the scheduler ticks, or the connection loop is still trying."""
        if self.scheduler is not None:
            return self.scheduler.alive()
        return time.monotonic() - self._last_tick < DB_RETRY_MAX_S + self.settings.database.connect_timeout_s + 10

    def _waiting(self, attempt: int, retry_in_s: float, error: StoreUnavailable) -> None:
        self._last_tick = time.monotonic()
        self.notifier.status(f"waiting for database (attempt {attempt}, retry in {retry_in_s:.0f}s): {error}"[:200])
        log.warning("service.database_unavailable", attempt=attempt, retry_in_s=retry_in_s, error=str(error))

    async def serve(self) -> int:
        self._stop = anyio.Event()
        self._reconfigured = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch_signals, self.reload, self._on_stop_signal)
            tg.start_soon(watchdog_loop, self.notifier, self.alive)
            self.notifier.ready("connecting to the database")
            log.info("service.ready", accounts=",".join(self.settings.names))
            with anyio.CancelScope() as connecting:
                tg.start_soon(self._cancel_on_stop, connecting)
                store = await Store.open_when_up(
                    self.settings.database,
                    max_size=self.settings.pool_size,
                    application_name="emag-sync",
                    on_wait=self._waiting,
                )
            if not connecting.cancelled_caught:
                try:
                    await store.check_schema()  # SchemaMismatch -> the CLI exits 79, the unit won't restart
                    await self._sync(store)
                finally:
                    await store.close()
            tg.cancel_scope.cancel()
        self.notifier.stopping("stopped")
        self.notifier.close()
        log.info("service.stopped")
        return EXIT_OK

    async def _cancel_on_stop(self, scope: anyio.CancelScope) -> None:
        await self._stop.wait()
        scope.cancel()

    async def _sync(self, store: Store) -> None:
        async with Clients(self.settings) as clients, anyio.create_task_group() as tg:
            self.clients = clients
            self.scheduler = Scheduler(store, clients, self.settings)
            if self._stop.is_set():
                return
            requests = PendingRequests(store, self.scheduler)
            self.scheduler.after_run = requests.poke
            self.webhooks = WebhookSender(store, lambda: self.settings.webhooks)
            listener = Listener(store)
            listener.subscribe(REQUESTS_CHANNEL, requests.poke)
            listener.subscribe(WEBHOOKS_CHANNEL, self.webhooks.poke)
            for task in (self._status_loop, listener.run, requests.run, self.webhooks.run):
                tg.start_soon(task)
            tg.start_soon(self._close_deferred_loop, store)
            tg.start_soon(self._register_loop, store)
            log.info("service.scheduling", jobs=len(self.scheduler.jobs))
            await self.scheduler.run()
            with anyio.move_on_after(0.5, shield=True):  # what the run ends left behind, one last try
                await self._close_deferred(store)
            tg.cancel_scope.cancel()

    async def _status_loop(self) -> None:
        assert self.scheduler is not None
        while True:
            self.notifier.status(self.scheduler.status_line())
            await anyio.sleep(1.0)

    async def _register_loop(self, store: Store) -> None:
        """Tell the database what this configuration syncs (so request_sync knows the pairs)
        and where run ends go (webhook targets): at start and after each reload."""
        while True:
            settings = self.settings
            try:
                await store.register_pairs([(a.name, r) for a in settings.accounts for r in a.resources])
                await store.set_webhook_targets(settings.webhooks.urls)
            except StoreError as exc:
                log.warning("service.register_failed", error=str(exc))
                await anyio.sleep(REGISTER_RETRY_S)
                continue
            await self._reconfigured.wait()
            self._reconfigured = anyio.Event()

    async def _close_deferred_loop(self, store: Store) -> None:
        while True:
            await anyio.sleep(DEFERRED_CLOSE_EVERY_S)
            await self._close_deferred(store)

    async def _close_deferred(self, store: Store) -> None:
        for item in await store.close_deferred():
            log.warning("sync.run_closed_late", run_id=item.run_id, status=item.status, error=item.error)

    def _on_stop_signal(self, name: str) -> None:
        log.info("service.signal", signal=name)
        if self._stop.is_set():
            return
        self._stop.set()
        self.notifier.stopping("stopping: draining runs")
        _exit_anyway_after(self.settings.schedule.shutdown_grace_s + STOP_MARGIN_S)
        if self.scheduler is not None:
            self.scheduler.stop()

    def reload(self) -> None:
        """SIGHUP: re-read the configuration; a bad file keeps the old one running."""
        new = reread(self.config_path, self.notifier, "service", need_secrets=True)
        if new is None:
            return
        if new.database != self.settings.database:
            log.warning(
                "service.reload_needs_restart",
                key="database",
                reason="the connection pool keeps the old database settings until a restart",
            )
        self.settings = new
        self._reconfigured.set()
        if self.clients is not None and self.scheduler is not None:
            self.clients.update(new)
            self.scheduler.apply(new)
        log.info(
            "service.reloaded", accounts=",".join(new.names), jobs=len(self.scheduler.jobs) if self.scheduler else 0
        )
        self.notifier.ready(self.scheduler.status_line() if self.scheduler else "connecting to the database")


def _exit_anyway_after(seconds: float) -> None:
    """Arm the last resort of a stop: exit 0 after `seconds` whatever the event loop does."""

    def exit_now() -> None:
        log.error(
            "service.forced_exit",
            after_s=seconds,
            reason="shutdown did not finish in time; rows still running are failed by the monitor",
        )
        sys.stderr.flush()
        os._exit(EXIT_OK)

    timer = threading.Timer(seconds, exit_now)
    timer.daemon = True
    timer.start()


async def serve(settings: Settings, config_path: str | None) -> int:
    return await Service(settings, config_path).serve()
