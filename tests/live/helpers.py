"""What the live test modules share: the units' names and a few questions to a live host."""

from __future__ import annotations

import urllib.error
import urllib.request

from tests.live.install import LiveHost

DAEMON, MONITOR = "emag-sync.service", "emag-sync-monitor.service"


def is_active(host: LiveHost, unit: str) -> bool:
    return host.box.run("systemctl", "is-active", "--quiet", unit).returncode == 0


def ensure_active(host: LiveHost) -> None:
    """Tests run in order but must not depend on how the previous one left the daemon."""
    if not is_active(host, DAEMON):
        host.run("systemctl", "reset-failed", DAEMON)
        host.run("systemctl", "start", DAEMON)


def healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
