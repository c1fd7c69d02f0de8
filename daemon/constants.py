"""Constants with units, and the process exit codes operators and systemd rely on."""

from __future__ import annotations

# Exit codes (sysexits.h where one fits). The units list EXIT_CONFIG and
# EXIT_SCHEMA in RestartPreventExitStatus= so systemd does not restart in a loop.
EXIT_OK = 0
EXIT_FAILED = 1  # at least one run failed or timed out
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the database cannot be reached (one-shot commands)
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the (account, resource) lock
EXIT_CONFIG = 78  # EX_CONFIG: the configuration is invalid
EXIT_SCHEMA = 79  # the database schema is older than this code
EXIT_INTERRUPTED = 130  # SIGINT/SIGTERM during a one-shot command

DEFAULT_CONFIG_PATH = "/etc/emag-sync/emag-sync.toml"
DEFAULT_SCHEMA = "emag_sync"

RESOURCES = ("offers", "orders")
RUN_STATUSES = ("running", "completed", "failed", "timeout", "cancelled")
TERMINAL_STATUSES = RUN_STATUSES[1:]

# eMAG: itemsPerPage is documented up to 100; a page shorter than asked is proof
# of the end only when we asked for at most this many.
API_MAX_RELIABLE_PAGE_SIZE = 100
# eMAG's shortest rate-limit window: the least a 429 without Retry-After pauses the login,
# and how long a run waits on a budget whose last spender died without saying where it stood.
EMAG_WINDOW_S = 1.0
# eMAG: a Before date filter may be at most one month after its After.
ORDER_WINDOW_MAX_S = 30 * 24 * 3600
