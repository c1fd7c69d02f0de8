"""Text for people: the `history` and `status` tables, and JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from daemon.config import Settings, mask_dsn
from daemon.store.recovery import RunningRun


def _age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{duration(now - moment)} ago"


def duration(delta: timedelta | float | None) -> str:
    if delta is None:
        return "-"
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def _when(moment: datetime | None) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def history_text(runs: Sequence[dict[str, Any]]) -> str:
    if not runs:
        return "no runs recorded yet"
    rows = []
    for r in runs:
        took = (r["finished_at"] - r["started_at"]) if r["finished_at"] else None
        pages = f"{r['pages_done']}/{r['pages_total']}" if r["pages_total"] is not None else str(r["pages_done"])
        error = (r["error"] or "")[:70]
        p95 = r["api_latency_p95_s"]
        rows.append(
            (
                r["id"],
                r["account"],
                r["resource"],
                r["mode"],
                r["trigger"],
                r["status"],
                _when(r["started_at"]),
                duration(took),
                pages,
                r["items_seen"],
                r["items_written"],
                r["items_unchanged"],
                r["api_requests"],
                r["api_throttled"],
                "-" if p95 is None else f"{p95:.2f}s",
                duration(r["api_wait_s"]),
                error,
            )
        )
    return table(
        (
            "ID",
            "ACCOUNT",
            "RESOURCE",
            "MODE",
            "TRIGGER",
            "STATUS",
            "STARTED",
            "TOOK",
            "PAGES",
            "SEEN",
            "WRITTEN",
            "UNCHANGED",
            "REQ",
            "429",
            "P95",
            "WAITED",
            "ERROR",
        ),
        rows,
    )


def _lock(run: RunningRun) -> str:
    """The run's lock as the monitor sees it (run_holds_lock): what it will do about the run."""
    if run.lock_held:
        return "held, not heartbeating" if run.stale else "held"
    return "gone: dead, the monitor fails it" if run.stale else "gone"


def status_text(
    running: Sequence[RunningRun],
    last: Sequence[dict[str, Any]],
    pending: Sequence[dict[str, Any]] = (),
    now: datetime | None = None,
) -> str:
    now = now or datetime.now(UTC)
    out = []
    if running:
        now_rows = [
            (
                r.id,
                f"{r.account}/{r.resource}",
                r.mode,
                f"page {r.pages_done}/{r.pages_total if r.pages_total is not None else '?'}",
                r.items_seen,
                duration(now - r.started_at),
                _age(r.heartbeat_at, now),
                _lock(r),
                f"{r.host}:{r.pid}",
            )
            for r in running
        ]
        out.append(
            "Running now:\n"
            + table(("ID", "PAIR", "MODE", "PROGRESS", "ITEMS", "RUNNING", "HEARTBEAT", "LOCK", "WHERE"), now_rows)
        )
    else:
        out.append("Running now: nothing")
    if last:
        last_rows = [
            (
                f"{r['account']}/{r['resource']}",
                _age(r["last_success_at"], now),
                duration(r["last_success_duration"]),
                r["last_status"] or "-",
                "yes" if r["checkpoint"] else "no",
                (r["last_error"] or "")[:60],
            )
            for r in last
        ]
        out.append(
            "Last runs:\n"
            + table(("PAIR", "LAST SUCCESS", "TOOK", "LAST STATUS", "RESUMABLE", "LAST ERROR"), last_rows)
        )
    else:
        out.append("Last runs: none yet")
    if pending:
        waiting = [(f"{r['account']}/{r['resource']}", r["pending"], _age(r["since"], now)) for r in pending]
        out.append('"Sync now" requests waiting for a run:\n' + table(("PAIR", "REQUESTS", "OLDEST"), waiting))
    return "\n\n".join(out)


def deliveries_text(rows: Sequence[dict[str, Any]]) -> str:
    if not rows:
        return "no webhook deliveries recorded"
    return table(
        ("ID", "RUN", "URL", "STATUS", "ATTEMPTS", "HTTP", "CREATED", "FINISHED", "LAST ERROR"),
        [
            (
                r["id"],
                r["run_id"],
                r["url"],
                r["status"],
                r["attempts"],
                r["last_status"] or "-",
                _when(r["created_at"]),
                _when(r["finished_at"]),
                (r["last_error"] or "")[:60],
            )
            for r in rows
        ],
    )


def to_json(rows: Any) -> str:
    def default(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, timedelta):
            return value.total_seconds()
        return str(value)

    return json.dumps(rows, default=default, indent=2)


def describe(settings: Settings, secrets_read: bool = True) -> str:
    """The effective configuration as TOML, secrets masked (for `check-config`)."""
    lines = [f"# effective configuration from {settings.source or '<memory>'}"]
    if not secrets_read:
        lines.append("# eMAG passwords not read (check-config --secrets reads them, as `run` will)")

    def emit(header: str, obj: Any, skip: tuple[str, ...] = ()) -> None:
        lines.append(f"\n[{header}]")
        for f in fields(obj):
            if f.name in skip:
                continue
            value = getattr(obj, f.name)
            if f.name == "host" and header == "monitor":
                lines.append(f'listen = "{obj.host}:{obj.port}"')
                continue
            if f.name == "port" and header == "monitor":
                continue
            if f.name == "url" and header == "database":
                value = mask_dsn(value)
            elif f.name in ("password", "secret"):
                value = "***" if value else "(not read)"
            if value is None:
                lines.append(f"# {f.name} = (default)")
                continue
            rendered = (
                f'"{value}"'
                if isinstance(value, str)
                else str(list(value)).replace("'", '"')
                if isinstance(value, tuple)
                else str(value).lower()
                if isinstance(value, bool)
                else repr(value)
            )
            lines.append(f"{f.name} = {rendered}")

    emit("database", settings.database)
    for account in settings.accounts:
        emit(f"accounts.{account.name}", account, skip=("name",))
    for name in ("sync", "schedule", "monitor", "log", "webhooks"):
        emit(name, getattr(settings, name))
    return "\n".join(lines) + "\n"
