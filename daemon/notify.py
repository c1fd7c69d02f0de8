"""systemd notify protocol through `sdnotify`: READY, STATUS, WATCHDOG, STOPPING.

Everything is a no-op without $NOTIFY_SOCKET, so the same code runs under systemd,
in a terminal and in tests (which bind their own datagram socket).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping

import anyio
import sdnotify
import structlog

log = structlog.get_logger("daemon.notify")


def watchdog_interval_s(env: Mapping[str, str], pid: int | None = None) -> float | None:
    """Half of $WATCHDOG_USEC, when the watchdog is meant for this process ($WATCHDOG_PID)."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    target = env.get("WATCHDOG_PID", "")
    if target and target.isdigit() and int(target) != (pid if pid is not None else os.getpid()):
        return None
    return int(usec) / 2 / 1_000_000


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._sd: sdnotify.SystemdNotifier | None = None
        self._warned = False
        if self.enabled:
            try:  # debug=True: sdnotify raises what it would otherwise swallow...
                with warnings.catch_warnings():  # ...after dropping its socket unclosed
                    warnings.simplefilter("ignore", ResourceWarning)
                    self._sd = sdnotify.SystemdNotifier(debug=True)
            except OSError as exc:
                log.warning(
                    "notify.socket_unavailable",
                    socket=env["NOTIFY_SOCKET"],
                    error=str(exc),
                    effect="systemd will not see READY=1, STATUS= or watchdog pings",
                )
        self.watchdog_s = watchdog_interval_s(env) if self._sd is not None else None
        self._status = ""

    def _send(self, message: str) -> None:
        if self._sd is None:
            return
        try:
            # sdnotify encodes as latin-1; handing it the UTF-8 bytes as latin-1 text sends
            # them unchanged, so "·" and non-Latin error text arrive intact.
            self._sd.notify(message.encode("utf-8").decode("latin-1"))
        except OSError as exc:
            (log.debug if self._warned else log.warning)("notify.send_failed", error=str(exc))
            self._warned = True

    def ready(self, status: str) -> None:
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        """One line that changes with the work; unchanged lines are not resent."""
        status = status.replace("\n", " ")
        if status != self._status:
            self._status = status
            self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str = "stopping") -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def close(self) -> None:
        if self._sd is not None:
            self._sd.socket.close()
        self._sd = None


async def watchdog_loop(notifier: Notifier, alive: Callable[[], bool]) -> None:
    """Ping every half WatchdogSec, from the event loop, only while `alive()` says the
    work loop is making progress: a blocked loop or a stalled scheduler stops the pings
    and systemd restarts the process."""
    if notifier.watchdog_s is None:
        return
    while True:
        if alive():
            notifier.watchdog()
        else:
            log.error("notify.watchdog_withheld", reason="scheduler not making progress")
        await anyio.sleep(notifier.watchdog_s)
