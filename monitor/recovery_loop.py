"""The recovery pass (fail dead runs, report stale live ones, trim history, refresh the
table counts) and the loop that runs it every monitor.interval_s."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import structlog

from daemon.config import Settings
from daemon.store import Store, StoreError
from daemon.store.observe import table_counts
from daemon.store.recovery import RecoveryReport, recovery_pass, trim_history
from monitor.state import MonitorState

log = structlog.get_logger("monitor.recovery")


async def run_pass(store: Store, settings: Settings, state: MonitorState, by: str) -> RecoveryReport:
    """One pass; raises StoreError (the caller records it) when the database fails."""
    started = time.monotonic()
    stale_after_s, max_age_s = settings.stuck_threshold_s, settings.monitor.max_run_age_s
    report = await recovery_pass(store, stale_after_s=stale_after_s, max_age_s=max_age_s, by=by)
    for row in report.failed:
        log.warning(
            "monitor.run_failed", run_id=row["id"], account=row["account"], resource=row["resource"], error=row["error"]
        )
    for run in report.stale_alive:
        log.warning(
            "monitor.run_not_heartbeating",
            run_id=run.id,
            account=run.account,
            resource=run.resource,
            heartbeat_age_s=round(run.heartbeat_age_s, 1),
            age_s=round(run.age_s, 1),
            lock_held=True,
            threshold_s=stale_after_s,
        )
    lost = {r.id for r in report.stuck} - {f["id"] for f in report.failed}
    if lost:
        log.info(
            "monitor.stuck_run_not_failed",
            run_ids=sorted(lost),
            reason="closed meanwhile (by its process or another monitor)",
        )
    trimmed = await trim_history(store, retention_days=settings.monitor.retention_days)
    if trimmed:
        log.info("monitor.history_trimmed", rows=trimmed, retention_days=settings.monitor.retention_days)
    state.table_counts = await table_counts(store)
    state.record_pass(report, trimmed, started)
    log.debug(
        "monitor.pass",
        running=state.running,
        failed=len(report.failed),
        stale_alive=len(report.stale_alive),
        trimmed=trimmed,
        duration_s=round(state.last_pass_duration_s or 0.0, 4),
    )
    return report


async def recovery_loop(
    store: Store,
    settings: Callable[[], Settings],
    state: MonitorState,
    by: str,
    on_pass: Callable[[], None] = lambda: None,
) -> None:
    """Every interval_s until cancelled, with the settings of the moment (a reload changes
    them). A database error is recorded (healthz 503, emag_sync_up 0) and the loop goes on;
    any other error ends the task group loudly."""
    while True:
        try:
            await run_pass(store, settings(), state, by)
        except StoreError as exc:
            state.record_failure(str(exc))
            log.error("monitor.pass_failed", error=str(exc))
        on_pass()
        await anyio.sleep(settings().monitor.interval_s)
