"""The scheduler: every (account, resource) pair is an independent job on an interval,
and starts at once when the ERP asks for it ("sync now", a pending request).

Starts are jittered and never on round times (eMAG asks for that); a job whose lock is
held elsewhere (another daemon, host or `once`) is skipped and logged, not queued (a
requested one is tried again each REQUEST_RETRY_S until a run serves the request).
Shutdown is a protocol: stop taking work, drain for a grace period, cancel the rest.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import structlog

from daemon.config import Settings
from daemon.store import Store
from daemon.sync.clients import Clients
from daemon.sync.pairs import run_pair
from daemon.sync.run import Counters, RunRequest

log = structlog.get_logger("daemon.scheduler")

TICK_S = 0.5
REQUEST_RETRY_S = 1.0  # a requested pair whose lock is held elsewhere: try again this soon
# Requested runs of a pair start at least this far apart: presses coalesce (10 within a second
# make at most 2 runs, however fast a run is), and an idle pair still starts within a second.
REQUEST_SPACING_S = 1.0


@dataclass
class Job:
    account: str
    resource: str
    interval_s: float
    due: float  # monotonic
    running: bool = False
    pending: int = 0  # "sync now" requests no run has served yet
    retry_request_at: float = 0.0  # monotonic: no requested run before this
    changed_at: float = 0.0  # a run started or ended (monotonic): older views of `pending` are stale
    last_status: str | None = None
    counters: Counters | None = None

    @property
    def pair(self) -> str:
        return f"{self.account}/{self.resource}"


def first_due(now: float, interval_s: float, jitter_s: float, rng: random.Random) -> float:
    """A spread, non-round first start: within the jitter (and never later than the interval)."""
    return now + min(interval_s, 1.0 + rng.uniform(0, jitter_s)) + rng.uniform(0.013, 0.987)


def next_due(now: float, interval_s: float, jitter_s: float, rng: random.Random) -> float:
    return now + interval_s + rng.uniform(0, jitter_s) + rng.uniform(0.013, 0.987)


@dataclass
class Scheduler:
    store: Store
    clients: Clients
    settings: Settings
    rng: random.Random = field(default_factory=random.Random)
    after_run: Callable[[], None] = lambda: None  # a run ended: pending requests may have changed
    jobs: dict[tuple[str, str], Job] = field(default_factory=dict)
    last_tick: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self._stop = anyio.Event()
        self._wake = anyio.Event()
        self.apply(self.settings)

    # --- configuration ----------------------------------------------------------

    def apply(self, settings: Settings) -> None:
        """Take (new) settings: add new pairs, drop removed ones, keep runs in flight."""
        self.settings = settings
        now = time.monotonic()
        wanted = {(a.name, r): a.interval_s(r) for a in settings.accounts for r in a.resources}
        for key in [k for k in self.jobs if k not in wanted]:
            log.info("scheduler.job_removed", account=key[0], resource=key[1])
            del self.jobs[key]
        for (account, resource), interval in wanted.items():
            job = self.jobs.get((account, resource))
            if job is None:
                due = first_due(now, interval, settings.schedule.jitter_s, self.rng)
                self.jobs[(account, resource)] = Job(account, resource, interval, due)
                log.info("scheduler.job_added", account=account, resource=resource, interval_s=interval)
            elif job.interval_s != interval:
                job.interval_s = interval
                job.due = min(job.due, now + interval)

    def set_pending(self, pending: dict[tuple[str, str], int], asked_at: float) -> None:
        """Pending requests per pair as read at `asked_at` (monotonic). A job that started or
        ended a run since then keeps its own view: that run served what was read."""
        for key, job in self.jobs.items():
            if job.running or job.changed_at > asked_at:
                continue
            job.pending = pending.get(key, 0)
            if job.pending:
                self._wake.set()

    # --- running ----------------------------------------------------------------

    def alive(self) -> bool:
        """For the watchdog: the scheduler loop has ticked recently."""
        return time.monotonic() - self.last_tick < 10 * TICK_S + 5

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Schedule until stop(); then drain up to the grace period and cancel the rest."""
        async with anyio.create_task_group() as runs:
            while not self._stop.is_set():
                self.last_tick = now = time.monotonic()
                for job in self.jobs.values():
                    requested = job.pending > 0 and now >= job.retry_request_at
                    if not job.running and (requested or job.due <= now):
                        job.running, job.changed_at = True, now
                        if requested:
                            job.retry_request_at = now + REQUEST_SPACING_S
                        runs.start_soon(self._run_job, job, "request" if requested else "schedule")
                with anyio.move_on_after(self._until_next(now)):
                    await self._wake.wait()
                self._wake = anyio.Event()
            log.info(
                "scheduler.stopping",
                running=sum(j.running for j in self.jobs.values()),
                grace_s=self.settings.schedule.shutdown_grace_s,
            )
            with anyio.move_on_after(self.settings.schedule.shutdown_grace_s):
                while any(j.running for j in self.jobs.values()):
                    self.last_tick = time.monotonic()
                    await anyio.sleep(0.05)
            runs.cancel_scope.cancel()

    def _until_next(self, now: float) -> float:
        """Seconds to sleep: until the next job is due or requested, at most TICK_S."""
        starts = [j.retry_request_at if j.pending else j.due for j in self.jobs.values() if not j.running]
        return max(0.0, min([TICK_S, *(at - now for at in starts)]))

    async def _run_job(self, job: Job, trigger: str) -> None:
        account = self.settings.account(job.account)
        request = RunRequest(account, job.resource, "incremental", trigger)

        def progress(_pair: str, counters: Counters) -> None:
            job.counters = counters

        job.counters = None
        try:
            result = await run_pair(self.store, self.clients, self.settings.sync, request, progress)
        finally:
            job.running, job.counters = False, None
            job.changed_at = now = time.monotonic()
            job.due = next_due(now, job.interval_s, self.settings.schedule.jitter_s, self.rng)
        job.last_status = result.status
        if result.status == "skipped" and trigger == "request":
            job.retry_request_at = now + REQUEST_RETRY_S  # it runs elsewhere; its end serves or follows up
        else:
            job.pending = 0  # this run served them; what came in meanwhile is read afresh below
        self.after_run()

    # --- status -----------------------------------------------------------------

    def status_line(self) -> str:
        """`main/offers page 7/13 · fbe/orders idle · next 12:04:42` for systemd's STATUS=."""
        parts = []
        for job in sorted(self.jobs.values(), key=lambda j: (j.account, j.resource)):
            if job.running:
                c = job.counters
                page = f"page {c.pages_done}/{c.pages_total if c.pages_total is not None else '?'}" if c else "starting"
                parts.append(f"{job.pair} {page}")
            else:
                parts.append(
                    f"{job.pair} idle"
                    + (f" ({job.last_status})" if job.last_status not in (None, "completed") else "")
                    + (" (requested)" if job.pending else "")
                )
        waiting = [j.due for j in self.jobs.values() if not j.running]
        if self._stop.is_set():
            parts.append("stopping")
        elif waiting:
            at = time.time() + max(0.0, min(waiting) - time.monotonic())
            parts.append(f"next {datetime.fromtimestamp(at).strftime('%H:%M:%S')}")
        return " · ".join(parts) if parts else "no accounts configured"
