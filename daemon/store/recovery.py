"""Recovery and retention of `sync_runs`, for the monitor and `emag-sync recover`. A run
is dead when its heartbeat is stale AND it no longer holds its lock (run_holds_lock):
it is failed by a compare-and-set that re-checks both, so two monitors fail it once and
a run that closes meanwhile is never overwritten. A run past the hard age cap is failed
even with its lock held; one that holds it but stopped heartbeating is only reported."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.identity import identity
from daemon.store.store import Store

TRIM_BATCH = 1000  # rows per DELETE statement
TRIM_MAX_BATCHES = 50  # per call: at most 50,000 rows, the rest next pass


@dataclass(frozen=True)
class RunningRun:
    id: int
    account: str
    resource: str
    started_at: datetime
    heartbeat_at: datetime
    host: str
    pid: int
    age_s: float
    heartbeat_age_s: float
    lock_held: bool
    stale: bool
    too_old: bool
    mode: str = "full"
    trigger: str = "schedule"
    pages_done: int = 0
    pages_total: int | None = None
    items_seen: int = 0
    api_requests: int = 0
    api_retries: int = 0
    api_throttled: int = 0
    api_wait_s: float = 0.0

    @classmethod
    def from_row(cls, row: Any) -> RunningRun:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})

    @property
    def dead(self) -> bool:
        return self.stale and not self.lock_held

    @property
    def stuck(self) -> bool:
        """To be failed: dead, or past the hard age cap."""
        return self.dead or self.too_old

    @property
    def stale_alive(self) -> bool:
        """Lock held but no heartbeat: report it, do not fail it."""
        return self.stale and self.lock_held and not self.too_old


@dataclass
class RecoveryReport:
    running: list[RunningRun] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stuck(self) -> list[RunningRun]:
        return [r for r in self.running if r.stuck]

    @property
    def stale_alive(self) -> list[RunningRun]:
        return [r for r in self.running if r.stale_alive]


async def running_runs(store: Store, *, stale_after_s: float, max_age_s: float) -> list[RunningRun]:
    rows = await store.fetch("running_runs", float(stale_after_s), float(max_age_s))
    return [RunningRun.from_row(r) for r in rows]


async def fail_if_stuck(
    store: Store, run_id: int, *, stale_after_s: float, max_age_s: float, by: str
) -> dict[str, Any] | None:
    """The compare-and-set: the failed row, or None when the run is no longer stuck."""
    rows = await store.fetch("fail_stuck_run", run_id, float(stale_after_s), float(max_age_s), by)
    return dict(rows[0]) if rows else None


async def recovery_pass(store: Store, *, stale_after_s: float, max_age_s: float, by: str) -> RecoveryReport:
    """Detect, then fail each stuck run with its own CAS (one row lock at a time)."""
    report = RecoveryReport(await running_runs(store, stale_after_s=stale_after_s, max_age_s=max_age_s))
    for run in report.stuck:
        failed = await fail_if_stuck(store, run.id, stale_after_s=stale_after_s, max_age_s=max_age_s, by=by)
        if failed is not None:
            report.failed.append(failed)
    return report


async def recover_stuck(store: Store, *, stale_after_s: float, max_age_s: float, by: str) -> list[dict[str, Any]]:
    """Fail the stuck runs; return the ones this call failed (id, account, resource, error).

    `by` names the caller ("emag-sync recover"); host:pid is added unless already there."""
    who = by if ":" in by else identity(by)
    report = await recovery_pass(store, stale_after_s=stale_after_s, max_age_s=max_age_s, by=who)
    return report.failed


async def trim_history(
    store: Store, *, retention_days: int, batch: int = TRIM_BATCH, max_batches: int = TRIM_MAX_BATCHES
) -> int:
    """Delete closed runs started before the retention window, `batch` rows per statement,
    at most `max_batches` statements; never a running row, never a pair's last success.
    Served "sync now" requests and finished webhook deliveries go the same way."""
    deleted = 0
    for query in ("trim_runs", "trim_requests", "trim_deliveries"):
        for _ in range(max_batches):
            status = await store.execute(query, int(retention_days), int(batch))
            count = int(status.split()[-1])
            if query == "trim_runs":
                deleted += count
            if count < batch:
                break
    return deleted
