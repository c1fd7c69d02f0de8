"""`emag-sync`: the operator's command line.

Exit codes: 0 ok; 1 a run failed or timed out; 69 database unavailable; 75 another
run holds the lock; 78 configuration error; 79 schema out of date; 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import structlog

from daemon import __version__, logs
from daemon.config import ConfigError, Settings, add_config_option, load
from daemon.constants import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_LOCKED, EXIT_OK, RESOURCES
from daemon.exits import run_command
from daemon.report import deliveries_text, describe, history_text, status_text, to_json
from daemon.store import Store, migrate

log = structlog.get_logger("daemon.cli")

WAIT_POLL_S = 0.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emag-sync", description="Sync eMAG Marketplace offers and orders into PostgreSQL."
    )
    add_config_option(parser)
    parser.add_argument("--version", action="version", version=f"emag-sync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate the configuration and print it, secrets masked")
    check.add_argument(
        "--secrets",
        action="store_true",
        help="also read every account's eMAG password, as `run` will (deploy and reload do)",
    )
    check.add_argument("--quiet", action="store_true", help="print nothing when the configuration is valid")
    sub.add_parser("migrate", help="create or upgrade the database schema")
    once = sub.add_parser("once", help="run one sync now and exit")
    once.add_argument("--account", action="append", metavar="NAME", help="only this account (repeatable)")
    once.add_argument("--resource", choices=(*RESOURCES, "all"), default="all")
    once.add_argument(
        "--mode",
        choices=("incremental", "full"),
        default="incremental",
        help="orders: incremental from the watermark, or full back to the horizon",
    )
    history = sub.add_parser("history", help="recent runs, newest first")
    history.add_argument("--limit", type=int, default=20)
    history.add_argument("--account")
    history.add_argument("--resource", choices=RESOURCES)
    history.add_argument("--json", action="store_true")
    status = sub.add_parser("status", help="what runs now, and the last success per account and resource")
    status.add_argument("--json", action="store_true")
    trigger = sub.add_parser("trigger", help='"sync now": queue a run for the resident daemon (safe to repeat)')
    trigger.add_argument("--account", action="append", metavar="NAME", help="only this account (repeatable)")
    trigger.add_argument("--resource", choices=(*RESOURCES, "all"), default="all")
    trigger.add_argument("--wait", action="store_true", help="wait for the runs that serve it; exit as `once` does")
    trigger.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="with --wait: give up (exit 1) after this long (default 3600)",
    )
    deliveries = sub.add_parser("deliveries", help="the webhook delivery log, newest first")
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.add_argument("--json", action="store_true")
    sub.add_parser("run", help="the resident daemon (what systemd runs)")
    recover = sub.add_parser("recover", help="fail runs stuck in 'running' whose process is gone")
    recover.add_argument(
        "--older-than", type=float, metavar="SECONDS", required=True, help="heartbeat older than this many seconds"
    )
    return parser


async def _with_store(settings: Settings, action: Callable[[Store], Awaitable[int]]) -> int:
    store = await Store.open(settings.database, max_size=settings.pool_size)
    try:
        await store.check_schema()
        return await action(store)
    finally:
        await store.close()


def _exit_code(results: Sequence[Any]) -> int:
    statuses = {r["status"] if isinstance(r, dict) else r.status for r in results}
    if statuses & {"failed", "timeout"}:
        return EXIT_FAILED
    if "cancelled" in statuses:
        return EXIT_INTERRUPTED
    if "skipped" in statuses:
        return EXIT_LOCKED
    return EXIT_OK


async def cmd_once(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.sync.clients import Clients
    from daemon.sync.pairs import run_many
    from daemon.sync.run import RunRequest

    requests = [
        RunRequest(settings.account(a), r, args.mode, "manual")
        for a, r in _pairs(settings, args.account, args.resource)
    ]
    interrupted = False

    results: list = []

    async def body(store: Store) -> int:
        async with Clients(settings) as clients, anyio.create_task_group() as tg:

            async def watch_signals() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        log.warning("cli.interrupted")
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(watch_signals)
            await run_many(store, clients, settings.sync, requests, into=results)
            tg.cancel_scope.cancel()
        with anyio.move_on_after(2.0, shield=True):  # rows whose run ended while the database was away
            await store.close_deferred()
        for r in sorted(results, key=lambda r: (r.account, r.resource)):
            line = f"{r.account}/{r.resource}: {r.status}"
            if r.run_id is not None:
                line += f" (run {r.run_id}, {r.progress.pages_done} pages, {r.progress.items_seen} items)"
            print(line + (f" - {r.error}" if r.error and r.status != "completed" else ""))
        if interrupted:
            print(f"interrupted: {len(requests) - len(results)} run(s) cancelled (their rows say so)")
        return _exit_code(results)

    code = await _with_store(settings, body)
    return EXIT_INTERRUPTED if interrupted else code


def _pairs(settings: Settings, names: list[str] | None, resource: str) -> list[tuple[str, str]]:
    """The (account, resource) pairs a command names, as configured (ConfigError otherwise)."""
    accounts = [settings.account(n) for n in dict.fromkeys(names or settings.names)]
    pairs = [
        (a.name, r) for a in accounts for r in (a.resources if resource == "all" else (resource,)) if r in a.resources
    ]
    if not pairs:
        raise ConfigError(f"--resource {resource}: not enabled for the selected accounts")
    return pairs


async def cmd_trigger(settings: Settings, args: argparse.Namespace) -> int:
    pairs = _pairs(settings, args.account, args.resource)

    async def body(store: Store) -> int:
        await store.register_pairs(pairs)
        ids = []
        for account, resource in pairs:
            for request_id in await store.request_sync(account, resource):
                ids.append(request_id)
                print(f"queued {account}/{resource} (request {request_id})")
        if not args.wait:
            return EXIT_OK
        return await _wait_for_requests(store, ids, args.timeout)

    return await _with_store(settings, body)


async def _wait_for_requests(store: Store, ids: list[int], timeout_s: float) -> int:
    """Until every request's run has ended (printing each as `once` does), or timeout_s."""
    printed: set[int] = set()
    results: list[Any] = []
    with anyio.move_on_after(timeout_s):
        while len(printed) < len(ids):
            for row in await store.request_outcomes(ids):
                if row["id"] in printed or row["status"] in (None, "running"):
                    continue
                printed.add(row["id"])
                results.append(row)
                print(
                    f"{row['account']}/{row['resource']}: {row['status']} (run {row['run_id']})"
                    + (f" - {row['error']}" if row["error"] and row["status"] != "completed" else "")
                )
            await anyio.sleep(WAIT_POLL_S)
    if len(printed) < len(ids):
        print(
            f"gave up waiting after {timeout_s:g} s: {len(ids) - len(printed)} request(s) not served yet "
            "(they stay queued; `emag-sync status` shows them)"
        )
        return EXIT_FAILED
    return _exit_code(results)


