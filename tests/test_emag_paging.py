"""The pager against adversarial servers: it always ends, in order, nothing skipped or repeated."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.emag import EmagRetriesExhausted, EmagTransientError, Page, PagingError, iter_pages


@dataclass(frozen=True)
class Server:
    """A marketplace as a list of page lengths, then (optionally) endless full pages."""

    per_page: int
    lengths: tuple[int, ...]
    endless: bool = False
    repeat_at: int | None = None  # this page answers the previous page's records
    fail_at: int | None = None  # this page's fetch raises (after the client's retries)
    delays: tuple[int, ...] = ()  # checkpoints each fetch takes, to shuffle completion order

    def records(self, n: int) -> list[dict]:
        if self.repeat_at is not None and n == self.repeat_at and n > 1:
            n -= 1
        if n <= len(self.lengths):
            size = self.lengths[n - 1]
        else:
            size = self.per_page if self.endless else 0
        return [{"id": n * 10_000 + i} for i in range(size)]


class Probe:
    """Runs iter_pages against a Server and records what was fetched, when, and what came out."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.fetched: list[int] = []
        self.in_flight: set[int] = set()
        self.max_in_flight = 0
        self.started_with: dict[int, set[int]] = {}  # page -> pages in flight when it started
        self.seen: list[Page] = []

    async def fetch(self, n: int) -> list[dict]:
        self.started_with[n] = set(self.in_flight)
        self.fetched.append(n)
        self.in_flight.add(n)
        self.max_in_flight = max(self.max_in_flight, len(self.in_flight))
        try:
            for _ in range(self.server.delays[n % len(self.server.delays)] if self.server.delays else 0):
                await anyio.lowlevel.checkpoint()
            if n == self.server.fail_at:
                raise EmagRetriesExhausted(f"page {n}: gave up", 6, 1.0)
            return self.server.records(n)
        finally:
            self.in_flight.discard(n)

    async def run(self, **kwargs: object) -> str:
        try:
            async with iter_pages(self.fetch, per_page=self.server.per_page, **kwargs) as pages:
                async for page in pages:
                    self.seen.append(page)
                    await anyio.lowlevel.checkpoint()
        except PagingError as exc:
            return f"fail: {exc}"
        except EmagRetriesExhausted as exc:
            return f"error: {exc}"
        return "done"


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Server, dict]:
    per_page = draw(st.sampled_from([1, 3, 10, 150]))  # 150: short pages prove nothing
    lengths = draw(st.lists(st.one_of(st.just(per_page), st.integers(0, per_page)), max_size=25))
    server = Server(
        per_page,
        tuple(lengths),
        endless=draw(st.booleans()),
        repeat_at=draw(st.none() | st.integers(2, 30)),
        fail_at=draw(st.none() | st.integers(1, 40)),
        delays=tuple(draw(st.lists(st.integers(0, 3), max_size=7))),
    )
    kwargs = dict(
        pages_total=draw(st.none() | st.integers(0, 40)),
        max_pages=draw(st.integers(1, 40)),
        start_page=draw(st.integers(1, 6)),
        prefetch=draw(st.integers(1, 6)),
    )
    return server, kwargs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_pagination_always_ends_and_skips_nothing(scenario: tuple[Server, dict]) -> None:
    server, kw = scenario
    probe = Probe(server)
    how = anyio.run(lambda: probe.run(**kw))
    start, max_pages, prefetch, total = kw["start_page"], kw["max_pages"], kw["prefetch"], kw["pages_total"]
    numbers = [p.number for p in probe.seen]

    # it ends, within max_pages fetches (+ the prefetch window), never past max_pages
    assert how.startswith(("done", "fail", "error"))
    assert len(probe.fetched) <= max(0, max_pages - start + 1) + prefetch
    assert all(start <= n <= max_pages for n in probe.fetched)
    assert len(set(probe.fetched)) == len(probe.fetched)  # no page fetched twice
    assert probe.max_in_flight <= prefetch
    # past the count's total, one page at a time
    for n, others in probe.started_with.items():
        if n > max(total or 0, start):
            assert not others, f"page {n} was prefetched past the count's total"
    # in order, contiguous from start_page, none twice, only the final DONE page marked last
    assert numbers == list(range(start, start + len(numbers)))
    assert [p.last for p in probe.seen[:-1]] == [False] * max(0, len(probe.seen) - 1)
    assert all(p.records for p in probe.seen)
    # no page delivered from beyond a failing fetch
    if server.fail_at is not None and server.fail_at >= start:
        assert all(n < server.fail_at for n in numbers)
    # a page that was delivered and not last was full (for asked <= 100): no silent truncation
    for page in probe.seen:
        if not page.last and server.per_page <= 100:
            assert len(page.records) == server.per_page
    if how == "done":
        # DONE only at an empty page or a reliable short one, right after the last delivered page
        end = (numbers[-1] + 1) if numbers and not probe.seen[-1].last else (numbers[-1] if numbers else start)
        if numbers and probe.seen[-1].last:
            assert len(probe.seen[-1].records) < server.per_page <= 100
        else:
            assert server.records(end) == [] or end > max_pages


async def _collect(server: Server, **kwargs: object) -> tuple[Probe, str]:
    probe = Probe(server)
    return probe, await probe.run(**kwargs)


@pytest.mark.asyncio
async def test_reads_until_a_short_page_and_marks_it_last() -> None:
    probe, how = await _collect(Server(3, (3, 3, 2)), pages_total=3, max_pages=100)
    assert how == "done"
    assert [(p.number, len(p.records), p.last) for p in probe.seen] == [(1, 3, False), (2, 3, False), (3, 2, True)]


