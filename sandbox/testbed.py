"""What tests, benchmarks and demos share to stand a marketplace and emag-sync up for real:
scratch PostgreSQL databases, the sandbox and emag-sync as processes, bounded waits.

The database server is $EMAG_SYNC_TEST_DSN (default: the local trust-auth cluster).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

REPO = Path(__file__).resolve().parent.parent
ADMIN_DSN = os.environ.get("EMAG_SYNC_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
T = TypeVar("T")


def dsn_for(database: str) -> str:
    parts = urlsplit(ADMIN_DSN)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, ""))


@asynccontextmanager
async def connection(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A session of its own, closed on the way out."""
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def wait_blocked_by(holder: asyncpg.Connection, timeout_s: float = 30.0) -> None:
    """Return once another session waits on a lock `holder` holds: its statement got that far."""
    deadline = time.monotonic() + timeout_s
    while not await holder.fetchval(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND pg_backend_pid() = ANY(pg_blocking_pids(pid))"
    ):
        if time.monotonic() > deadline:
            raise AssertionError(f"no session waited on a lock of this one within {timeout_s}s")
        await asyncio.sleep(0.02)


async def admin(sql: str) -> None:
    async with connection(ADMIN_DSN) as conn:
        await conn.execute(sql)


async def create_db(prefix: str = "emag_sync_scratch", template: str | None = None) -> str:
    """A new empty (or cloned) database; returns its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    await admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return name


async def drop_db(name: str) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def query(db_url: str, sql: str, *args: object) -> list[dict[str, Any]]:
    """One statement from synchronous code, on a connection of its own."""

    async def run() -> list[dict[str, Any]]:
        async with connection(db_url) as conn:
            return [dict(r) for r in await conn.fetch(sql, *args)]

    return asyncio.run(run())


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@contextmanager
def sandbox_process(workdir: Path, *args: str) -> Iterator[str]:
    """`python -m sandbox` on a free loopback port (its own process: its CPU is not ours);
    yields its base URL."""
    ready = workdir / f"sandbox-{time.monotonic_ns()}.url"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "--port", "0", "--ready-file", str(ready), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120  # a large catalog takes a few seconds to build
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sandbox did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        yield ready.read_text().strip()
    finally:
        stop(proc)


def start_emag_sync(
    config: Path, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen:
    """`emag-sync --config CONFIG ARGS` from this checkout, without the caller's systemd or
    database variables; output to `log` or to pipes."""
    out: IO[str] | int = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - closed right after the fork
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "DATABASE_URL", "DATABASE_SYNC_URL")
    }
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(config), *args],
        cwd=REPO,
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT if log else subprocess.PIPE,
        text=True,
    )
    if not isinstance(out, int):
        out.close()
    return proc


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    return proc.returncode
