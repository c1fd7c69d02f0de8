"""The Prometheus collector: renders a Snapshot read just before (per scrape) plus the
monitor's own counters. A fresh registry per scrape, so concurrent scrapes never share
a half-updated snapshot.

Labels are bounded: account names come from the configuration and sync_state, resource
and status are closed sets (constants.RESOURCES, RUN_STATUSES). No error text, no host
names, no customer data reach a label.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from daemon import __version__
from daemon.config import Settings
from daemon.constants import TERMINAL_STATUSES
from daemon.store.observe import Snapshot
from monitor.state import MonitorState

PAIR = ["account", "resource"]
ERROR_STATUSES = ("failed", "timeout")
TOTAL_FIELDS = ("items_seen", "items_written", "api_requests", "api_retries", "api_throttled", "api_wait_s")
LATENCY_QUANTILES = (("0.5", "api_latency_p50_s"), ("0.95", "api_latency_p95_s"), ("1", "api_latency_max_s"))


class SyncCollector(Collector):  # an ABC before prometheus-client 0.24, a Protocol since
    def __init__(self, settings: Settings, state: MonitorState, snapshot: Snapshot | None) -> None:
        self.settings, self.state, self.snapshot = settings, state, snapshot

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("emag_sync_up", "1 when the monitor could read the database for this scrape")
        up.add_metric([], 1.0 if self.snapshot is not None else 0.0)
        yield up
        build = GaugeMetricFamily(
            "emag_sync_build_info", "The emag-sync release this monitor runs (always 1)", labels=["version", "python"]
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build
        yield from self._config()
        yield from self._own()
        if self.snapshot is not None:
            yield from self._database(self.snapshot)

    def _pairs(self) -> list[tuple[str, str]]:
        pairs = {(a.name, r) for a in self.settings.accounts for r in a.resources}
        if self.snapshot is not None:
            pairs |= {(p["account"], p["resource"]) for p in self.snapshot.pairs}
            pairs |= {(t["account"], t["resource"]) for t in self.snapshot.totals}
            pairs |= {(r.account, r.resource) for r in self.snapshot.running}
        return sorted(pairs)

    def _config(self) -> Iterator[Metric]:
        expected = GaugeMetricFamily(
            "emag_sync_expected_interval_seconds", "Configured interval between runs of the pair", labels=PAIR
        )
        for account in self.settings.accounts:
            for resource in account.resources:
                expected.add_metric([account.name, resource], account.interval_s(resource))
        yield expected

    def _own(self) -> Iterator[Metric]:
        s = self.state
        stuck = CounterMetricFamily(
            "emag_sync_stuck_syncs",
            "Runs this monitor found stuck (stale heartbeat "
            "with the lock gone or held, or past the max run age), each counted once",
        )
        stuck.add_metric([], s.stuck_detected)
        recovered = CounterMetricFamily(
            "emag_sync_recovered_syncs", "Stuck runs this monitor failed", labels=["reason"]
        )
        for reason, n in sorted(s.recovered.items()):
            recovered.add_metric([reason], n)
        passes = CounterMetricFamily("emag_sync_monitor_passes", "Recovery passes by result", labels=["result"])
        for result, n in sorted(s.passes.items()):
            passes.add_metric([result], n)
        trimmed = CounterMetricFamily(
            "emag_sync_retention_deleted_runs", "sync_runs rows deleted by retention trimming"
        )
        trimmed.add_metric([], s.trimmed)
        yield from (stuck, recovered, passes, trimmed)
        if s.last_pass_wall is not None and s.last_pass_duration_s is not None:
            yield _gauge(
                "emag_sync_monitor_pass_duration_seconds",
                "Duration of the last successful pass",
                s.last_pass_duration_s,
            )
            yield _gauge(
                "emag_sync_monitor_last_pass_timestamp_seconds",
                "Unix time of the last successful pass",
                s.last_pass_wall,
            )
        products = GaugeMetricFamily(
            "emag_products", "Offers in PostgreSQL, not marked missing (refreshed each pass)", labels=["account"]
        )
        orders = GaugeMetricFamily("emag_orders", "Orders in PostgreSQL (refreshed each pass)", labels=["account"])
        for (account, kind), n in sorted(s.table_counts.items()):
            (products if kind == "offers" else orders).add_metric([account], n)
        yield from (products, orders)

    def _database(self, snap: Snapshot) -> Iterator[Metric]:
        pairs = self._pairs()
        now = time.time()
        runs = CounterMetricFamily("emag_sync_runs", "Runs ended, by final status", labels=[*PAIR, "status"])
        errors = CounterMetricFamily("emag_sync_errors", "Runs ended failed or timeout", labels=PAIR)
        items_seen = CounterMetricFamily("emag_sync_items_seen", "Items read from the API by ended runs", labels=PAIR)
        items_written = CounterMetricFamily(
            "emag_sync_items_written", "Rows inserted or changed by ended runs", labels=PAIR
        )
        by_status = {(t["account"], t["resource"], t["status"]): t for t in snap.totals}
        per_account: dict[str, dict[str, float]] = {}
        for account, resource in pairs:
            rows = [by_status.get((account, resource, st)) for st in TERMINAL_STATUSES]
            for st, row in zip(TERMINAL_STATUSES, rows, strict=True):
                runs.add_metric([account, resource, st], row["runs"] if row else 0)
            errors.add_metric(
                [account, resource],
                sum(r["runs"] for st, r in zip(TERMINAL_STATUSES, rows, strict=True) if r and st in ERROR_STATUSES),
            )
            items_seen.add_metric([account, resource], sum(r["items_seen"] for r in rows if r))
            items_written.add_metric([account, resource], sum(r["items_written"] for r in rows if r))
            acc = per_account.setdefault(account, dict.fromkeys(TOTAL_FIELDS[2:], 0.0))
            for name in TOTAL_FIELDS[2:]:
                acc[name] += sum(r[name] for r in rows if r)
        for run in snap.running:  # live counters too, so throttling shows before the run ends
            acc = per_account.setdefault(run.account, dict.fromkeys(TOTAL_FIELDS[2:], 0.0))
            for name in TOTAL_FIELDS[2:]:
                acc[name] += getattr(run, name)
        yield from (runs, errors, items_seen, items_written)
        helps = {
            "api_requests": ("api_requests", "eMAG API requests made by runs (ended and running)"),
            "api_retries": ("api_retries", "eMAG API requests retried"),
            "api_throttled": ("api_throttled", "eMAG API answers 429 (throttled)"),
            "api_wait_s": ("api_wait_seconds", "Seconds runs waited on the login's rate limiter"),
        }
        for name, (metric, text) in helps.items():
            family = CounterMetricFamily(f"emag_sync_{metric}", text, labels=["account"])
            for account, acc in sorted(per_account.items()):
                family.add_metric([account], acc[name])
            yield family
        yield from self._last(snap)
        requested = CounterMetricFamily(
            "emag_sync_requested_runs",
            'Runs started by a "sync now" request (emag-sync trigger, emag_sync.request_sync), ended',
            labels=PAIR,
        )
        pending = GaugeMetricFamily(
            "emag_sync_pending_requests", '"Sync now" requests no run has served yet', labels=PAIR
        )
        waiting = GaugeMetricFamily(
            "emag_sync_oldest_pending_request_age_seconds",
            "Age of the oldest request no run has served yet (0: none)",
            labels=PAIR,
        )
        by_pair = {(r["account"], r["resource"]): r for r in snap.requests}
        for pair in pairs:
            requested.add_metric(
                list(pair), sum(t["runs_requested"] for t in snap.totals if (t["account"], t["resource"]) == pair)
            )
            row = by_pair.get(pair)
            pending.add_metric(list(pair), row["pending"] if row else 0)
            waiting.add_metric(list(pair), row["oldest_age_s"] if row else 0.0)
        yield from (requested, pending, waiting)
        yield _gauge(
            "emag_sync_webhook_pending_deliveries",
            "Run-end webhook deliveries still to make",
            snap.webhooks.get("pending", 0),
        )
        yield _gauge(
            "emag_sync_webhook_oldest_pending_age_seconds",
            "Age of the oldest webhook delivery still to make (0: none)",
            snap.webhooks.get("oldest_age_s", 0.0),
        )
        in_progress = GaugeMetricFamily("emag_sync_in_progress", "Runs in status running", labels=PAIR)
        for pair in pairs:
            in_progress.add_metric(list(pair), sum(1 for r in snap.running if (r.account, r.resource) == pair))
        yield in_progress
        oldest = max((now - r.started_at.timestamp() for r in snap.running), default=0.0)
        yield _gauge(
            "emag_sync_oldest_running_age_seconds", "Age of the oldest running run (0: none)", max(0.0, oldest)
        )
        yield _gauge(
            "emag_sync_stale_heartbeat_runs",
            "Running runs whose lock is held but whose heartbeat "
            "is older than the stuck threshold (alive, not progressing)",
            sum(1 for r in snap.running if r.stale_alive),
        )

    def _last(self, snap: Snapshot) -> Iterable[Metric]:
        success = GaugeMetricFamily(
            "emag_sync_last_success_timestamp_seconds",
            "Unix time the last completed run of the pair finished",
            labels=PAIR,
        )
        duration = GaugeMetricFamily("emag_sync_duration_seconds", "Duration of the last completed run", labels=PAIR)
        seen = GaugeMetricFamily(
            "emag_sync_last_success_items_seen", "Items read by the last completed run", labels=PAIR
        )
        written = GaugeMetricFamily(
            "emag_sync_last_success_items_written", "Rows inserted or changed by the last completed run", labels=PAIR
        )
        status = GaugeMetricFamily(
            "emag_sync_last_run_status",
            "1 for the final status of the pair's last ended run, 0 for the others",
            labels=[*PAIR, "status"],
        )
        latency = GaugeMetricFamily(
            "emag_sync_api_latency_seconds",
            "eMAG API request latency in the last completed run: median, 95th percentile and maximum (quantile 1)",
            labels=[*PAIR, "quantile"],
        )
        for p in snap.pairs:
            labels = [p["account"], p["resource"]]
            if p["last_success_ts"] is not None:
                success.add_metric(labels, p["last_success_ts"])
                duration.add_metric(labels, p["last_success_duration_s"])
                seen.add_metric(labels, p["last_success_items_seen"])
                written.add_metric(labels, p["last_success_items_written"])
                for quantile, column in LATENCY_QUANTILES:
                    if p[column] is not None:
                        latency.add_metric([*labels, quantile], p[column])
            if p["last_status"] is not None:
                for st in TERMINAL_STATUSES:
                    status.add_metric([*labels, st], 1.0 if st == p["last_status"] else 0.0)
        return (success, duration, seen, written, status, latency)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def render(settings: Settings, state: MonitorState, snapshot: Snapshot | None) -> bytes:
    """The exposition text (format 0.0.4) for one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SyncCollector(settings, state, snapshot))
    return generate_latest(registry)
