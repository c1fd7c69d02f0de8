"""One sync run of one (account, resource): pages in, batches out, the run row kept true.

Every path closes the row (completed, failed, timeout or cancelled) in a `finally`
shielded from cancellation; if the database is away then, the store closes it once it
answers, and a process that dies leaves it to the monitor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import structlog

from daemon.config import AccountSettings, SyncSettings
from daemon.constants import ORDER_WINDOW_MAX_S
from daemon.emag import ApiStats, Count, EmagClient, EmagError, iter_pages
from daemon.groups import unwrap
from daemon.records import InvalidRecord, OfferRow, OrderRow, format_api_date
from daemon.store import Budget, Closed, Progress, RunLease, StoreError
from daemon.sync import plan

log = structlog.get_logger("daemon.sync")

OPEN_TIMEOUT_S = 2.0  # bound on opening the run row (closing it is bounded by the store)
API_RESOURCE = {"offers": "product_offer", "orders": "order"}  # eMAG's name for each resource


def internal_error(exc: BaseException) -> str:
    """The row's error for a bug: an unexpected exception still ends the run as failed."""
    return f"internal error: {type(exc).__name__}: {exc}"


class RunFailed(Exception):
    """The run cannot be trusted to go on (the message is the row's error)."""


@dataclass(frozen=True)
class RunRequest:
    account: AccountSettings
    resource: str
    mode: str = "incremental"  # offers are always a full scan; orders honour the mode
    trigger: str = "manual"


@dataclass(frozen=True)
class RunResult:
    account: str
    resource: str
    status: str  # completed | failed | timeout | cancelled | skipped
    run_id: int | None = None
    error: str | None = None
    progress: Progress = Progress()


@dataclass
class Counters:
    """Live counters of a run; `snapshot()` is what gets persisted."""

    api: ApiStats = field(default_factory=ApiStats)
    pages_done: int = 0
    pages_total: int | None = None
    items_seen: int = 0
    items_written: int = 0
    items_unchanged: int = 0
    items_invalid: int = 0

    def snapshot(self) -> Progress:
        api = self.api
        return Progress(
            pages_done=self.pages_done,
            pages_total=self.pages_total,
            items_seen=self.items_seen,
            items_written=self.items_written,
            items_unchanged=self.items_unchanged,
            items_invalid=self.items_invalid,
            api_requests=api.requests,
            api_retries=api.retries,
            api_throttled=api.throttled,
            api_wait_s=api.wait_s,
            api_latency_p50_s=api.latency_s(0.5),
            api_latency_p95_s=api.latency_s(0.95),
            api_latency_max_s=api.latency_s(1.0),
        )


def parse_page(
    records: Sequence[Any], parse: Callable[[Any], Any], log: structlog.typing.FilteringBoundLogger
) -> tuple[list[Any], int]:
    """Typed rows of a page, deduplicated by id (last wins), and the number of invalid records."""
    rows: dict[int, Any] = {}
    invalid = 0
    for raw in records:
        try:
            row = parse(raw)
        except InvalidRecord as exc:
            invalid += 1
            log.warning("sync.record_invalid", record_id=exc.record_id, reason=exc.reason)
            continue
        rows[row.id] = row
    return list(rows.values()), invalid


