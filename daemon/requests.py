"""Keeps the scheduler's view of pending "sync now" requests true: re-read at once on
NOTIFY emag_sync_requests, after every run, on every reconnect of the listening session,
and every POLL_S whatever happens (a notification is a wake-up, not the truth)."""

from __future__ import annotations

import time

import anyio
import structlog

from daemon.scheduler import Scheduler
from daemon.store import Store, StoreError

log = structlog.get_logger("daemon.requests")

POLL_S = 5.0
CHANNEL = "emag_sync_requests"


class PendingRequests:
    def __init__(self, store: Store, scheduler: Scheduler) -> None:
        self.store, self.scheduler = store, scheduler
        self._wake = anyio.Event()

    def poke(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with anyio.move_on_after(POLL_S):
                await self._wake.wait()
            self._wake = anyio.Event()
            asked = time.monotonic()
            try:
                rows = await self.store.pending_requests()
            except StoreError as exc:
                log.warning("requests.read_failed", error=str(exc))
                continue
            self.scheduler.set_pending({(r["account"], r["resource"]): r["pending"] for r in rows}, asked)
