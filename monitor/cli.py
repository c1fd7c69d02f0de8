"""`emag-sync-monitor [--config PATH] [run|once]`.

run (default): the resident monitor (what systemd runs). once: one recovery pass, a
one-line summary, exit 0. Exit codes: 0 ok; 1 database error; 69 database unavailable
(once); 78 configuration error; 79 schema out of date; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from daemon import __version__, logs
from daemon.config import Settings, add_config_option, load
from daemon.constants import EXIT_FAILED, EXIT_OK
from daemon.exits import fail, run_command
from daemon.identity import identity
from monitor.recovery_loop import run_pass
from monitor.service import MonitorService, open_monitor_store
from monitor.state import MonitorState

PROG = "emag-sync-monitor"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emag-sync-monitor", description="Fail emag-sync runs stuck in 'running' and serve Prometheus metrics."
    )
    add_config_option(parser)
    parser.add_argument("--version", action="version", version=f"emag-sync-monitor {__version__}")
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "once"),
        default="run",
        help="run: the resident monitor (default); once: one recovery pass and exit",
    )
    return parser


async def once(settings: Settings) -> int:
    store = await open_monitor_store(settings)
    try:
        await store.check_schema()
        state = MonitorState()
        report = await run_pass(store, settings, state, identity("emag-sync-monitor"))
    finally:
        await store.close()
    for row in report.failed:
        print(f"failed run {row['id']} ({row['account']}/{row['resource']}): {row['error']}")
    for run in report.stale_alive:
        print(
            f"not heartbeating (lock held, left running): run {run.id} ({run.account}/{run.resource}), "
            f"heartbeat {run.heartbeat_age_s:.0f}s old"
        )
    print(
        f"pass done: {len(report.running)} running, {len(report.failed)} failed, "
        f"{len(report.stale_alive)} not heartbeating, {state.trimmed} old run(s) trimmed"
    )
    return EXIT_OK


async def run(settings: Settings, config_path: str | None) -> int:
    return await MonitorService(settings, config_path=config_path).serve()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        settings = load(args.config, need_secrets=False)
        logs.configure(settings.log.format, settings.log.level)
        try:
            if args.command == "once":
                return anyio.run(once, settings)
            return anyio.run(run, settings, args.config)
        except OSError as exc:  # e.g. the listen address is taken
            return fail(PROG, f"cannot serve on {settings.monitor.host}:{settings.monitor.port}: {exc}", EXIT_FAILED)

    return run_command(PROG, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
