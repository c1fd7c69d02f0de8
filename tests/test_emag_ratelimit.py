"""The rate limiter: even spacing on a fake clock, then briefly in real time."""

from __future__ import annotations

from itertools import pairwise

import anyio
import pytest

from daemon.emag import AccountLimiter, RateLimiter
from daemon.emag.ratelimit import RECOVER_AFTER_SUCCESSES, SLOWDOWN_FACTOR, SLOWDOWN_MAX


class FakeTime:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now += delay_s
        await anyio.lowlevel.checkpoint()


def limiter(per_second: float = 3, per_minute: float = 180, margin: float = 0.0) -> tuple[RateLimiter, FakeTime]:
    fake = FakeTime()
    return RateLimiter(per_second, per_minute, margin=margin, clock=fake.clock, sleep=fake.sleep), fake


@pytest.mark.parametrize(
    ("per_second", "per_minute", "margin", "interval_s"),
    [
        (3, 180, 0.0, 1 / 3),
        (3, 180, 0.02, 1.02 / 3),
        (12, 720, 0.0, 1 / 12),
        (12, 600, 0.0, 0.1),  # the per-minute budget is the tighter one
        (3, 90, 0.0, 2 / 3),
    ],
)
def test_interval(per_second: float, per_minute: float, margin: float, interval_s: float) -> None:
    assert RateLimiter(per_second, per_minute, margin=margin).interval_s == pytest.approx(interval_s)


@pytest.mark.parametrize("args", [(0, 180), (3, 0), (-1, 180)])
def test_rejects_nonsense_rates(args: tuple) -> None:
    with pytest.raises(ValueError):
        RateLimiter(*args)


@pytest.mark.asyncio
async def test_acquires_are_evenly_spaced_without_a_burst() -> None:
    rl, fake = limiter()
    stamps, waited = [], 0.0
    for _ in range(10):
        waited += await rl.acquire()
        stamps.append(fake.now)
    assert stamps == pytest.approx([n / 3 for n in range(10)])
    # any 1 s window holds at most 3 requests, any 60 s window at most 180
    assert all(sum(1 for s in stamps if t <= s < t + 1 - 1e-9) <= 3 for t in stamps)
    assert waited == pytest.approx(3.0)


@pytest.mark.asyncio
async def test_idle_time_is_not_banked() -> None:
    rl, fake = limiter()
    await rl.acquire()
    fake.now = 100.0
    await rl.acquire()
    await rl.acquire()
    assert fake.now == pytest.approx(100 + 1 / 3)


def test_spacing_counts_from_when_a_request_actually_left() -> None:
    rl, fake = limiter(margin=0.03)
    assert rl.wait_needed() == 0
    rl.sent()
    assert rl.wait_needed() == pytest.approx(1.03 / 3)
    fake.now = 0.5  # this request goes late...
    rl.sent()
    fake.now = 0.6
    assert rl.wait_needed() == pytest.approx(0.5 + 1.03 / 3 - 0.6)  # ...the next still waits a full interval


@pytest.mark.asyncio
async def test_penalize_holds_back_and_slows_down_then_recovers() -> None:
    rl, fake = limiter()
    await rl.acquire()
    rl.penalize(2.0)
    assert rl.wait_needed() == pytest.approx(2.0)
    assert rl.interval_s == pytest.approx(SLOWDOWN_FACTOR / 3)
    await rl.acquire()
    assert fake.now == pytest.approx(2.0)
    await rl.acquire()
    assert fake.now == pytest.approx(2.0 + SLOWDOWN_FACTOR / 3)
    for _ in range(10):
        rl.penalize(0.0)
    assert rl.interval_s == pytest.approx(SLOWDOWN_MAX / 3)  # bounded slowdown
    for _ in range(RECOVER_AFTER_SUCCESSES * 10):
        rl.on_success()
    assert rl.interval_s == pytest.approx(1 / 3)  # back to nominal after a run of successes


