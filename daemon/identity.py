"""Who this process is, as run rows and recovery errors name it: host and pid."""

from __future__ import annotations

import os
import socket


def host_pid() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def identity(program: str) -> str:
    """`emag-sync-monitor host:1234`: who did it, for an error text."""
    host, pid = host_pid()
    return f"{program} {host}:{pid}"
