"""How emag-sync and emag-sync-monitor end: one line on stderr and a documented exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from daemon import logs
from daemon.config import ConfigError
from daemon.constants import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_SCHEMA, EXIT_UNAVAILABLE
from daemon.groups import unwrap
from daemon.store import SchemaMismatch, StoreError, StoreRejected, StoreUnavailable


def fail(prog: str, message: str, code: int) -> int:
    """One line on stderr; under journald at priority err, so `journalctl -p err` shows it."""
    prefix = "<3>" if logs.stream_is_journal(sys.stderr) else ""
    print(f"{prefix}{prog}: {logs.REDACTOR.text(message)}", file=sys.stderr)
    return code


def run_command(prog: str, body: Callable[[], int]) -> int:
    """Run a command; known failures become one line (secrets masked) and their exit code.
    Until the configuration has set the format and level, logging runs on the defaults, so a
    crash before that is still one entry."""
    logs.configure()
    try:
        try:
            return body()
        except BaseExceptionGroup as group:
            raise unwrap(group) from None
    except (ConfigError, StoreRejected) as exc:  # StoreRejected: the database refuses database.url
        return fail(prog, f"configuration error: {exc}", EXIT_CONFIG)
    except SchemaMismatch as exc:
        return fail(prog, str(exc), EXIT_SCHEMA)
    except StoreUnavailable as exc:
        return fail(prog, str(exc), EXIT_UNAVAILABLE)
    except StoreError as exc:
        return fail(prog, f"database error: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail(prog, "interrupted", EXIT_INTERRUPTED)