def test_a_429_resets_the_recovery_run() -> None:
    rl, _ = limiter()
    rl.penalize(0.0)
    for _ in range(RECOVER_AFTER_SUCCESSES - 1):
        rl.on_success()
    rl.penalize(0.0)
    rl.on_success()
    assert rl.interval_s == pytest.approx(SLOWDOWN_FACTOR**2 / 3)


@pytest.mark.asyncio
async def test_penalize_while_a_caller_sleeps_still_holds_it_back() -> None:
    fake = FakeTime()

    async def sleep(delay_s: float) -> None:
        if not fake.sleeps:
            rl.penalize(5.0)  # a 429 seen by another task arrives while this one waits
        await fake.sleep(delay_s)

    rl = RateLimiter(3, 180, margin=0.0, clock=fake.clock, sleep=sleep)
    await rl.acquire()
    await rl.acquire()
    assert fake.now == pytest.approx(5.0)
    assert fake.sleeps == pytest.approx([1 / 3, 5.0 - 1 / 3])


@pytest.mark.asyncio
async def test_a_cancelled_waiter_consumes_no_slot() -> None:
    rl = RateLimiter(10, 600, margin=0.0)
    await rl.acquire()
    with anyio.move_on_after(0.02):
        await rl.acquire()  # would have to wait 0.1 s
    began = anyio.current_time()
    await rl.acquire()
    assert anyio.current_time() - began < 0.1  # the slot was not given away to nobody


@pytest.mark.asyncio
async def test_real_time_spacing_at_50_per_second() -> None:
    rl = RateLimiter(50, 3000, margin=0.03)
    began = anyio.current_time()
    waited = 0.0
    for _ in range(21):
        waited += await rl.acquire()
    elapsed_s = anyio.current_time() - began
    assert 20 * rl.interval_s <= elapsed_s + 1e-3 <= 20 * rl.interval_s * 1.25
    assert waited == pytest.approx(elapsed_s, abs=0.02)


@pytest.mark.asyncio
async def test_concurrent_acquires_never_bunch() -> None:
    rl = RateLimiter(50, 3000, margin=0.03)
    stamps: list[float] = []

    async def one() -> None:
        await rl.acquire()
        stamps.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(one)
    gaps = [b - a for a, b in pairwise(stamps)]
    assert len(stamps) == 12 and min(gaps) >= rl.interval_s - 0.002


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("order/read", "orders"),
        ("order/count", "orders"),
        ("order/acknowledge/123", "orders"),
        ("/order/read", "orders"),
        ("product_offer/read", "other"),
        ("product_offer/count", "other"),
        ("awb/save", "other"),
        ("orders_something/read", "other"),
    ],
)
def test_account_limiter_routes(path: str, group: str) -> None:
    limits = AccountLimiter()
    assert limits.for_path(path) is getattr(limits, group)


def test_account_limiter_rates() -> None:
    limits = AccountLimiter()
    assert limits.orders.interval_s == pytest.approx(1 / 12 * 1.03)
    assert limits.other.interval_s == pytest.approx(1 / 3 * 1.03)
    assert AccountLimiter().other is not limits.other  # one per account: no hidden sharing


@pytest.mark.asyncio
async def test_a_budget_handed_over_goes_on_where_it_stood() -> None:
    spent, fake = limiter()
    for _ in range(3):
        await spent.acquire()
    spent.penalize(0.0)  # a 429 earlier: wider spacing for a while
    wait_s, slowdown = spent.budget()
    assert wait_s == pytest.approx(1 / 3) and slowdown == 1.5  # the 4th may leave 1/3 s after the 3rd
    taker, other = limiter()
    taker.adopt(wait_s, slowdown)
    await taker.acquire()
    await taker.acquire()
    # not at once: where the other process left the budget, and at its slower pace
    assert other.sleeps == pytest.approx([1 / 3, 0.5])


@pytest.mark.asyncio
async def test_a_budget_whose_holder_died_waits_one_whole_window() -> None:
    taker, fake = limiter()
    taker.adopt(0.1, 1.0, holder_died=True)  # it reported 0.1 s, but sent more after: unknown
    await taker.acquire()
    assert fake.now == pytest.approx(1.0)
