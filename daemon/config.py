"""Settings: TOML plus the environment, validated once into the frozen dataclasses
of `daemon.settings` (re-exported here, so callers import from one place).

Every problem becomes one `ConfigError` line that names the key; the CLI prints it
and exits 78 (EX_CONFIG) so systemd does not restart a process that cannot work.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from daemon import secrets
from daemon.constants import DEFAULT_CONFIG_PATH, RESOURCES
from daemon.settings import (
    AccountSettings,
    ConfigError,
    DatabaseSettings,
    LogSettings,
    MonitorSettings,
    ScheduleSettings,
    Settings,
    SyncSettings,
    WebhookSettings,
)

__all__ = [
    "AccountSettings",
    "ConfigError",
    "DatabaseSettings",
    "LogSettings",
    "MonitorSettings",
    "ScheduleSettings",
    "Settings",
    "SyncSettings",
    "WebhookSettings",
    "add_config_option",
    "config_path",
    "database_url_from_env",
    "load",
    "mask_dsn",
    "normalize_dsn",
    "parse",
]


# --- validation helpers ---------------------------------------------------------

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_LEVELS = ("debug", "info", "warning", "error")


def _number(kind: type, low: float, high: float) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise ConfigError(f"{key}: expected {'a number' if kind is float else 'an integer'}, got {value!r}")
        if not low <= value <= high:
            raise ConfigError(f"{key}: {value} is out of range [{low:g}, {high:g}]")
        return kind(value)

    return check


def _string(
    pattern: re.Pattern[str] | None = None, choices: tuple[str, ...] = (), why: str = ""
) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a non-empty string")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        if pattern and not pattern.match(value):
            raise ConfigError(f"{key}: {value!r} is not valid" + (f" ({why})" if why else ""))
        return value

    return check


def _timezone(key: str, value: Any) -> str:
    value = _string()(key, value)
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{key}: unknown time zone {value!r}") from None
    return value


def _http_url(key: str, value: Any) -> str:
    parts = urlsplit(_string()(key, value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: expected an http(s) URL, got {value!r}")
    return value.rstrip("/")


def _resources(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or any(v not in RESOURCES for v in value):
        raise ConfigError(f"{key}: expected a non-empty list of {', '.join(RESOURCES)}")
    return tuple(dict.fromkeys(value))


def _order_type(key: str, value: Any) -> int:
    return _number(int, 2, 3)(key, value)


def normalize_dsn(key: str, value: Any) -> str:
    """Accept postgres DSNs, including SQLAlchemy spellings like postgresql+asyncpg://."""
    parts = urlsplit(_string()(key, value))
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ConfigError(f"{key}: expected a postgresql:// URL, got scheme {parts.scheme!r}")
    try:
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{key}: invalid port in database URL") from None
    return urlunsplit(("postgresql", *parts[1:]))


