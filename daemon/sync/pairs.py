"""Runs of (account, resource) pairs with the same lifecycle for `once` and the daemon:
client, lease (single flight), run row, pages, closed row; one pair's failure is its own."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import anyio
import structlog

from daemon.config import ConfigError, SyncSettings
from daemon.emag import EmagError
from daemon.store import LockBusy, Store, StoreError
from daemon.sync.clients import Clients
from daemon.sync.run import Counters, RunRequest, RunResult, SyncRun, internal_error

log = structlog.get_logger("daemon.sync")


async def run_pair(
    store: Store,
    clients: Clients,
    sync: SyncSettings,
    request: RunRequest,
    on_progress: Callable[[str, Counters], None] | None = None,
) -> RunResult:
    """One run of one pair. Never raises but for cancellation: the result says how it ended."""
    name, resource = request.account.name, request.resource
    try:
        async with clients.hold(name) as client, store.lease(name, resource) as lease:
            return await SyncRun(client, sync, request, on_progress).execute(lease)
    except LockBusy as exc:
        # a requested pair is tried every second while it runs elsewhere: not worth a warning each time
        (log.debug if request.trigger == "request" else log.warning)(
            "sync.skipped_locked", account=name, resource=resource, reason=str(exc)
        )
        return RunResult(name, resource, "skipped", error=str(exc))
    except (StoreError, EmagError, ConfigError, TimeoutError) as exc:
        log.error("sync.run_not_started", account=name, resource=resource, error=str(exc))
        return RunResult(name, resource, "failed", error=str(exc))
    except Exception as exc:  # a bug in one pair must not take the daemon's other pairs down
        log.error("sync.run_crashed", account=name, resource=resource, exc_info=exc)
        return RunResult(name, resource, "failed", error=internal_error(exc))


async def run_many(
    store: Store,
    clients: Clients,
    sync: SyncSettings,
    requests: Iterable[RunRequest],
    into: list[RunResult] | None = None,
) -> list[RunResult]:
    """Every request at once in one task group; one pair failing does not cancel another.
    Results are appended to `into` as runs end, so a caller that is cancelled midway
    still knows which runs finished (the cancelled ones closed their rows themselves)."""
    results: list[RunResult] = [] if into is None else into

    async def one(request: RunRequest) -> None:
        results.append(await run_pair(store, clients, sync, request))

    async with anyio.create_task_group() as tg:
        for request in requests:
            tg.start_soon(one, request)
    return results
