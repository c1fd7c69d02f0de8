"""Shared fixtures: a real PostgreSQL database per test, cloned from a migrated template
(db_url; a session on it: conn; the daemon's store), the sandbox marketplace in process
(market, sb, an HTTP session), and the live systemd host.

The server is $EMAG_SYNC_TEST_DSN (default: the local trust-auth cluster). The
template is migrated once per session; each test gets `CREATE DATABASE ... TEMPLATE`,
which takes a few milliseconds, so tests cannot leak rows into each other.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from daemon import logs
from daemon.config import DatabaseSettings
from daemon.store import Store
from sandbox import Market, Sandbox
from sandbox.testbed import REPO, connection, create_db, drop_db, dsn_for, migrated_db
from tests.live.box import Box, BoxRefused, refusal
from tests.live.install import LiveHost, install, python_refusal, save_journal, wheelhouse
from tests.processes import sandbox_process


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Commands under test configure structlog onto a stream pytest closes after the test."""
    yield
    logs.reset()


@pytest.fixture(scope="session")
def template_db() -> Iterator[str]:
    name = asyncio.run(migrated_db("emag_sync_tpl"))
    yield name
    asyncio.run(drop_db(name))


@pytest.fixture
def db_url(template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test only."""
    name = asyncio.run(create_db("emag_sync_t", template=template_db))
    yield dsn_for(name)
    asyncio.run(drop_db(name))


@pytest.fixture
def empty_db_url() -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = asyncio.run(create_db("emag_sync_e"))
    yield dsn_for(name)
    asyncio.run(drop_db(name))


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A session on the test's database, of its own (not the store's), closed after the test."""
    async with connection(db_url) as session:
        yield session


@pytest.fixture
def db_settings(db_url: str) -> DatabaseSettings:
    return DatabaseSettings(url=db_url)


@pytest.fixture
async def store(db_settings: DatabaseSettings) -> AsyncIterator[Store]:
    opened = await Store.open(db_settings, max_size=4)
    try:
        yield opened
    finally:
        await opened.close()


# --- the sandbox marketplace, in process ---------------------------------------------------


@pytest.fixture
def market(request: pytest.FixtureRequest) -> Market:
    """The sandbox's default accounts (sandbox.DEFAULT_LOGINS), sized and seeded by the test
    module's MARKET: the keyword arguments of Market.with_default_accounts."""
    sizes = getattr(request.module, "MARKET", None)
    if sizes is None:
        pytest.fail(f"{request.module.__name__}: the market fixture needs MARKET = dict(offers=, orders=, seed=)")
    return Market.with_default_accounts(**sizes)


@pytest.fixture
async def sb(market: Market) -> AsyncIterator[Sandbox]:
    """The market served over HTTP, without rate limits."""
    async with Sandbox(market, rate_mode="off") as sandbox:
        yield sandbox


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


# --- live: a real systemd host (tests/live/) -------------------------------------------


@pytest.fixture(scope="session")
def live_wheelhouse() -> Path:
    """The box's offline package source, built once (skips where no box can run)."""
    reason = refusal() or python_refusal()
    if reason:
        pytest.skip(f"live systemd host unavailable: {reason}")
    return wheelhouse(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emag-sync")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def live_host(live_wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHost]:
    """For the module: a fresh database, the sandbox marketplace on the host, a booted box
    with emag-sync installed by deploy_sync_system.sh, both units running. The box's
    journal is kept as journal.txt in the module's pytest temporary directory."""
    tmp = tmp_path_factory.mktemp("live")
    name = asyncio.run(create_db("emag_sync_live"))
    try:
        with sandbox_process(tmp, "--offers", "1500", "--latency-ms", "100") as base_url:
            box = Box([REPO, live_wheelhouse], log_dir=tmp)
            try:
                boot_s = box.start()
            except BoxRefused as exc:
                pytest.skip(f"live systemd host unavailable: {exc}")
            try:
                host = install(box, live_wheelhouse, dsn_for(name), base_url, _free_port())
                host.figures["boot_s"] = boot_s
                print(
                    f"\nlive host: box booted in {boot_s:.1f} s; deploy_sync_system.sh first install "
                    f"{host.figures['first_install_s']:.1f} s, upgrade to healthy {host.figures['upgrade_s']:.1f} s"
                )
                yield host
            finally:
                try:
                    save_journal(box, tmp / "journal.txt")
                finally:
                    box.stop()
    finally:
        asyncio.run(drop_db(name))
