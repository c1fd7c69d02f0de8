"""What the monitor knows about itself: its own counters and the last pass.

Plain data, owned by one MonitorService (no module globals); the recovery loop
writes it, the HTTP handlers and the collector read it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from daemon.store.recovery import RecoveryReport


@dataclass
class MonitorState:
    # the monitor's own counters (they reset when the monitor restarts: Prometheus copes)
    stuck_detected: int = 0
    recovered: dict[str, int] = field(default_factory=lambda: {"stale_heartbeat": 0, "max_age": 0})
    passes: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    trimmed: int = 0
    # the last pass
    last_pass_wall: float | None = None  # time.time() of the last successful pass
    last_pass_mono: float | None = None
    last_pass_duration_s: float | None = None
    last_error: str | None = None
    running: int = 0
    stale_alive: int = 0
    # per account, refreshed by each pass: offers (not missing) and orders in the tables
    table_counts: dict[tuple[str, str], int] = field(default_factory=dict)
    # loop progress (pass or connection attempt), for the watchdog
    last_tick_mono: float = field(default_factory=time.monotonic)
    _seen_stuck: set[int] = field(default_factory=set)

    def tick(self) -> None:
        self.last_tick_mono = time.monotonic()

    def record_pass(self, report: RecoveryReport, trimmed: int, started_mono: float) -> None:
        now = time.monotonic()
        stuck_now = {r.id for r in report.running if r.stuck or r.stale_alive}
        self.stuck_detected += len(stuck_now - self._seen_stuck)  # each run counted once
        self._seen_stuck = stuck_now
        for row in report.failed:
            reason = "max_age" if "max run age" in (row.get("error") or "") else "stale_heartbeat"
            self.recovered[reason] += 1
        self.trimmed += trimmed
        self.passes["ok"] += 1
        self.running = len(report.running) - len(report.failed)
        self.stale_alive = len(report.stale_alive)
        self.last_pass_wall = time.time()
        self.last_pass_mono = now
        self.last_pass_duration_s = now - started_mono
        self.last_error = None
        self.last_tick_mono = now

    def record_failure(self, error: str) -> None:
        self.passes["error"] += 1
        self.last_error = error
        self.tick()

    def last_pass_age_s(self) -> float | None:
        return None if self.last_pass_mono is None else time.monotonic() - self.last_pass_mono

    def status_line(self) -> str:
        if self.last_pass_wall is None:
            return f"waiting for database: {self.last_error}"[:200] if self.last_error else "starting"
        line = (
            f"last pass {time.strftime('%H:%M:%S', time.localtime(self.last_pass_wall))} · "
            f"{self.stale_alive} stuck · {self.running} running"
        )
        if self.last_error:
            line += f" · last pass failed: {self.last_error}"
        return line[:200]