@pytest.mark.asyncio
async def test_an_empty_page_ends_without_being_delivered() -> None:
    probe, how = await _collect(Server(3, (3, 3)), pages_total=2, max_pages=100)
    assert how == "done" and [p.number for p in probe.seen] == [1, 2]
    assert 3 in probe.fetched  # the empty page told us it was the end


@pytest.mark.asyncio
async def test_a_repeated_page_fails_the_scan() -> None:
    probe, how = await _collect(Server(3, (3, 3, 3, 3), repeat_at=3), pages_total=4, max_pages=100)
    assert how == "fail: page 3 repeats page 2 (3 identical ids)"
    assert [p.number for p in probe.seen] == [1, 2]


@pytest.mark.asyncio
async def test_an_endless_server_fails_after_the_count_and_slack() -> None:
    probe, how = await _collect(Server(3, (), endless=True), pages_total=4, max_pages=1000)
    assert how == "fail: count said 4 pages, still reading at page 6"
    assert [p.number for p in probe.seen] == [1, 2, 3, 4, 5]


@pytest.mark.asyncio
async def test_max_pages_fails_loudly_when_pages_keep_coming() -> None:
    probe, how = await _collect(Server(3, (), endless=True), pages_total=None, max_pages=5)
    assert how == "fail: max pages reached (5) and page 5 was still full"
    assert max(probe.fetched) == 5
    assert [(p.number, p.last) for p in probe.seen][-1] == (5, False)  # delivered, then the failure


@pytest.mark.asyncio
async def test_resume_from_a_later_page() -> None:
    probe, how = await _collect(Server(3, (3,) * 9 + (1,)), pages_total=10, max_pages=100, start_page=7)
    assert how == "done" and [p.number for p in probe.seen] == [7, 8, 9, 10]
    assert min(probe.fetched) == 7


@pytest.mark.asyncio
async def test_resume_past_max_pages_fails() -> None:
    probe, how = await _collect(Server(3, (3,) * 9), pages_total=9, max_pages=5, start_page=6)
    assert how == "fail: max pages reached (5) before page 6" and probe.fetched == []


@pytest.mark.asyncio
async def test_prefetches_up_to_the_count_only() -> None:
    probe, how = await _collect(Server(3, (3, 3, 3, 3, 1), delays=(2,)), pages_total=3, max_pages=100, prefetch=4)
    assert how == "done" and [p.number for p in probe.seen] == [1, 2, 3, 4, 5]  # the count was a snapshot
    assert probe.started_with[1] == set() and probe.started_with[3] == {1, 2}
    assert probe.started_with[4] == set() and probe.started_with[5] == set()


@pytest.mark.asyncio
async def test_a_fetch_error_comes_in_page_order_as_itself_with_its_cause() -> None:
    async def fetch(n: int) -> list[dict]:
        if n == 3:
            try:
                raise EmagTransientError("product_offer/read: HTTP 502")
            except EmagTransientError as exc:
                raise EmagRetriesExhausted("gave up after 6 attempts", 6, 9.0) from exc
        await anyio.sleep(0.01 * n)  # page 3 fails before pages 1 and 2 arrive
        return [{"id": n * 10 + i} for i in range(2)]

    seen = []
    with pytest.raises(EmagRetriesExhausted) as caught:
        async with iter_pages(fetch, per_page=2, pages_total=10, max_pages=100) as pages:
            async for page in pages:
                seen.append(page.number)
    assert seen == [1, 2]
    assert isinstance(caught.value.__cause__, EmagTransientError)


@pytest.mark.asyncio
async def test_the_consumers_error_comes_out_as_itself_and_cancels_fetches() -> None:
    cancelled = []

    async def fetch(n: int) -> list[dict]:
        try:
            await anyio.sleep(0 if n == 1 else 10)
        except anyio.get_cancelled_exc_class():
            cancelled.append(n)
            raise
        return [{"id": n}]

    with anyio.fail_after(2):
        with pytest.raises(KeyError):
            async with iter_pages(fetch, per_page=1, pages_total=5, max_pages=100, prefetch=3) as pages:
                async for _ in pages:
                    raise KeyError("the database went away")
    assert sorted(cancelled) == [2, 3]


@pytest.mark.asyncio
async def test_breaking_out_early_cancels_fetches_in_flight() -> None:
    async def fetch(n: int) -> list[dict]:
        await anyio.sleep(0 if n == 1 else 10)
        return [{"id": n}]

    with anyio.fail_after(2):
        async with iter_pages(fetch, per_page=1, pages_total=5, max_pages=100, prefetch=4) as pages:
            async for page in pages:
                assert page.number == 1
                break


@pytest.mark.asyncio
async def test_cancelling_the_consumer_stops_everything() -> None:
    async def fetch(n: int) -> list[dict]:
        await anyio.sleep(10)
        return []

    with anyio.move_on_after(0.05) as scope:
        async with iter_pages(fetch, per_page=1, pages_total=5, max_pages=100) as pages:
            async for _ in pages:
                pass
    assert scope.cancelled_caught


@pytest.mark.parametrize("kwargs", [dict(per_page=0), dict(max_pages=0), dict(start_page=0), dict(prefetch=0)])
@pytest.mark.asyncio
async def test_rejects_nonsense_bounds(kwargs: dict) -> None:
    async def fetch(n: int) -> list[dict]:
        return []

    args = dict(per_page=1, pages_total=None, max_pages=10) | kwargs
    with pytest.raises(ValueError):
        async with iter_pages(fetch, **args):
            pass
