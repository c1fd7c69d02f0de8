"""Run history as the daemon leaves it, for the tests of recovery, the monitor and its
dashboards: sync_runs rows of any status and age, one seeded history with a bit of every
kind, and settings whose accounts are never called."""

from __future__ import annotations

from typing import Any

import asyncpg

from daemon.config import Settings, parse
from daemon.store import lock_key

SCHEMA = "emag_sync"


def settings_for(db_url: str, **monitor: Any) -> Settings:
    """The monitor's settings over db_url (a stuck threshold of 60 s, `monitor` overriding);
    accounts main and fbe, whose eMAG nobody calls."""
    doc: dict[str, Any] = {
        "database": {"url": db_url},
        "accounts": {
            name: {"base_url": "http://127.0.0.1:9", "username": f"{name}@x.test", "password": "pw-secret"}
            for name in ("main", "fbe")
        },
        "sync": {"heartbeat_interval_s": 1.0},
        "monitor": {"stuck_threshold_s": 60.0, "interval_s": 0.2, "listen": "127.0.0.1:0", **monitor},
    }
    return parse(doc, env={})


async def insert_run(
    conn: asyncpg.Connection,
    account: str = "main",
    resource: str = "offers",
    *,
    status: str = "running",
    started_ago_s: float = 300,
    heartbeat_ago_s: float = 120,
    duration_s: float = 30,
    items: int = 0,
    api: tuple[int, int, int] = (0, 0, 0),
    register: bool = True,
) -> int:
    """A sync_runs row as the daemon would leave it (running: as if its process died)."""
    finished = None if status == "running" else float(max(0.0, started_ago_s - duration_s))
    run_id = await conn.fetchval(
        f"""INSERT INTO {SCHEMA}.sync_runs (account, resource, mode, trigger, status, started_at, heartbeat_at,
                finished_at, items_seen, items_written, api_requests, api_retries, api_throttled, host, pid, lock_key)
            VALUES ($1, $2, 'full', 'test', $3, now() - make_interval(secs => $4),
                    now() - make_interval(secs => $5), now() - make_interval(secs => $6::float8), $7, $7,
                    $8, $9, $10, 'h', 1, $11)
            RETURNING id""",
        account,
        resource,
        status,
        float(started_ago_s),
        float(heartbeat_ago_s),
        finished,
        items,
        *api,
        lock_key(SCHEMA, account, resource),
    )
    if register:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.sync_state (account, resource) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            account,
            resource,
        )
    return run_id


async def seed(conn: asyncpg.Connection) -> dict[str, int]:
    """History of main/offers, main/orders, fbe/offers; a live stale run; a dead run; table rows."""
    ids = {
        "ok_old": await insert_run(
            conn, status="completed", started_ago_s=3600, duration_s=40, items=500, api=(10, 1, 0)
        ),
        "ok_last": await insert_run(
            conn, status="completed", started_ago_s=600, duration_s=42.5, items=700, api=(12, 2, 1)
        ),
        "failed": await insert_run(conn, status="failed", started_ago_s=300, items=5, api=(3, 3, 2)),
        "timeout": await insert_run(conn, "main", "orders", status="timeout", started_ago_s=200, api=(4, 0, 0)),
        "orders_ok": await insert_run(
            conn, "main", "orders", status="completed", started_ago_s=100, duration_s=2, items=9, api=(2, 0, 0)
        ),
        "fbe_cancelled": await insert_run(conn, "fbe", "offers", status="cancelled", started_ago_s=50),
        "alive": await insert_run(conn, "main", "offers", heartbeat_ago_s=200, started_ago_s=250, api=(7, 0, 5)),
        "dead": await insert_run(conn, "fbe", "orders", heartbeat_ago_s=400, started_ago_s=500),
    }
    await conn.execute(f"""INSERT INTO {SCHEMA}.offers (account, id, raw, content_hash, missing_since)
                           SELECT 'main', g, '{{}}', '\\x00', CASE WHEN g > 8 THEN now() END
                             FROM generate_series(1, 10) g""")
    await conn.execute(f"""INSERT INTO {SCHEMA}.orders (account, id, raw, content_hash)
                           SELECT a, g, '{{}}', '\\x00' FROM generate_series(1, 3) g, unnest(ARRAY['main', 'fbe']) a""")
    return ids
