"""structlog setup: one line per event, secrets redacted, journald priorities.

Lines look like `sync.page_committed account=main resource=offers page=7 items=100`.
Under journald (`$JOURNAL_STREAM` names stderr) each line starts with its sd-daemon
priority (`<3>` error ... `<7>` debug); elsewhere a UTC timestamp and the level lead.
Library logging (asyncpg, aiohttp, asyncio), warnings and uncaught exceptions go
through the same renderer, so a traceback is one entry at its priority, never many.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, MutableMapping
from types import TracebackType
from typing import Any, TextIO

import structlog

PRIORITY = {"critical": 2, "error": 3, "exception": 3, "warning": 4, "notice": 5, "info": 6, "debug": 7}
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

_SECRET_KEYS = re.compile(r"pass(word)?|secret|token|authorization|credential", re.IGNORECASE)
_PATTERNS = (
    # user:password@ inside any URL or DSN
    (re.compile(r"(?P<keep>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE), r"\g<keep>***@"),
    # Authorization: Basic xxx / 'Authorization': 'Basic xxx'
    (
        re.compile(r"(?P<keep>authorization['\"]?\s*[:=]\s*['\"]?)(basic|bearer)?\s*[^\s'\",}]+", re.IGNORECASE),
        r"\g<keep>***",
    ),
    # password=... / DB_PASS=... (DSN keywords, env dumps, query strings)
    (re.compile(r"(?P<keep>pass(word)?\s*=\s*['\"]?)[^\s'\",;&}]+", re.IGNORECASE), r"\g<keep>***"),
    # "password": "..." / 'password': '...' (JSON and dict reprs)
    (re.compile(r"(?P<keep>['\"]pass(word)?['\"]\s*:\s*['\"])[^'\"]*", re.IGNORECASE), r"\g<keep>***"),
)


class Redactor:
    """Removes known secrets and secret-shaped substrings from every value of an event."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    def register(self, *secrets: str | None) -> None:
        self._known.update(s for s in secrets if s and len(s) >= 3)

    def text(self, value: str) -> str:
        for secret in sorted(self._known, key=len, reverse=True):
            value = value.replace(secret, "***")
        for pattern, replacement in _PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def value(self, key: str, value: Any) -> Any:
        if _SECRET_KEYS.search(key) and value not in (None, ""):
            return "***"
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, BaseException):
            return self.text(f"{type(value).__name__}: {value}")
        if isinstance(value, dict):
            return {k: self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(key, v) for v in value]
        return value

    def __call__(self, _logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        return {k: self.value(k, v) for k, v in event.items()}


REDACTOR = Redactor()


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value == value else "nan"
    if isinstance(value, str):
        text = value
    elif value is None or isinstance(value, (bool, int, list, tuple, dict)):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:  # datetimes, paths, enums: their own text, quoted below if need be (once)
        text = str(value)
    if text == "" or any(c in text for c in ' ="\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


class KeyValueRenderer:
    """`<6>event k=v ...` under journald, `2026-01-01T12:00:00Z info event k=v ...` elsewhere."""

    def __init__(self, journal: bool) -> None:
        self.journal = journal

    def __call__(self, _logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        level = event.pop("level", name)
        head = str(event.pop("event", ""))
        event.pop("timestamp", None)
        body = " ".join(f"{k}={_format_value(v)}" for k, v in event.items())
        line = f"{head} {body}".rstrip().replace("\n", "\\n")
        if self.journal:
            return f"<{PRIORITY.get(level, 6)}>{line}"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return f"{stamp} {level} {line}"


class JsonRenderer:
    def __init__(self, journal: bool) -> None:
        self.journal = journal

    def __call__(self, _logger: Any, name: str, event: MutableMapping[str, Any]) -> str:
        event.setdefault("level", name)
        line = json.dumps(event, default=str, ensure_ascii=False)
        return f"<{PRIORITY.get(event['level'], 6)}>{line}" if self.journal else line


def stream_is_journal(stream: TextIO, env: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """True when `stream` is the journald stream systemd named in $JOURNAL_STREAM."""
    value = env.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


def configure(
    fmt: str = "kv", level: str = "info", stream: TextIO | None = None, secrets: Iterable[str | None] = ()
) -> None:
    """Configure structlog, stdlib logging and the crash hooks for the whole process;
    safe to call again (SIGHUP reload)."""
    stream = stream or sys.stderr
    journal = stream_is_journal(stream)
    REDACTOR.register(*secrets)
    renderer = JsonRenderer(journal) if fmt == "json" else KeyValueRenderer(journal)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True) if fmt == "json" else _noop
    tail = [stamp, structlog.processors.format_exc_info, REDACTOR, renderer]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, *tail],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=[_from_stdlib], processors=[_drop_meta, *tail])
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(LEVELS.get(level, logging.INFO))
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = lambda args: _log_uncaught(
        args.exc_type, args.exc_value, args.exc_traceback, thread=args.thread.name if args.thread else None
    )


def _from_stdlib(_logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library's record as an event: its logger's name leads, its text is `message=`."""
    record = event["_record"]
    message = event.pop("event")
    event["level"] = "warning" if method == "warn" else method
    event["event"] = "python.warning" if record.name == "py.warnings" else record.name
    event["message"] = message.strip()
    return event


def _drop_meta(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("_record", None)
    event.pop("_from_structlog", None)
    return event


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException | None, tb: TracebackType | None, thread: str | None = None
) -> None:
    """sys.excepthook: a crash is one critical entry (journalctl -p err finds it)."""
    where = {"thread": thread} if thread else {}
    structlog.get_logger("daemon").critical("process.crashed", **where, exc_info=(exc_type, exc, tb))


def _noop(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event


def reset() -> None:
    """Undo configure() (tests: the next test's streams are new)."""
    structlog.reset_defaults()
    logging.getLogger().handlers = []
    logging.captureWarnings(False)
    sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
