"""What both services do on a signal: SIGHUP re-reads the configuration, SIGTERM and
SIGINT stop. The reload protocol is systemd's: RELOADING=1, then READY=1."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
import structlog

from daemon import logs
from daemon.config import ConfigError, Settings, load
from daemon.notify import Notifier

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

log = structlog.get_logger("daemon.lifecycle")


async def watch_signals(reload: Callable[[], None], stop: Callable[[str], None]) -> None:
    """reload() on each SIGHUP, stop(name) on each SIGTERM or SIGINT (a second one too)."""
    with anyio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                reload()
            else:
                stop(signal.Signals(signum).name)


def reread(config_path: str | None, notifier: Notifier, service: str, *, need_secrets: bool) -> Settings | None:
    """The configuration file again, logging reconfigured; None if it is not valid, and then
    the running configuration stays (said in the log and in systemd's STATUS)."""
    notifier.reloading()
    try:
        new = load(config_path, need_secrets=need_secrets)
    except ConfigError as exc:
        log.error(f"{service}.reload_failed", error=str(exc))
        notifier.ready(f"reload failed, kept the previous configuration: {exc}"[:200])
        return None
    logs.configure(new.log.format, new.log.level, secrets=[a.password for a in new.accounts])
    return new
