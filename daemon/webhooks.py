"""Run-end webhooks: POST each run's JSON to the configured URLs, signed, with bounded
retries, from the outbox the database fills when a run closes (webhook_deliveries).

This is the second HTTP client of the daemon (the first talks to eMAG); it runs as a task
of its own, so a receiver that is down or hangs never blocks, slows or fails a run or a
shutdown: a stop cancels it, and a delivery claimed then comes due again by itself.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import anyio
import structlog

from daemon import __version__
from daemon.emag.errors import one_line
from daemon.settings import WebhookSettings
from daemon.store import Store, StoreError

log = structlog.get_logger("daemon.webhooks")

CHANNEL = "emag_sync_runs"
POLL_S = 5.0  # deliveries come due (retries) without a notification
BATCH = 10
PARALLEL = 4  # a receiver that hangs holds one of these for timeout_s, not the others
RETRY_BASE_S, RETRY_MAX_S = 5.0, 600.0


def signature(secret: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of the body>`; the receiver recomputes it with the shared secret."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_in_s(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter after `attempts` failed attempts: ~5 s, 10 s, 20 s ... 10 min."""
    ceiling = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** max(0, attempts - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


class WebhookSender:
    def __init__(self, store: Store, settings: Callable[[], WebhookSettings], rng: random.Random | None = None) -> None:
        self.store, self._settings = store, settings  # the settings of the moment (a reload changes them)
        self.rng = rng or random.Random()
        self._wake = anyio.Event()

    @property
    def settings(self) -> WebhookSettings:
        return self._settings()

    def _claim_s(self) -> float:
        """Long enough for a batch's last delivery: it may wait for the rounds before it,
        then post for up to timeout_s, then be recorded."""
        return math.ceil(BATCH / PARALLEL) * self.settings.timeout_s + 5

    def poke(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self) -> None:
        http = aiohttp.ClientSession(headers={"User-Agent": f"emag-sync/{__version__}"})
        try:
            await self._serve(http)
        finally:
            with anyio.CancelScope(shield=True):  # a stop cancels us: close the connections anyway
                await http.close()

    async def _serve(self, http: aiohttp.ClientSession) -> None:
        while True:
            batch: list[dict[str, Any]] = []
            if self.settings.urls:  # without URLs (so without a secret) this daemon sends nothing
                try:
                    batch = await self.store.claim_deliveries(BATCH, lease_s=self._claim_s())
                except StoreError as exc:
                    log.warning("webhook.claim_failed", error=str(exc))
            if batch:
                limit = anyio.Semaphore(PARALLEL)
                async with anyio.create_task_group() as tg:
                    for delivery in batch:
                        tg.start_soon(self._deliver, http, delivery, limit)
                continue  # there may be more due
            with anyio.move_on_after(POLL_S):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def _deliver(self, http: aiohttp.ClientSession, delivery: dict[str, Any], limit: anyio.Semaphore) -> None:
        async with limit:
            status, error = await self._post(http, delivery)
        attempts = delivery["attempts"]
        ctx = {"delivery_id": delivery["id"], "run_id": delivery["run_id"], "url": delivery["url"], "attempt": attempts}
        if status is not None and 200 <= status < 300:
            outcome, wait_s = "delivered", 0.0
            log.info("webhook.delivered", **ctx, http_status=status)
        elif attempts >= self.settings.max_attempts:
            outcome, wait_s = "failed", 0.0
            log.error(
                "webhook.failed", **ctx, http_status=status, error=error, reason=f"gave up after {attempts} attempts"
            )
        else:
            outcome, wait_s = "pending", retry_in_s(attempts, self.rng)
            log.warning("webhook.retry", **ctx, http_status=status, error=error, retry_in_s=round(wait_s, 1))
        with anyio.CancelScope(shield=True):
            try:
                await self.store.delivery_attempted(delivery["id"], attempts, outcome, status, error, wait_s)
            except StoreError as exc:  # it comes due again when its claim runs out
                log.warning("webhook.record_failed", **ctx, error=str(exc))

    async def _post(self, http: aiohttp.ClientSession, delivery: dict[str, Any]) -> tuple[int | None, str | None]:
        """One POST: (HTTP status or None, error text or None)."""
        body = json.dumps(delivery["payload"], sort_keys=True, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Emag-Sync-Event": "run.ended",
            "X-Emag-Sync-Delivery": str(delivery["id"]),
            "X-Emag-Sync-Signature": signature(self.settings.secret, body),
        }
        try:
            with anyio.fail_after(self.settings.timeout_s):
                async with http.post(delivery["url"], data=body, headers=headers, allow_redirects=False) as response:
                    await response.read()
                    return response.status, None if response.status < 300 else f"HTTP {response.status}"
        except TimeoutError:
            return None, f"no answer within {self.settings.timeout_s:g} s"
        except (aiohttp.ClientError, OSError) as exc:
            return None, f"{type(exc).__name__}: {one_line(exc)}"
