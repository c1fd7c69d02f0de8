"""What the monitor reads from PostgreSQL: one read-only transaction, each statement bounded
by a server-side statement_timeout (and the whole read by a client-side deadline).

Every query is indexed and per pair (LATERAL ... LIMIT 1 over sync_state, the partial
index of running runs, the tiny trigger-kept totals table), so a scrape costs the same
with 1,000 or 10,000,000 rows of history.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from daemon.store.driver import translate
from daemon.store.errors import StoreUnavailable
from daemon.store.recovery import RunningRun
from daemon.store.store import Store


@dataclass(frozen=True)
class Snapshot:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    totals: list[dict[str, Any]] = field(default_factory=list)
    running: list[RunningRun] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    webhooks: dict[str, Any] = field(default_factory=dict)


async def read_snapshot(store: Store, *, timeout_s: float, stale_after_s: float, max_age_s: float) -> Snapshot:
    q = store.q
    try:
        with anyio.fail_after(timeout_s + 1.0):
            async with (
                translate("metrics snapshot"),
                store.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                await conn.execute(q["monitor_statement_timeout"], f"{int(timeout_s * 1000)}ms")
                pairs = [dict(r) for r in await conn.fetch(q["monitor_pairs"])]
                totals = [dict(r) for r in await conn.fetch(q["monitor_totals"])]
                running = [
                    RunningRun.from_row(r) for r in await conn.fetch(q["running_runs"], stale_after_s, max_age_s)
                ]
                requests = [dict(r) for r in await conn.fetch(q["pending_requests"])]
                webhooks = dict(await conn.fetchrow(q["monitor_webhooks"]))
    except TimeoutError as exc:
        raise StoreUnavailable(f"metrics snapshot: no answer within {timeout_s:g}s") from exc
    return Snapshot(pairs, totals, running, requests, webhooks)


async def ping(store: Store, timeout_s: float) -> None:
    """Raise StoreError unless the database answers within timeout_s."""
    try:
        with anyio.fail_after(timeout_s):
            await store.fetch("monitor_ping")
    except TimeoutError as exc:
        raise StoreUnavailable(f"ping: no answer within {timeout_s:g}s") from exc


async def table_counts(store: Store) -> dict[tuple[str, str], int]:
    """(account, 'offers' | 'orders') -> rows; run by the pass, not per scrape."""
    return {(r["account"], r["kind"]): r["n"] for r in await store.fetch("monitor_table_counts")}