async def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        rows = await store.recent_deliveries(max(1, args.limit))
        print(to_json(rows) if args.json else deliveries_text(rows))
        return EXIT_OK

    return await _with_store(settings, body)


async def cmd_history(settings: Settings, args: argparse.Namespace) -> int:
    async def body(store: Store) -> int:
        runs = await store.history(max(1, args.limit), args.account, args.resource)
        print(to_json(runs) if args.json else history_text(runs))
        return EXIT_OK

    return await _with_store(settings, body)


async def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.store.recovery import running_runs

    async def body(store: Store) -> int:
        running = await running_runs(
            store, stale_after_s=settings.stuck_threshold_s, max_age_s=settings.monitor.max_run_age_s
        )
        last, pending = await store.last_runs(), await store.pending_requests()
        print(
            to_json({"running": running, "pairs": last, "pending_requests": pending})
            if args.json
            else status_text(running, last, pending)
        )
        return EXIT_OK

    return await _with_store(settings, body)


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    applied = await migrate(settings.database)
    print(f"applied migrations {', '.join(map(str, applied))}" if applied else "schema is up to date")
    return EXIT_OK


async def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.service import serve  # the resident daemon; imported only when asked for

    return await serve(settings, args.config)


async def cmd_recover(settings: Settings, args: argparse.Namespace) -> int:
    from daemon.store.recovery import recover_stuck

    async def body(store: Store) -> int:
        failed = await recover_stuck(
            store, stale_after_s=args.older_than, max_age_s=settings.monitor.max_run_age_s, by="emag-sync recover"
        )
        for run in failed:
            print(f"failed run {run['id']} ({run['account']}/{run['resource']}): {run['error']}")
        print(f"{len(failed)} stuck run(s) failed")
        return EXIT_OK

    return await _with_store(settings, body)


# Only the commands that call eMAG read its passwords: status, history & co. work for an
# operator who may read the configuration but not the root-only password files.
NEED_EMAG_SECRETS = ("once", "run")

COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], Awaitable[int]]] = {
    "migrate": cmd_migrate,
    "once": cmd_once,
    "history": cmd_history,
    "status": cmd_status,
    "run": cmd_run,
    "recover": cmd_recover,
    "trigger": cmd_trigger,
    "deliveries": cmd_deliveries,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings = load(args.config, need_secrets=args.command in NEED_EMAG_SECRETS or getattr(args, "secrets", False))
        logs.configure(settings.log.format, settings.log.level, secrets=[a.password for a in settings.accounts])
        if args.command == "check-config":
            if not args.quiet:
                print(describe(settings, secrets_read=args.secrets), end="")
            return EXIT_OK
        return anyio.run(COMMANDS[args.command], settings, args)

    return run_command("emag-sync", body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
