"""`emag-sync migrate`: apply the numbered .sql files in one transaction, under a lock."""

from __future__ import annotations

import asyncpg

from daemon.config import DatabaseSettings
from daemon.store.driver import translate
from daemon.store.lease import lock_key
from daemon.store.queries import load_migrations, load_queries, quote_ident


async def migrate(settings: DatabaseSettings) -> list[int]:
    """Apply pending migrations; return the versions applied (empty when up to date).

    Everything happens in one transaction after pg_advisory_xact_lock, so two
    concurrent migrates serialise: the second finds nothing left to do."""
    q = load_queries(settings.schema)
    applied: list[int] = []
    async with translate("migrate"):
        conn = await asyncpg.connect(
            settings.url, timeout=settings.connect_timeout_s, server_settings={"application_name": "emag-sync migrate"}
        )
        try:
            async with conn.transaction():
                await conn.execute(q["migration_lock"], lock_key(settings.schema, "-", "migrate"))
                if not await conn.fetchval(q["schema_exists"], quote_ident(settings.schema)):
                    await conn.execute(q["create_schema"])
                await conn.execute(q["create_migrations_table"])
                done = {r["version"] for r in await conn.fetch(q["applied_migrations"])}
                for migration in load_migrations(settings.schema):
                    if migration.version in done:
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(q["record_migration"], migration.version, migration.name)
                    applied.append(migration.version)
        finally:
            await conn.close()
    return applied
