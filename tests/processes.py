"""Real processes for end-to-end tests: the sandbox and emag-sync, each bounded in time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import asyncpg

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def sandbox_process(tmp_path: Path, *args: str) -> Iterator[str]:
    """`python -m sandbox` on a free loopback port; yields its base URL."""
    ready = tmp_path / f"sandbox-{time.monotonic_ns()}.url"
    proc = subprocess.Popen([sys.executable, "-m", "sandbox", "--port", "0", "--ready-file", str(ready), *args],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"sandbox did not start: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(0.05)
        yield ready.read_text().strip()
    finally:
        stop(proc)


def start_emag_sync(config: Path, *args: str, env: dict[str, str] | None = None,
                    log: Path | None = None) -> subprocess.Popen:
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - closed right after the fork
    full_env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                                                                  "DATABASE_URL", "DATABASE_SYNC_URL")}
    full_env.update(env or {})
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--config", str(config), *args], cwd=REPO,
                            env=full_env, stdout=out, stderr=subprocess.STDOUT if log else subprocess.PIPE, text=True)
    if log:
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


def query(db_url: str, sql: str, *args: object) -> list[dict]:
    import asyncio

    async def run() -> list[dict]:
        conn = await asyncpg.connect(db_url)
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return asyncio.run(run())


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
