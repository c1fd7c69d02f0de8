"""Pagination that always ends: a pure verdict per page, and a pager that fetches ahead.

`judge_page` decides, `iter_pages` acts. Pages are delivered strictly in order, none
twice, none skipped; up to `prefetch` fetches run ahead of the consumer (never past
the count's page total), so the rate limiter stays busy while earlier pages are
written, and memory holds at most `prefetch` pages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import anyio
from anyio.abc import TaskGroup

from daemon.constants import API_MAX_RELIABLE_PAGE_SIZE
from daemon.emag.errors import PagingError
from daemon.groups import unwrap


class Action(StrEnum):
    CONTINUE = "continue"
    DONE = "done"
    FAIL = "fail"


CONTINUE, DONE, FAIL = Action.CONTINUE, Action.DONE, Action.FAIL


@dataclass(frozen=True)
class Verdict:
    action: Action
    reason: str = ""  # why, for FAIL
    keep_page: bool = False  # FAIL only: deliver the judged page before raising


@dataclass(frozen=True)
class Page:
    number: int
    records: list[dict[str, Any]]
    last: bool = False  # the pager has judged this the final page (DONE); nothing follows


def judge_page(
    *,
    page: int,
    ids: Sequence[Any],
    prev_ids: Sequence[Any] | None,
    asked: int,
    pages_total: int | None,
    max_pages: int,
    slack_pages: int = 2,
) -> Verdict:
    """What to do after reading page `page` (holding `ids`). First match wins:

    1. empty page -> DONE (past the last page the API answers `results: []`);
    2. short page (fewer than asked) and asked <= 100 -> DONE (above 100 a server may
       cap silently, so a short page proves nothing);
    3. same ids as the previous page -> FAIL (the old system looped here forever);
    4. the count said `pages_total` and we are at pages_total + slack_pages with a page
       still coming -> FAIL (an endless server, or a count that lies);
    5. page >= max_pages -> FAIL, page kept: its records are real, so it is delivered
       (with last=False) and then the scan fails; never a silent truncation;
    6. else CONTINUE.

    A repeated page and a page past the count's slack are not delivered (paging can no
    longer be trusted there). A FAIL never looks like a last page."""
    if not ids:
        return Verdict(DONE)
    if len(ids) < asked <= API_MAX_RELIABLE_PAGE_SIZE:
        return Verdict(DONE)
    if prev_ids is not None and list(ids) == list(prev_ids):
        return Verdict(FAIL, f"page {page} repeats page {page - 1} ({len(ids)} identical ids)")
    if pages_total is not None and page >= pages_total + slack_pages:
        return Verdict(FAIL, f"count said {pages_total} pages, still reading at page {page}")
    if page >= max_pages:
        return Verdict(FAIL, f"max pages reached ({max_pages}) and page {page} was still full", keep_page=True)
    return Verdict(CONTINUE)


@dataclass
class _Slot:
    """One page's fetch: its result or error, delivered in page order."""

    number: int
    done: anyio.Event = field(default_factory=anyio.Event)
    records: list[dict[str, Any]] | None = None
    error: Exception | None = None


def _default_id(record: Any) -> Any:
    return record.get("id") if isinstance(record, dict) else record


async def _pages(
    tg: TaskGroup,
    fetch: Callable[[int], Awaitable[list[dict[str, Any]]]],
    *,
    per_page: int,
    pages_total: int | None,
    max_pages: int,
    start_page: int,
    prefetch: int,
    slack_pages: int,
    id_of: Callable[[Any], Any],
) -> AsyncIterator[Page]:
    """The consumer-side loop: schedule fetches ahead, judge each page in order, yield it."""
    ahead_limit = max(pages_total or 0, start_page)  # past the count's total: one page at a time

    async def run(slot: _Slot) -> None:
        try:
            slot.records = await fetch(slot.number)
        except Exception as exc:
            slot.error = exc
        finally:
            slot.done.set()

    pending: deque[_Slot] = deque()
    scheduled = start_page - 1
    prev_ids: list[Any] | None = None
    while True:
        while scheduled < max_pages and (not pending or (len(pending) < prefetch and scheduled < ahead_limit)):
            scheduled += 1
            slot = _Slot(scheduled)
            pending.append(slot)
            tg.start_soon(run, slot, name=f"emag page {scheduled}")
        if not pending:  # resumed past max_pages
            raise PagingError(f"max pages reached ({max_pages}) before page {scheduled + 1}")
        slot = pending.popleft()
        await slot.done.wait()
        if slot.error is not None:
            raise slot.error
        records = slot.records if slot.records is not None else []
        ids = [id_of(r) for r in records]
        verdict = judge_page(
            page=slot.number,
            ids=ids,
            prev_ids=prev_ids,
            asked=per_page,
            pages_total=pages_total,
            max_pages=max_pages,
            slack_pages=slack_pages,
        )
        if verdict.action is FAIL:
            if verdict.keep_page:
                yield Page(slot.number, records)
            raise PagingError(verdict.reason)
        if verdict.action is DONE:
            if records:
                yield Page(slot.number, records, last=True)
            return
        prev_ids = ids
        yield Page(slot.number, records)


@asynccontextmanager
async def iter_pages(
    fetch: Callable[[int], Awaitable[list[dict[str, Any]]]],
    *,
    per_page: int,
    pages_total: int | None,
    max_pages: int,
    start_page: int = 1,
    prefetch: int = 4,
    slack_pages: int = 2,
    id_of: Callable[[Any], Any] = _default_id,
) -> AsyncIterator[AsyncIterator[Page]]:
    """`async with iter_pages(fetch, ...) as pages: async for page in pages: ...`

    The task group lives in this context manager, in the consumer's task, never across
    a bare generator's yield, so cancellation and errors stay structured. A fetch error
    is raised in page order (earlier pages are delivered first); a FAIL verdict raises
    PagingError; leaving the block for any reason cancels the fetches still in flight.
    Errors come out as themselves (with their `__cause__`), not in an exception group."""
    if per_page < 1 or max_pages < 1 or start_page < 1 or prefetch < 1 or slack_pages < 0:
        raise ValueError("per_page, max_pages, start_page and prefetch must be at least 1")
    failure: BaseException | None = None
    try:
        async with anyio.create_task_group() as tg:
            stream = _pages(
                tg,
                fetch,
                per_page=per_page,
                pages_total=pages_total,
                max_pages=max_pages,
                start_page=start_page,
                prefetch=prefetch,
                slack_pages=slack_pages,
                id_of=id_of,
            )
            try:
                yield stream
            finally:
                tg.cancel_scope.cancel()
                await stream.aclose()  # type: ignore[attr-defined]  # an async generator: it has aclose()
    except BaseExceptionGroup as group:
        failure = unwrap(group)
        if failure is group:
            raise
    if failure is not None:
        raise failure  # outside the except block: the exception keeps its own __cause__ and __context__
