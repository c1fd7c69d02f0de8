"""The process's eMAG clients: one per account (its HTTP session), one rate limiter per
login (accounts that share a login share its budget). A reload gives an account whose
credentials changed a new client; the old one is closed once no run holds it."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from daemon.config import Settings
from daemon.emag import AccountLimiter, EmagClient, RetryPolicy


class Clients:
    """`async with Clients(settings) as clients:` ... `async with clients.hold(name) as client:`"""

    def __init__(self, settings: Settings, *, unlimited: bool = False) -> None:
        self.settings = settings
        self.unlimited = unlimited  # benchmarks against a sandbox with its limits off
        self._clients: dict[str, EmagClient] = {}
        self._limiters: dict[str, AccountLimiter] = {}
        self._holders: Counter[EmagClient] = Counter()
        self._retired: list[EmagClient] = []  # replaced by a reload, closed when nobody holds them

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            for client in [*self._clients.values(), *self._retired]:
                await client.__aexit__(None, None, None)
        self._clients.clear()
        self._retired.clear()

    @asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[EmagClient]:
        """The account's client for the block, created on first use (a reload can add accounts)."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = await self._new(name)
        self._holders[client] += 1
        try:
            yield client
        finally:
            self._holders[client] -= 1
            await self._close_retired()

    async def _new(self, name: str) -> EmagClient:
        account, sync = self.settings.account(name), self.settings.sync
        limiter = self._limiters.setdefault(
            account.login, AccountLimiter.unlimited() if self.unlimited else AccountLimiter()
        )
        client = EmagClient(
            account.base_url,
            account.username,
            account.password,
            limiter,
            connect_timeout_s=sync.connect_timeout_s,
            read_timeout_s=sync.read_timeout_s,
            retry=RetryPolicy(
                max_attempts=sync.retry_attempts,
                base_delay_s=sync.retry_base_delay_s,
                max_total_s=sync.retry_max_total_s,
            ),
        )
        return await client.__aenter__()

    async def _close_retired(self) -> None:
        idle = [c for c in self._retired if not self._holders[c]]
        self._retired = [c for c in self._retired if self._holders[c]]
        with anyio.CancelScope(shield=True):
            for client in idle:
                del self._holders[client]
                await client.__aexit__(None, None, None)

    def update(self, settings: Settings) -> None:
        """Take new settings (SIGHUP): an account whose URL or credentials changed, or that is
        gone, gets its client retired (closed once its runs end); the next run opens a new one."""
        for name in list(self._clients):
            old = self.settings.account(name)
            new = settings.account(name) if name in settings.names else None
            if new is None or (old.base_url, old.username, old.password) != (new.base_url, new.username, new.password):
                self._retired.append(self._clients.pop(name))
        self.settings = settings