def mask_dsn(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit((parts.scheme, f"{user}:***@{netloc[1]}", *parts[2:]))


def _section(
    table: Mapping[str, Any], cls: type, prefix: str, checks: Mapping[str, Callable[[str, Any], Any]], **extra: Any
) -> Any:
    allowed = {f.name for f in fields(cls)} - set(extra)
    values = dict(extra)
    for key, value in table.items():
        if key not in allowed or key not in checks:
            raise ConfigError(f"{prefix}.{key}: unknown key")
        values[key] = checks[key](f"{prefix}.{key}", value)
    return cls(**values)


def _table(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a table")
    return value


_pos_s = _number(float, 0.001, 366 * 86400)
_SYNC_CHECKS = {
    "page_size": _number(int, 1, 100),
    "max_pages": _number(int, 1, 1_000_000),
    "timeout_s": _pos_s,
    "heartbeat_interval_s": _number(float, 0.05, 3600),
    "prefetch_pages": _number(int, 1, 32),
    "connect_timeout_s": _number(float, 0.1, 600),
    "read_timeout_s": _number(float, 0.1, 3600),
    "retry_attempts": _number(int, 1, 100),
    "retry_base_delay_s": _number(float, 0.001, 60),
    "retry_max_total_s": _pos_s,
    "orders_overlap_s": _number(float, 0, 86400),
    "orders_horizon_days": _number(int, 1, 3650),
}
_SCHEDULE_CHECKS = {
    "offers_interval_s": _number(float, 1, 86400),
    "orders_interval_s": _number(float, 1, 86400),
    "jitter_s": _number(float, 0, 3600),
    "shutdown_grace_s": _number(float, 0, 60),
}
_MONITOR_CHECKS = {
    "host": _string(),
    "port": _number(int, 0, 65535),  # both set through `listen`
    "interval_s": _number(float, 0.1, 86400),
    "stuck_threshold_s": _number(float, 1, 30 * 86400),
    "max_run_age_s": _pos_s,
    "retention_days": _number(int, 1, 36500),
    "statement_timeout_s": _number(float, 0.1, 600),
}
_DB_CHECKS = {
    "url": normalize_dsn,
    "schema": _string(_IDENT),
    "pool_max": _number(int, 4, 100),
    "connect_timeout_s": _number(float, 0.1, 600),
    "statement_timeout_s": _number(float, 0.1, 86400),
}
_LOG_CHECKS = {"format": _string(choices=("kv", "json")), "level": _string(choices=_LEVELS)}


def _urls(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of http(s) URLs")
    return tuple(dict.fromkeys(_http_url(key, v) for v in value))


_WEBHOOK_CHECKS = {"urls": _urls, "timeout_s": _number(float, 0.1, 60), "max_attempts": _number(int, 1, 20)}


def _webhooks(doc: Mapping[str, Any], env: Mapping[str, str], base: Path, need_secrets: bool) -> WebhookSettings:
    """[webhooks]: run-end POSTs, signed with a secret read like the account passwords
    (`secret`, $CREDENTIALS_DIRECTORY/webhook.secret, `secret_file`)."""
    table = dict(_table(doc, "webhooks"))
    wanted = bool(table.get("urls"))
    secret = secrets.secret(table, "webhooks", "secret", "webhook.secret", env, base, need_secrets and wanted)
    return _section(table, WebhookSettings, "webhooks", _WEBHOOK_CHECKS, secret=secret)


# --- accounts and secrets -------------------------------------------------------

_USERNAME = re.compile(r"^[^:\x00-\x1f]+$")
_ACCOUNT_CHECKS = {
    "base_url": _http_url,
    "username": _string(_USERNAME, why="HTTP Basic auth forbids ':' and control characters"),
    "order_type": _order_type,
    "timezone": _timezone,
    "resources": _resources,
    "offers_interval_s": _SCHEDULE_CHECKS["offers_interval_s"],
    "orders_interval_s": _SCHEDULE_CHECKS["orders_interval_s"],
}


def _accounts(
    doc: Mapping[str, Any], schedule: ScheduleSettings, env: Mapping[str, str], base: Path, need_secrets: bool
) -> tuple[AccountSettings, ...]:
    table = _table(doc, "accounts")
    if not table:
        raise ConfigError("accounts: at least one [accounts.NAME] table is required")
    result = []
    for name, raw in table.items():
        if not _NAME.match(name):
            raise ConfigError(f"accounts.{name}: names are 1-40 letters, digits, '-' or '_'")
        if not isinstance(raw, dict):
            raise ConfigError(f"accounts.{name}: expected a table")
        raw = dict(raw)
        password = secrets.secret(raw, f"accounts.{name}", "password", f"{name}.password", env, base, need_secrets)
        for required in ("base_url", "username"):
            if required not in raw:
                raise ConfigError(f"accounts.{name}.{required}: missing")
        defaults = {"offers_interval_s": schedule.offers_interval_s, "orders_interval_s": schedule.orders_interval_s}
        account = _section(raw, AccountSettings, f"accounts.{name}", _ACCOUNT_CHECKS, name=name, password=password)
        result.append(replace(account, **{k: v for k, v in defaults.items() if k not in raw}))
    return tuple(result)


# --- environment ------------------------------------------------------------------

# Environment names the old system's operators already use -> (section, key, scale).
_ENV_OVERRIDES = {
    "EMAG_SYNC_MAX_PAGES": ("sync", "max_pages", int, 1),
    "EMAG_SYNC_TIMEOUT_HOURS": ("sync", "timeout_s", float, 3600),
    "EMAG_SYNC_BATCH_SIZE": ("sync", "page_size", int, 1),
    "EMAG_SYNC_PROGRESS_INTERVAL": ("sync", "heartbeat_interval_s", float, 1),
    "EMAG_SYNC_MONITOR_INTERVAL": ("monitor", "interval_s", float, 1),
    "EMAG_SYNC_STUCK_THRESHOLD_HOURS": ("monitor", "max_run_age_s", float, 3600),
    "EMAG_SYNC_LOG_FORMAT": ("log", "format", str, 1),
    "EMAG_SYNC_LOG_LEVEL": ("log", "level", str, 1),
}


def _env_value(name: str, raw: str, kind: type, scale: float) -> Any:
    if kind is str:
        return raw.strip().lower()
    try:
        value = kind(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    return value * scale if scale != 1 else value


def database_url_from_env(env: Mapping[str, str]) -> str | None:
    """DATABASE_SYNC_URL > DATABASE_URL > DB_HOST/DB_PORT/DB_USER/DB_PASSWORD (or DB_PASS)/DB_NAME."""
    for name in ("DATABASE_SYNC_URL", "DATABASE_URL"):
        if env.get(name):
            return normalize_dsn(name, env[name])
    parts = {k: env[k] for k in ("DB_HOST", "DB_PORT", "DB_USER", "DB_PASSWORD", "DB_PASS", "DB_NAME") if env.get(k)}
    if not parts:
        return None
    user = quote(parts.get("DB_USER", "postgres"), safe="")
    password = parts.get("DB_PASSWORD", parts.get("DB_PASS"))
    auth = f"{user}:{quote(password, safe='')}" if password else user
    host = parts.get("DB_HOST", "127.0.0.1")
    port = parts.get("DB_PORT", "5432")
    if not port.isdigit():
        raise ConfigError(f"DB_PORT: expected a port number, got {port!r}")
    return f"postgresql://{auth}@{host}:{port}/{quote(parts.get('DB_NAME', 'postgres'), safe='')}"


def _apply_env(doc: dict[str, Any], env: Mapping[str, str]) -> None:
    for name, (section, key, kind, scale) in _ENV_OVERRIDES.items():
        if env.get(name, "").strip():
            doc.setdefault(section, {})
            if not isinstance(doc[section], dict):
                raise ConfigError(f"{section}: expected a table")
            doc[section][key] = _env_value(name, env[name], kind, scale)
    url = database_url_from_env(env)
    if url:
        doc.setdefault("database", {})["url"] = url


def _monitor(table: dict[str, Any], env: Mapping[str, str]) -> MonitorSettings:
    for key in ("host", "port"):
        if key in table:
            raise ConfigError(f'monitor.{key}: unknown key (use listen = "HOST:PORT")')
    listen = table.pop("listen", None)
    if listen is not None:
        host, sep, port = _string()("monitor.listen", listen).rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"monitor.listen: expected HOST:PORT, got {listen!r}")
        table["host"], table["port"] = host.strip("[]"), int(port)
    if env.get("EMAG_SYNC_METRICS_PORT", "").strip():
        table["port"] = _env_value("EMAG_SYNC_METRICS_PORT", env["EMAG_SYNC_METRICS_PORT"], int, 1)
    return _section(table, MonitorSettings, "monitor", _MONITOR_CHECKS)


# --- entry points -----------------------------------------------------------------


def config_path(cli_path: str | None, env: Mapping[str, str]) -> Path:
    return Path(cli_path or env.get("EMAG_SYNC_CONFIG") or DEFAULT_CONFIG_PATH)


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """`--config PATH`, as both CLIs take it (before the subcommand); see config_path()."""
    parser.add_argument(
        "--config", metavar="PATH", help=f"TOML configuration (default: $EMAG_SYNC_CONFIG or {DEFAULT_CONFIG_PATH})"
    )


def parse(
    doc: dict[str, Any], env: Mapping[str, str], base: Path = Path("."), source: str = "", need_secrets: bool = True
) -> Settings:
    """Validate a TOML document; `need_secrets=False` (the monitor) skips account passwords."""
    known = {"database", "accounts", "sync", "schedule", "monitor", "log", "webhooks"}
    for key in doc:
        if key not in known:
            raise ConfigError(f"{key}: unknown key")
    _apply_env(doc, env)
    database = dict(_table(doc, "database"))
    if "url" not in database:
        raise ConfigError("database.url: missing (or set DATABASE_URL)")
    database["url"] = normalize_dsn("database.url", database["url"])
    database["url"] = secrets.database_url(database, env, base, need_secrets)  # takes password_file out
    schedule = _section(_table(doc, "schedule"), ScheduleSettings, "schedule", _SCHEDULE_CHECKS)
    monitor = _monitor(dict(_table(doc, "monitor")), env)
    sync = _section(_table(doc, "sync"), SyncSettings, "sync", _SYNC_CHECKS)
    if monitor.max_run_age_s <= sync.timeout_s + 60:
        # The monitor would fail runs that are still inside their own deadline.
        raise ConfigError(
            f"monitor.max_run_age_s: {monitor.max_run_age_s:g} s must exceed sync.timeout_s "
            f"({sync.timeout_s:g} s) by more than 60 s (EMAG_SYNC_STUCK_THRESHOLD_HOURS / "
            "EMAG_SYNC_TIMEOUT_HOURS)"
        )
    return Settings(
        database=_section(database, DatabaseSettings, "database", _DB_CHECKS),
        accounts=_accounts(doc, schedule, env, base, need_secrets),
        sync=sync,
        schedule=schedule,
        monitor=monitor,
        log=_section(_table(doc, "log"), LogSettings, "log", _LOG_CHECKS),
        webhooks=_webhooks(doc, env, base, need_secrets),
        source=source,
    )


def load(cli_path: str | None = None, env: Mapping[str, str] | None = None, need_secrets: bool = True) -> Settings:
    """Read the TOML file and the environment; raise ConfigError with one line."""
    env = os.environ if env is None else env
    path = config_path(cli_path, env)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror} (use --config PATH or $EMAG_SYNC_CONFIG)") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: TOML syntax error: {exc}") from None
    return parse(doc, env, base=path.parent, source=str(path), need_secrets=need_secrets)
