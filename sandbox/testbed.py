"""What tests, benchmarks and demos share to stand a marketplace and emag-sync up for real:
scratch PostgreSQL databases, config documents for the sandbox's logins, bounded waits
(for sync_runs rows, for "sync now" requests served), the sandbox and emag-sync as processes.

The database server is $EMAG_SYNC_TEST_DSN (default: the local trust-auth cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from daemon.config import DatabaseSettings
from daemon.store import migrate
from sandbox.market import DEFAULT_LOGINS, Login
from sandbox.query import DEFAULT_ORDER_TYPE

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


async def migrated_db(prefix: str = "emag_sync_scratch") -> str:
    """A new database with emag-sync's schema; returns its name."""
    name = await create_db(prefix)
    await migrate(DatabaseSettings(url=dsn_for(name)))
    return name


# --- config documents ------------------------------------------------------------------

# Sync settings that keep tests fast: heartbeats and retries in fractions of a second.
QUICK_SYNC = {"heartbeat_interval_s": 0.5, "retry_max_total_s": 30.0, "retry_base_delay_s": 0.02}


def numbered_logins(count: int) -> dict[str, Login]:
    """`count` logins s1..sN instead of the sandbox's own, for fleets of accounts: serve them
    with `account_args`, configure them with config_doc(accounts=...)."""
    return {f"s{i}": Login(f"s{i}@sandbox.test", f"pw-s{i}") for i in range(1, count + 1)}


def account_args(logins: Mapping[str, Login]) -> list[str]:
    """`python -m sandbox` arguments serving these logins (instead of its own)."""
    return [
        arg
        for name, login in logins.items()
        for arg in ("--account", f"{name}:{login.username}:{login.password}:{login.order_type}")
    ]


def config_doc(
    db_url: str,
    base_url: str,
    accounts: Iterable[str] | Mapping[str, Login] = ("main", "fbe"),
    sync: dict[str, Any] | None = None,
    schedule: dict[str, Any] | None = None,
    *,
    resources: Iterable[str] | None = None,
    quick: bool = True,
) -> dict[str, Any]:
    """emag-sync's config for the sandbox at `base_url`, as an operator writes it: `accounts`
    named from the sandbox's own logins (DEFAULT_LOGINS), or logins by name; order_type only
    where it is not the default; each syncing `resources` (default: all). `quick` adds
    QUICK_SYNC under `sync`; benchmarks leave it out to run the product's defaults."""
    logins = accounts if isinstance(accounts, Mapping) else {name: DEFAULT_LOGINS[name] for name in accounts}
    doc: dict[str, Any] = {"database": {"url": db_url}, "accounts": {}}
    sync_table = {**(QUICK_SYNC if quick else {}), **(sync or {})}
    if sync_table:
        doc["sync"] = sync_table
    if schedule:
        doc["schedule"] = schedule
    for name, login in logins.items():
        table: dict[str, Any] = {"base_url": base_url, "username": login.username, "password": login.password}
        if login.order_type != DEFAULT_ORDER_TYPE:
            table["order_type"] = login.order_type
        if resources is not None:
            table["resources"] = list(resources)
        doc["accounts"][name] = table
    return doc


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


# --- queries and waits -----------------------------------------------------------------


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


def wait_for_runs(
    db_url: str, where_sql: str, timeout_s: float, what: str, count: int = 1, interval_s: float = 0.2
) -> list[dict[str, Any]]:
    """Wait until at least `count` rows of emag_sync.sync_runs match `where_sql`; returns them."""
    sql = f"SELECT * FROM emag_sync.sync_runs WHERE {where_sql} ORDER BY id"

    def matching() -> list[dict[str, Any]]:
        rows = query(db_url, sql)
        return rows if len(rows) >= count else []

    return wait_until(matching, timeout_s, what, interval_s)


def sync_now(db_url: str, account: str, resource: str) -> int:
    """One "sync now" press for a pair, as the ERP makes it; the request's id."""
    return query(db_url, "SELECT emag_sync.request_sync($1::text, $2::text) AS id", account, resource)[0]["id"]


def served_after(db_url: str, request_id: int, timeout_s: float = 10, ended: bool = False) -> float:
    """Seconds from a "sync now" request to the start of the run that served it (the database's
    clock), once that run has started (`ended`: once it has ended too)."""
    (row,) = wait_until(
        lambda: query(
            db_url,
            "SELECT extract(epoch FROM r.started_at - q.requested_at)::float8 AS s FROM emag_sync.sync_requests q "
            "JOIN emag_sync.sync_runs r ON r.id = q.run_id WHERE q.id = $1 AND (NOT $2 OR r.status <> 'running')",
            request_id,
            ended,
        ),
        timeout_s,
        "the request served",
    )
    return float(row["s"])


def press_sync_now(
    db_url: str, account: str, resource: str, presses: int, timeout_s: float, settle_s: float
) -> list[dict[str, Any]]:
    """Press "sync now" for one pair `presses` times, 0.1 s apart; wait until every request is
    served and no run is running, then `settle_s` for any run still to come of them; returns
    the runs started since the first press."""
    before = query(db_url, "SELECT coalesce(max(id), 0) AS id FROM emag_sync.sync_runs")[0]["id"]
    for _ in range(presses):
        sync_now(db_url, account, resource)
        time.sleep(0.1)
    wait_until(
        lambda: (
            not query(
                db_url,
                "SELECT 1 FROM emag_sync.sync_requests WHERE served_at IS NULL "
                "UNION ALL SELECT 1 FROM emag_sync.sync_runs WHERE status = 'running'",
            )
        ),
        timeout_s,
        "every request served",
    )
    time.sleep(settle_s)
    return query(db_url, "SELECT * FROM emag_sync.sync_runs WHERE id > $1 ORDER BY id", before)


# --- processes -------------------------------------------------------------------------


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


def throttled(base_url: str, accounts: Iterable[str]) -> int:
    """HTTP 429 answers the sandbox at `base_url` gave these logins so far (its control API)."""
    control = base_url.rsplit("/api-3", 1)[0] + "/_sandbox/accounts/{}/stats"
    total = 0
    for name in accounts:
        with urllib.request.urlopen(control.format(name), timeout=5) as response:
            total += json.loads(response.read())["throttled"]
    return total


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


def terminate_timed(procs: Iterable[subprocess.Popen], timeout_s: float) -> tuple[list[int], float]:
    """SIGTERM to all of `procs` at once: their exit codes, and the seconds until the last one
    exited; subprocess.TimeoutExpired when that takes longer than `timeout_s`."""
    procs = list(procs)
    began = time.monotonic()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    codes = [proc.wait(max(0.1, timeout_s - (time.monotonic() - began))) for proc in procs]
    return codes, time.monotonic() - began


@contextmanager
def daemons_sharing(
    workdir: Path, db_url: str, logins: Mapping[str, Login], daemons: int, sandbox_args: Iterable[str], **config: Any
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`daemons` processes of `emag-sync run` sharing `logins`, served by a sandbox started with
    `sandbox_args` (and account_args): config_doc(accounts=logins, **config) in workdir/fleet.toml,
    logs in workdir/dN.log. Yields the sandbox's base URL and the processes; stops those still
    running on the way out."""
    with sandbox_process(workdir, *sandbox_args, *account_args(logins)) as base_url:
        config_path = write_config(workdir / "fleet.toml", config_doc(db_url, base_url, logins, **config))
        procs = [start_emag_sync(config_path, "run", log=workdir / f"d{i}.log") for i in range(daemons)]
        try:
            yield base_url, procs
        finally:
            for proc in procs:
                stop(proc)


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
