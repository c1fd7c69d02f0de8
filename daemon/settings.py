"""The configuration's shape: typed, frozen settings with their defaults.

`daemon.config` reads and validates TOML and the environment into these; everything
else only reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from daemon.constants import DEFAULT_SCHEMA, RESOURCES


class ConfigError(Exception):
    """An invalid configuration; the message is one line naming the key."""


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(repr=False)
    schema: str = DEFAULT_SCHEMA
    pool_max: int = 20
    connect_timeout_s: float = 10.0
    statement_timeout_s: float = 60.0


@dataclass(frozen=True)
class AccountSettings:
    name: str
    base_url: str
    username: str
    password: str = field(repr=False)
    order_type: int | None = None
    timezone: str = "Europe/Bucharest"
    resources: tuple[str, ...] = RESOURCES
    offers_interval_s: float = 900.0
    orders_interval_s: float = 120.0

    def interval_s(self, resource: str) -> float:
        return self.offers_interval_s if resource == "offers" else self.orders_interval_s

    @property
    def login(self) -> str:
        """The seller login eMAG counts requests against: API host and username."""
        return f"{urlsplit(self.base_url).hostname}/{self.username}"


@dataclass(frozen=True)
class SyncSettings:
    page_size: int = 100
    max_pages: int = 5000
    timeout_s: float = 2 * 3600.0
    heartbeat_interval_s: float = 10.0
    prefetch_pages: int = 4
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0
    retry_attempts: int = 6
    retry_base_delay_s: float = 0.5
    retry_max_total_s: float = 300.0
    orders_overlap_s: float = 600.0
    orders_horizon_days: int = 365


@dataclass(frozen=True)
class ScheduleSettings:
    offers_interval_s: float = 900.0
    orders_interval_s: float = 120.0
    jitter_s: float = 15.0
    shutdown_grace_s: float = 5.0


@dataclass(frozen=True)
class MonitorSettings:
    host: str = "127.0.0.1"
    port: int = 9108
    interval_s: float = 30.0
    stuck_threshold_s: float | None = None  # None: 3 x heartbeat interval + 30 s
    max_run_age_s: float = 4 * 3600.0
    retention_days: int = 90
    statement_timeout_s: float = 5.0


@dataclass(frozen=True)
class LogSettings:
    format: str = "kv"
    level: str = "info"


@dataclass(frozen=True)
class WebhookSettings:
    urls: tuple[str, ...] = ()
    secret: str = field(default="", repr=False)
    timeout_s: float = 5.0
    max_attempts: int = 8


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    accounts: tuple[AccountSettings, ...]
    sync: SyncSettings = SyncSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    monitor: MonitorSettings = MonitorSettings()
    log: LogSettings = LogSettings()
    webhooks: WebhookSettings = WebhookSettings()
    source: str = ""

    def account(self, name: str) -> AccountSettings:
        for account in self.accounts:
            if account.name == name:
                return account
        raise ConfigError(f"accounts.{name}: no such account (have: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.accounts)

    @property
    def pool_size(self) -> int:
        """Database connections: one per running pair (it holds the lock) plus heartbeats and
        closes, up to database.pool_max (runs past it wait for a connection, so several daemons
        sharing many accounts leave the server's max_connections to the ERP)."""
        pairs = sum(len(a.resources) for a in self.accounts)
        return max(4, min(self.database.pool_max, 2 * pairs + 2))

    @property
    def stuck_threshold_s(self) -> float:
        configured = self.monitor.stuck_threshold_s
        return configured if configured is not None else 3 * self.sync.heartbeat_interval_s + 30.0
