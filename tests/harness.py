"""Helpers for end-to-end tests: settings for a sandbox, one sync, and fidelity checks.
Config documents are sandbox.testbed's (config_doc, write_config), shared with the benchmarks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import asyncpg

from daemon.config import Settings, parse
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_many
from daemon.sync.run import RunRequest, RunResult
from sandbox import Market
from sandbox.testbed import config_doc
from sandbox.testbed import toml_text as toml_text  # tests/live/install.py imports it from here


def make_settings(db_url: str, base_url: str, **kwargs: Any) -> Settings:
    return parse(config_doc(db_url, base_url, **kwargs), env={})


async def sync(
    settings: Settings,
    resources: Iterable[str] = ("offers", "orders"),
    mode: str = "incremental",
    accounts: Iterable[str] | None = None,
    limits: bool = False,
) -> list[RunResult]:
    """One run of each pair, as `once` makes them; without eMAG's rate `limits` in the client
    unless a test is about them (the sandbox then enforces them too)."""
    store = await Store.open(settings.database)
    try:
        requests = [
            RunRequest(settings.account(a), r, mode, "test") for a in (accounts or settings.names) for r in resources
        ]
        async with Clients(settings, unlimited=not limits) as clients:
            return sorted(
                await run_many(store, clients, settings.sync, requests), key=lambda r: (r.account, r.resource)
            )
    finally:
        await store.close()


async def table_records(conn: asyncpg.Connection, table: str, account: str) -> dict[int, dict[str, Any]]:
    rows = await conn.fetch(f"SELECT id, raw::text AS raw FROM emag_sync.{table} WHERE account = $1", account)
    return {r["id"]: json.loads(r["raw"]) for r in rows}


async def assert_fidelity(
    conn: asyncpg.Connection,
    market: Market,
    account: str,
    *,
    include_missing: bool = False,
    resources: Iterable[str] = ("offers", "orders"),
) -> None:
    """The tables equal the sandbox's records field by field (no more, no fewer)."""
    acc = market.account(account)
    offers = await table_records(conn, "offers", account)
    expected_offers = {o["id"]: o for o in acc.offers}
    if not include_missing:
        missing = {
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM emag_sync.offers WHERE account = $1 AND missing_since IS NOT NULL", account
            )
        }
        offers = {k: v for k, v in offers.items() if k not in missing}
    assert offers.keys() == expected_offers.keys(), f"{account}: offer ids differ"
    assert offers == expected_offers
    if "orders" not in resources:
        return
    orders = await table_records(conn, "orders", account)
    expected_orders = {o["id"]: o for o in acc.orders}
    assert orders.keys() == expected_orders.keys(), f"{account}: order ids differ"
    assert orders == expected_orders


def with_sync(settings: Settings, **changes: Any) -> Settings:
    return replace(settings, sync=replace(settings.sync, **changes))
