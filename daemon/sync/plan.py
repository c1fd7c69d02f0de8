"""Pure planning decisions of a sync run: which order windows to read, where to resume."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


@dataclass(frozen=True)
class OrderPlan:
    """Order windows [after, before] (inclusive, overlapping by their shared bound)."""

    start: datetime
    end: datetime
    windows: tuple[tuple[datetime, datetime], ...]
    first_window: int = 0
    first_page: int = 1


def split_windows(start: datetime, end: datetime, max_span: timedelta) -> tuple[tuple[datetime, datetime], ...]:
    """Split [start, end] into consecutive windows of at most max_span (eMAG: one month)."""
    if end <= start:
        return ((start, start),)
    windows = []
    after = start
    while after < end:
        before = min(after + max_span, end)
        windows.append((after, before))
        after = before
    return tuple(windows)


def order_start(
    mode: str, watermark: datetime | None, now: datetime, overlap: timedelta, horizon: timedelta
) -> datetime:
    """Incremental: from the watermark minus the overlap; full (or no watermark yet): the horizon."""
    if mode == "incremental" and watermark is not None:
        return max(watermark - overlap, now - horizon)
    return now - horizon


def resume_page(checkpoint: dict[str, Any], per_page: int) -> int:
    """The page after the checkpoint's, if it was read with the same page size; else page 1:
    with another size, page N+1 starts at another offset and would skip or repeat items."""
    return int(checkpoint["page"]) + 1 if checkpoint.get("per_page") == per_page else 1


def plan_orders(
    mode: str,
    watermark: datetime | None,
    checkpoint: dict[str, Any] | None,
    now: datetime,
    overlap: timedelta,
    horizon: timedelta,
    max_span: timedelta,
    per_page: int,
) -> OrderPlan:
    """Resume a dead run's plan from its checkpoint (same mode), else plan afresh."""
    if checkpoint and checkpoint.get("kind") == "orders" and checkpoint.get("mode") == mode:
        start, end = datetime.fromisoformat(checkpoint["start"]), datetime.fromisoformat(checkpoint["end"])
        windows = split_windows(start, end, max_span)
        window = int(checkpoint["window"])
        if 0 <= window < len(windows):
            return OrderPlan(start, end, windows, window, resume_page(checkpoint, per_page))
    start = order_start(mode, watermark, now, overlap, horizon)
    return OrderPlan(start, now, split_windows(start, now, max_span))


def orders_checkpoint(mode: str, plan: OrderPlan, window: int, page: int, per_page: int) -> dict[str, Any]:
    return {
        "kind": "orders",
        "mode": mode,
        "start": plan.start.isoformat(),
        "end": plan.end.isoformat(),
        "window": window,
        "page": page,
        "per_page": per_page,
    }


def offers_resume(checkpoint: dict[str, Any] | None, started_at: datetime, per_page: int) -> tuple[int, datetime]:
    """(first page, scan start) for a full offer scan, resuming a dead scan's checkpoint."""
    if checkpoint and checkpoint.get("kind") == "offers":
        return resume_page(checkpoint, per_page), datetime.fromisoformat(checkpoint["scan_started_at"])
    return 1, started_at


def offers_checkpoint(page: int, scan_started_at: datetime, per_page: int) -> dict[str, Any]:
    return {"kind": "offers", "page": page, "scan_started_at": scan_started_at.isoformat(), "per_page": per_page}
