"""What the store persists about a run, and what it hands back: plain data, no I/O."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Progress:
    """The counters a run persists with each page and when it ends, each field named as its
    sync_runs column (the queries read them by name from `as_json()`)."""

    pages_done: int = 0
    pages_total: int | None = None
    items_seen: int = 0
    items_written: int = 0
    items_unchanged: int = 0
    items_invalid: int = 0
    api_requests: int = 0
    api_retries: int = 0
    api_throttled: int = 0
    api_wait_s: float = 0.0
    api_latency_p50_s: float | None = None
    api_latency_p95_s: float | None = None
    api_latency_max_s: float | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """Where a login's rate budget (one route group) stands: the next request may leave in
    `wait_s`, spaced `slowdown` times the nominal interval. `orphaned`: the run that spent it
    last did not hand it back (its process died), so what it sent last is unknown."""

    wait_s: float = 0.0
    slowdown: float = 1.0
    orphaned: bool = False


@dataclass(frozen=True)
class OpenedRun:
    id: int
    started_at: datetime
    budget: Budget


class Closed(StrEnum):
    """How closing a run's row went."""

    NOW = "now"
    ALREADY = "already"  # someone else closed it first (a monitor); never overwritten
    LATER = "later"  # the database is away: the store closes it once it answers again


@dataclass(frozen=True)
class DeferredClose:
    run_id: int
    status: str
    progress: Progress
    error: str | None


@dataclass(frozen=True)
class SyncState:
    watermark: datetime | None
    checkpoint: dict[str, Any] | None
