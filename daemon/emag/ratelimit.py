"""Client-side rate limiting, one login at a time: requests spaced evenly (no bursts),
which is safe whether eMAG counts in fixed windows, sliding windows or a token bucket."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio

from daemon.constants import EMAG_WINDOW_S

ORDERS_PER_S, ORDERS_PER_MIN = 12.0, 720.0  # order/* routes
OTHER_PER_S, OTHER_PER_MIN = 3.0, 180.0  # every other route, shared
# N+1 requests spaced interval x (1 + margin) span (1 + margin) s for a 1 s window of N: the
# margin is how much travel times may differ before the server sees N+1 in a second (30 ms).
DEFAULT_MARGIN = 0.03  # 3 % wider spacing: 30 ms of jitter tolerance per 1 s window
SLOWDOWN_FACTOR = 1.5  # each 429 widens the spacing by this factor...
SLOWDOWN_MAX = 4.0  # ...up to this many times the nominal interval
RECOVER_AFTER_SUCCESSES = 20  # successes in a row before one factor is taken back
ORDER_PATH_PREFIX = "order/"


class RateLimiter:
    """Lets requests go at least `interval_s` apart, measured from when each actually went.

    Waiters queue on a FIFO lock and each one's wait is computed after the previous
    request left, so a request that wakes up late never lets the next ones bunch up
    behind it, a cancelled waiter consumes no slot, and a `penalize()` that arrives
    while someone sleeps still holds them back. Idle time is never banked into a burst."""

    def __init__(
        self,
        per_second: float,
        per_minute: float,
        *,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        name: str = "",
    ) -> None:
        if per_second <= 0 or per_minute <= 0 or margin < 0:
            raise ValueError("rates must be positive and the margin not negative")
        self.name = name  # the route group: "orders" or "other"
        self.nominal_s = max(1.0 / per_second, 60.0 / per_minute) * (1.0 + margin)
        self._clock, self._sleep = clock, sleep
        self._slowdown = 1.0
        self._successes = 0
        self._next = float("-inf")  # the earliest moment the next request may leave
        self._lock = anyio.Lock()

    @property
    def interval_s(self) -> float:
        """The current spacing: nominal, or wider for a while after a 429."""
        return self.nominal_s * self._slowdown

    def wait_needed(self) -> float:
        """Seconds until the next request may leave (bookkeeping only, no sleeping)."""
        return max(0.0, self._next - self._clock())

    def sent(self) -> None:
        """Record that a request leaves now: the next one waits a full interval from here."""
        self._next = max(self._next, self._clock() + self.interval_s)

    async def acquire(self) -> float:
        """Wait for this caller's turn, then take it. Cancellable at any point. Returns the
        seconds this caller was held back by the spacing itself (not its queueing behind
        other callers, who were held back then): summed over callers, at most the wall time."""
        held = 0.0
        async with self._lock:
            while (delay := self.wait_needed()) > 0:
                began = self._clock()
                await self._sleep(delay)
                held += max(0.0, self._clock() - began)
            self.sent()
        return held

    def penalize(self, delay_s: float) -> None:
        """After a 429: no request before now + delay_s, and a wider spacing for a while."""
        self._slowdown = min(self._slowdown * SLOWDOWN_FACTOR, SLOWDOWN_MAX)
        self._successes = 0
        self._next = max(self._next, self._clock() + max(0.0, delay_s))

    def budget(self) -> tuple[float, float]:
        """(seconds until the next request may leave, slowdown): what another process needs
        to go on spending this login's budget where this one left it."""
        return self.wait_needed(), self._slowdown

    def adopt(self, wait_s: float, slowdown: float, holder_died: bool = False) -> None:
        """Take over a budget another process (or this one's previous life) left: no request
        before `wait_s` from now, spaced at least `slowdown` times. When the process that spent
        it last died, what it sent after its last report is unknown: wait one whole window
        (the server's shortest, 1 s), after which none of it counts any more."""
        if holder_died:
            wait_s = max(wait_s, EMAG_WINDOW_S)
        self._next = max(self._next, self._clock() + max(0.0, wait_s))
        self._slowdown = min(max(self._slowdown, slowdown), SLOWDOWN_MAX)

    def on_success(self) -> None:
        """One answered request; after a run of them, take one slowdown factor back."""
        self._successes += 1
        if self._slowdown > 1.0 and self._successes >= RECOVER_AFTER_SUCCESSES:
            self._slowdown = max(1.0, self._slowdown / SLOWDOWN_FACTOR)
            self._successes = 0


class AccountLimiter:
    """The two budgets of one login. Create one per account per process and share it with
    every task of that account (never across accounts: each login has its own budget)."""

    def __init__(self, *, orders: RateLimiter | None = None, other: RateLimiter | None = None) -> None:
        self.orders = orders or RateLimiter(ORDERS_PER_S, ORDERS_PER_MIN, name="orders")
        self.other = other or RateLimiter(OTHER_PER_S, OTHER_PER_MIN, name="other")

    @classmethod
    def unlimited(cls) -> AccountLimiter:
        """For benchmarks and tests against a sandbox with its limits off."""
        return cls(
            orders=RateLimiter(1e6, 6e7, margin=0, name="orders"), other=RateLimiter(1e6, 6e7, margin=0, name="other")
        )

    def for_path(self, path: str) -> RateLimiter:
        """`order/...` routes -> orders; everything else shares `other`."""
        return self.orders if path.lstrip("/").startswith(ORDER_PATH_PREFIX) else self.other
