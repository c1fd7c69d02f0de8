"""Migrations: idempotent, safe when run twice at once, recorded, checked by the daemon."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import anyio
import pytest

from daemon.config import DatabaseSettings
from daemon.store import SchemaMismatch, Store, migrate
from daemon.store.queries import latest_version, load_migrations
from sandbox.testbed import connection


async def _tables(url: str, schema: str) -> set[str]:
    async with connection(url) as conn:
        rows = await conn.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
    return {r["table_name"] for r in rows}


async def test_migrate_creates_everything_then_is_a_noop(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    assert await migrate(settings) == list(range(1, latest_version() + 1))
    assert await migrate(settings) == []
    assert {"sync_runs", "offers", "orders", "sync_state", "schema_migrations"} <= await _tables(
        empty_db_url, "emag_sync"
    )


async def test_two_concurrent_migrates_apply_once(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url)
    results: list[list[int]] = []

    async def one() -> None:
        results.append(await migrate(settings))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    assert sorted(results, key=len) == [[], [], list(range(1, latest_version() + 1))]


async def test_custom_schema_name_is_quoted(empty_db_url: str) -> None:
    settings = DatabaseSettings(url=empty_db_url, schema="erp_emag")
    await migrate(settings)
    assert "sync_runs" in await _tables(empty_db_url, "erp_emag")
    assert await _tables(empty_db_url, "emag_sync") == set()


async def test_daemon_refuses_an_older_schema(empty_db_url: str) -> None:
    store = await Store.open(DatabaseSettings(url=empty_db_url))
    try:
        with pytest.raises(SchemaMismatch, match="is at version 0, this code needs .*emag-sync migrate"):
            await store.check_schema()
        await migrate(DatabaseSettings(url=empty_db_url))
        assert await store.check_schema() == latest_version()
    finally:
        await store.close()


async def test_a_role_that_owns_only_its_schema_can_migrate_and_sync(empty_db_url: str) -> None:
    """The README's set-up: a LOGIN role and a schema it owns, no other right on the database
    (so no CREATE on it: CREATE SCHEMA IF NOT EXISTS alone would be refused)."""
    role = f"emag_sync_r_{uuid.uuid4().hex[:8]}"
    async with connection(empty_db_url) as admin_conn:
        await admin_conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'pw-{role}'")
        try:
            await admin_conn.execute(f"CREATE SCHEMA emag_sync AUTHORIZATION {role}")
            url = urlsplit(empty_db_url)
            netloc = f"{role}:pw-{role}@{url.hostname}:{url.port}"
            as_role = DatabaseSettings(url=url._replace(netloc=netloc).geturl())
            assert await migrate(as_role) == list(range(1, latest_version() + 1))
            store = await Store.open(as_role)
            try:
                await store.check_schema()
                async with store.lease("main", "offers") as lease:
                    await lease.open_run("full", "test")
                    await lease.begin_scan()  # the scan's temporary table: TEMP is PUBLIC's by default
            finally:
                await store.close()
        finally:
            await admin_conn.execute(f"DROP OWNED BY {role}")
            await admin_conn.execute(f"DROP ROLE {role}")


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in load_migrations("s")]
    assert versions == list(range(1, len(versions) + 1))
    assert all('"s".' in m.sql for m in load_migrations("s"))


def test_cli_migrate_and_schema_exit_code(empty_db_url: str, tmp_path, capsys) -> None:
    from daemon import cli

    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[database]\nurl = "{empty_db_url}"\n[accounts.main]\nbase_url = "http://127.0.0.1:1/api-3"\n'
        'username = "u"\npassword = "p"\n'
    )
    assert cli.main(["--config", str(cfg), "history"]) == 79
    assert "emag-sync migrate" in capsys.readouterr().err
    assert cli.main(["--config", str(cfg), "migrate"]) == 0
    assert "applied migrations 1" in capsys.readouterr().out
    assert cli.main(["--config", str(cfg), "migrate"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["--config", str(cfg), "history"]) == 0
    assert "no runs recorded yet" in capsys.readouterr().out