class SyncRun:
    """Runs one (account, resource) under its lease; `execute()` closes the row on every path."""

    def __init__(
        self,
        client: EmagClient,
        settings: SyncSettings,
        request: RunRequest,
        on_progress: Callable[[str, Counters], None] | None = None,
    ) -> None:
        self.client, self.settings, self.request = client, settings, request
        self.counters = Counters()
        self.on_progress = on_progress
        self.log = log.bind(account=request.account.name, resource=request.resource)
        self.run_id: int | None = None
        # The route group this resource's requests spend: product_offer/* or order/*.
        self.limiter = client.limiter.for_path(f"{API_RESOURCE[request.resource]}/read")

    @property
    def mode(self) -> str:
        return "full" if self.request.resource == "offers" else self.request.mode

    async def execute(self, lease: RunLease) -> RunResult:
        # Shielded: a cancel arriving after the row's INSERT committed would leave it running.
        try:
            with anyio.CancelScope(shield=True), anyio.fail_after(OPEN_TIMEOUT_S):
                opened = await lease.open_run(
                    self.mode, self.request.trigger, (self.request.account.login, self.limiter.name)
                )
        except TimeoutError:
            raise StoreError(f"open_run: no answer from the database within {OPEN_TIMEOUT_S:g} s") from None
        self.run_id, started_at = opened.id, opened.started_at
        # The login's budget as the previous run of this route group left it, in whichever process
        self.limiter.adopt(opened.budget.wait_s, opened.budget.slowdown, holder_died=opened.budget.orphaned)
        lease.budget = lambda: Budget(*self.limiter.budget())
        self.log = self.log.bind(run_id=self.run_id)
        self.log.info(
            "sync.run_started",
            mode=self.mode,
            trigger=self.request.trigger,
            budget_wait_s=opened.budget.wait_s,
            budget_orphaned=opened.budget.orphaned,
        )
        status, error, began, body_done = "failed", None, time.monotonic(), False
        try:
            with anyio.CancelScope(deadline=anyio.current_time() + self.settings.timeout_s) as deadline:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._heartbeat, lease)
                    await self._body(lease, started_at)
                    body_done = True  # the deadline passing from here on changes nothing committed
                    tg.cancel_scope.cancel()
            if deadline.cancelled_caught and not body_done:
                status, error = "timeout", f"run deadline of {self.settings.timeout_s:g} s reached"
            else:
                status = "completed"
        except BaseException as raised:
            exc = unwrap(raised)
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                status, error = "cancelled", "cancelled (shutdown or interrupt)"
                raise
            if isinstance(exc, (EmagError, StoreError, RunFailed)):
                error = str(exc)
            elif isinstance(exc, Exception):  # an unexpected bug still ends the run as failed
                error = internal_error(exc)
                self.log.error("sync.run_crashed", exc_info=exc)
            else:
                raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._close(lease, status, error, time.monotonic() - began)
        return RunResult(
            self.request.account.name, self.request.resource, status, self.run_id, error, self.counters.snapshot()
        )

    async def _close(self, lease: RunLease, status: str, error: str | None, elapsed_s: float) -> None:
        progress = self.counters.snapshot()
        closed, failures = await lease.close_run(status, progress, error)
        for failure in failures:
            self.log.warning("sync.run_close_failed", status=status, error=failure)
        if closed is Closed.LATER:
            self.log.error(
                "sync.run_close_deferred",
                status=status,
                reason="the database is unreachable; the row is closed once it answers",
            )
            return
        event = "sync.run_finished" if status == "completed" else "sync.run_ended"
        level = self.log.info if status in ("completed", "cancelled") else self.log.error
        level(
            event,
            status=status,
            pages=progress.pages_done,
            items_seen=progress.items_seen,
            items_written=progress.items_written,
            requests=progress.api_requests,
            throttled=progress.api_throttled,
            elapsed_s=elapsed_s,
            error=error,
            closed_by_us=closed is Closed.NOW,
        )

    async def _heartbeat(self, lease: RunLease) -> None:
        """Advance heartbeat_at (and hand over the rate budget) even while the run waits on
        the API or the rate limiter."""
        while True:
            await anyio.sleep(self.settings.heartbeat_interval_s)
            try:
                await lease.heartbeat(self.counters.snapshot())
            except StoreError as exc:
                self.log.warning("sync.heartbeat_failed", error=str(exc))

    async def _body(self, lease: RunLease, started_at: datetime) -> None:
        if self.request.resource == "offers":
            await self._offers(lease, started_at)
        else:
            await self._orders(lease, started_at)

    async def _pages(
        self, api: str, filters: dict[str, Any], start_page: int, on_page: Callable, seen: set[str] | None = None
    ) -> tuple[Count, int]:
        """Read pages from `start_page` to the end, handing each to `on_page` in order.
        Returns the count taken first and the number of pages read; ids go into `seen`."""
        per_page = self.settings.page_size
        count = await self.client.count(api, per_page, filters, stats=self.counters.api)
        done_before = self.counters.pages_done
        self.counters.pages_total = done_before + max(count.pages - start_page + 1, 0)

        async def fetch(page: int) -> list[dict[str, Any]]:
            return await self.client.read(api, page, per_page, filters, stats=self.counters.api)

        last = start_page - 1
        async with iter_pages(
            fetch,
            per_page=per_page,
            pages_total=count.pages,
            max_pages=self.settings.max_pages,
            start_page=start_page,
            prefetch=self.settings.prefetch_pages,
        ) as pages:
            async for page in pages:
                got = len(page.records)
                if page.number == 1 and got < per_page and count.items > got:
                    # A server that caps itemsPerPage silently would make this short page
                    # look like the end; stopping here would truncate without a word.
                    raise RunFailed(
                        f"page 1 returned {got} items of {per_page} asked while count says "
                        f"{count.items}: the server capped itemsPerPage; set sync.page_size = {got}"
                    )
                await on_page(page.number, page.records)
                if seen is not None:
                    seen.update(str(r.get("id")) for r in page.records if isinstance(r, dict))
                last = page.number
                self.counters.pages_done += 1
                if self.counters.pages_total is not None and self.counters.pages_done > self.counters.pages_total:
                    self.counters.pages_total = self.counters.pages_done
        if last + 1 < count.pages:
            await self._confirm_end(fetch, last, count)
        return count, last - start_page + 1

    async def _confirm_end(self, fetch: Callable, last: int, count: Count) -> None:
        """The scan ended after page `last`, short of the count's pages. A count is only a
        snapshot (the catalog may have shrunk), so the end stands if page `last + 1` is
        still empty when asked again. If it now has records, the early empty or short page
        was a glitch: fail (the next run resumes after `last`) rather than truncate."""
        if await fetch(last + 1):
            raise RunFailed(
                f"the API ended the scan after page {last} of {count.pages} counted, but page "
                f"{last + 1} has records when asked again: not trusting a truncated scan"
            )
        self.log.warning("sync.count_disagrees", last_page=last, counted_pages=count.pages, counted_items=count.items)

    async def _commit(self, page_no: int, rows: list[Any], invalid: int, write: Callable) -> None:
        c = self.counters
        began = time.monotonic()
        # As it stands once this page commits; counted in only once it has.
        progress = replace(
            c.snapshot(),
            pages_done=c.pages_done + 1,
            items_seen=c.items_seen + len(rows) + invalid,
            items_invalid=c.items_invalid + invalid,
        )
        inserted, updated = await write(rows, progress)
        c.items_seen, c.items_invalid = progress.items_seen, progress.items_invalid
        c.items_written += inserted + updated
        c.items_unchanged += len(rows) - inserted - updated
        self.log.info(
            "sync.page_committed",
            page=page_no,
            items=len(rows),
            inserted=inserted,
            updated=updated,
            invalid=invalid,
            elapsed_s=time.monotonic() - began,
        )
        if self.on_progress:
            self.on_progress(f"{self.request.account.name}/{self.request.resource}", c)

    async def _offers(self, lease: RunLease, started_at: datetime) -> None:
        state = await lease.state()
        start_page, scan_started_at = plan.offers_resume(state.checkpoint, started_at, self.settings.page_size)
        await lease.begin_scan()
        if start_page > 1:
            self.log.info("sync.resuming", page=start_page, scan_started_at=scan_started_at)

        async def on_page(page_no: int, records: list[dict[str, Any]]) -> None:
            rows, invalid = parse_page(records, OfferRow.from_api, self.log)
            checkpoint = plan.offers_checkpoint(page_no, scan_started_at, self.settings.page_size)
            await self._commit(page_no, rows, invalid, lambda r, p: lease.commit_offers(r, p, checkpoint))

        await self._pages(API_RESOURCE["offers"], {}, start_page, on_page)
        # Missing offers are those this scan did not see; only a scan this run read whole knows.
        missing = await lease.complete(watermark=None, mark_missing=start_page == 1)
        if start_page > 1:
            self.log.info(
                "sync.missing_check_skipped",
                reason=f"resumed at page {start_page}; the next whole scan marks offers that disappeared",
            )
        if missing:
            self.log.warning("sync.offers_missing", count=missing)

    async def _orders(self, lease: RunLease, started_at: datetime) -> None:
        account = self.request.account
        tz = ZoneInfo(account.timezone)
        per_page = self.settings.page_size
        state = await lease.state()
        order_plan = plan.plan_orders(
            self.mode,
            state.watermark,
            state.checkpoint,
            started_at,
            overlap=timedelta(seconds=self.settings.orders_overlap_s),
            horizon=timedelta(days=self.settings.orders_horizon_days),
            max_span=timedelta(seconds=ORDER_WINDOW_MAX_S),
            per_page=per_page,
        )
        if order_plan.first_window or order_plan.first_page > 1:
            self.log.info("sync.resuming", window=order_plan.first_window, page=order_plan.first_page)
        for index in range(order_plan.first_window, len(order_plan.windows)):
            after, before = order_plan.windows[index]
            filters: dict[str, Any] = {
                "modifiedAfter": format_api_date(after, tz),
                "modifiedBefore": format_api_date(before, tz),
            }
            if account.order_type is not None:
                filters["type"] = account.order_type

            async def on_page(page_no: int, records: list[dict[str, Any]], window: int = index) -> None:
                rows, invalid = parse_page(records, lambda r: OrderRow.from_api(r, tz), self.log)
                checkpoint = plan.orders_checkpoint(self.mode, order_plan, window, page_no, per_page)
                await self._commit(page_no, rows, invalid, lambda r, p: lease.commit_orders(r, p, checkpoint))

            first = order_plan.first_page if index == order_plan.first_window else 1
            seen: set[str] = set()
            count, pages_read = await self._pages(API_RESOURCE["orders"], filters, first, on_page, seen)
            if first == 1 and pages_read > 1 and len(seen) < count.items:
                # Paging is by offset: an order modified out of the window while we paged
                # shifts the rest up, and one can slip past a page boundary unread. Read the
                # window once more (unchanged rows cost no writes).
                self.log.warning("sync.window_reread", window=index, seen=len(seen), counted=count.items)
                await self._pages(API_RESOURCE["orders"], filters, 1, on_page)
            await lease.save_checkpoint(plan.orders_checkpoint(self.mode, order_plan, index + 1, 0, per_page))
        await lease.complete(watermark=order_plan.end)
