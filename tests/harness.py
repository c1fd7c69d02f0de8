"""Helpers for end-to-end tests: settings for a sandbox, one sync, and fidelity checks."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg

from daemon.config import Settings, parse
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_many
from daemon.sync.run import RunRequest, RunResult
from sandbox import DEFAULT_LOGINS, Market
from sandbox.query import DEFAULT_ORDER_TYPE

# The sandbox's logins as an operator configures them: order_type only where it is not the default.
SANDBOX_ACCOUNTS = {
    name: (login.username, login.password, None if login.order_type == DEFAULT_ORDER_TYPE else login.order_type)
    for name, login in DEFAULT_LOGINS.items()
}


def config_doc(
    db_url: str,
    base_url: str,
    accounts: Iterable[str] = ("main", "fbe"),
    sync: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    extra_accounts: dict[str, tuple[str, str, int | None]] | None = None,
) -> dict[str, Any]:
    known = {**SANDBOX_ACCOUNTS, **(extra_accounts or {})}
    doc: dict[str, Any] = {
        "database": {"url": db_url},
        "accounts": {},
        "sync": {"heartbeat_interval_s": 0.5, "retry_max_total_s": 30.0, "retry_base_delay_s": 0.02, **(sync or {})},
    }
    if schedule:
        doc["schedule"] = schedule
    for name in accounts:
        username, password, order_type = known[name]
        table: dict[str, Any] = {"base_url": base_url, "username": username, "password": password}
        if order_type is not None:
            table["order_type"] = order_type
        doc["accounts"][name] = table
    return doc


def make_settings(db_url: str, base_url: str, **kwargs: Any) -> Settings:
    return parse(config_doc(db_url, base_url, **kwargs), env={})


def toml_text(doc: dict[str, Any]) -> str:
    """Enough TOML for our config documents (tables of scalars)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {json.dumps(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(f"{prefix}.{key}" if prefix else key, value)

    emit("", doc)
    return "\n".join(lines) + "\n"


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(toml_text(doc))
    return path


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
