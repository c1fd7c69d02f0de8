"""Runs sync runs: one client per account, pairs in parallel, lock conflicts reported.

Used by `emag-sync once` and by the resident daemon alike, so every caller gets the
same lifecycle: lease (single flight) -> run row -> pages -> closed row.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Callable, Iterable

import anyio
import structlog

from daemon.config import ConfigError, Settings
from daemon.emag import AccountLimiter, EmagClient, EmagError, RetryPolicy
from daemon.store import LockBusy, Store, StoreError
from daemon.sync.run import Counters, RunRequest, RunResult, SyncRun, internal_error

log = structlog.get_logger("daemon.sync")


class Marketplace:
    """One EmagClient (one HTTP session, one rate limiter) per account, for the process."""

    def __init__(self, settings: Settings, *, unlimited: bool = False) -> None:
        self.settings = settings
        self.unlimited = unlimited  # benchmarks against a sandbox with its limits off
        self._clients: dict[str, EmagClient] = {}
        # One limiter per login: two accounts that share a login share its budget.
        self._limiters: dict[str, AccountLimiter] = {}
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Marketplace:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()

    async def client(self, name: str) -> EmagClient:
        """The account's client, created on first use (so a reload can add accounts)."""
        if name not in self._clients:
            account, sync = self.settings.account(name), self.settings.sync
            limiter = self._limiters.setdefault(
                account.login, AccountLimiter.unlimited() if self.unlimited else AccountLimiter())
            client = EmagClient(
                account.base_url, account.username, account.password, limiter,
                connect_timeout_s=sync.connect_timeout_s, read_timeout_s=sync.read_timeout_s,
                retry=RetryPolicy(max_attempts=sync.retry_attempts, max_total_s=sync.retry_max_total_s))
            self._clients[name] = await self._stack.enter_async_context(client)
        return self._clients[name]

    def update(self, settings: Settings) -> None:
        """Take new settings (SIGHUP); accounts whose credentials changed get a new client."""
        for name, client in list(self._clients.items()):
            if name not in settings.names:
                continue
            old, new = self.settings.account(name), settings.account(name)
            if (old.base_url, old.username, old.password) != (new.base_url, new.username, new.password):
                self._clients.pop(name)
        self.settings = settings


async def run_pair(store: Store, market: Marketplace, request: RunRequest,
                   on_progress: Callable[[str, Counters], None] | None = None) -> RunResult:
    """One run of one pair. Never raises but for cancellation: the result says how it ended."""
    name, resource = request.account.name, request.resource
    try:
        client = await market.client(name)
        async with store.lease(name, resource) as lease:
            run = SyncRun(client, market.settings.sync, request, on_progress)
            return await run.execute(lease)
    except LockBusy as exc:
        # a requested pair is tried every second while it runs elsewhere: not worth a warning each time
        (log.debug if request.trigger == "request" else log.warning)(
            "sync.skipped_locked", account=name, resource=resource, reason=str(exc))
        return RunResult(name, resource, "skipped", error=str(exc))
    except (StoreError, EmagError, ConfigError, TimeoutError) as exc:
        log.error("sync.run_not_started", account=name, resource=resource, error=str(exc))
        return RunResult(name, resource, "failed", error=str(exc))
    except Exception as exc:  # a bug in one pair must not take the daemon's other pairs down
        log.error("sync.run_crashed", account=name, resource=resource, exc_info=exc)
        return RunResult(name, resource, "failed", error=internal_error(exc))


async def run_many(store: Store, market: Marketplace, requests: Iterable[RunRequest],
                   on_progress: Callable[[str, Counters], None] | None = None,
                   into: list[RunResult] | None = None) -> list[RunResult]:
    """Every request at once in one task group; one pair failing does not cancel another.

    Results are appended to `into` as runs end, so a caller that is cancelled midway
    still knows which runs finished (the cancelled ones closed their rows themselves)."""
    results: list[RunResult] = [] if into is None else into

    async def one(request: RunRequest) -> None:
        results.append(await run_pair(store, market, request, on_progress))

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
    return results
