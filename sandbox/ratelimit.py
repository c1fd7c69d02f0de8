"""Server-side rate limits of the eMAG API, per login and route group.

Order routes: 12 requests/s and 720/min. Every other resource: 3/s and
180/min, shared. Modes:

- "sliding" (default, the strictest reading): a request is admitted when fewer
  than N admitted requests lie in (now-1s, now] and fewer than M in (now-60s, now].
- "fixed" (lenient): counters per whole second and whole minute of the clock.
- "off": everything is admitted.

Requests answered 429 are not counted; every admitted request is.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

MODES = ("sliding", "fixed", "off")
ORDERS = "orders"
OTHER = "other"


@dataclass(frozen=True)
class Limit:
    per_second: int
    per_minute: int


LIMITS = {ORDERS: Limit(12, 720), OTHER: Limit(3, 180)}


def route_group(api_resource: str) -> str:
    """The budget a resource belongs to: "order" routes, or everything else (shared)."""
    return ORDERS if api_resource == "order" else OTHER


@dataclass(frozen=True)
class Decision:
    admitted: bool
    limit: Limit


@dataclass
class _FixedWindow:
    second: int = -1
    in_second: int = 0
    minute: int = -1
    in_minute: int = 0


class RateLimiter:
    def __init__(
        self,
        mode: str = "sliding",
        *,
        clock: Callable[[], float] = time.monotonic,
        limits: dict[str, Limit] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"rate-limit mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.clock = clock
        self.limits = limits or LIMITS
        self._sliding: dict[tuple[str, str], deque[float]] = {}
        self._fixed: dict[tuple[str, str], _FixedWindow] = {}

    def admit(self, login: str, group: str) -> Decision:
        limit = self.limits[group]
        if self.mode == "off":
            return Decision(True, limit)
        now = self.clock()
        key = (login, group)
        if self.mode == "sliding":
            admitted = self._admit_sliding(self._sliding.setdefault(key, deque()), limit, now)
        else:
            admitted = self._admit_fixed(self._fixed.setdefault(key, _FixedWindow()), limit, now)
        return Decision(admitted, limit)

    @staticmethod
    def _admit_sliding(stamps: deque[float], limit: Limit, now: float) -> bool:
        while stamps and stamps[0] <= now - 60.0:
            stamps.popleft()
        in_second = 0
        for stamp in reversed(stamps):
            if stamp <= now - 1.0 or in_second >= limit.per_second:
                break
            in_second += 1
        if in_second >= limit.per_second or len(stamps) >= limit.per_minute:
            return False
        stamps.append(now)
        return True

    @staticmethod
    def _admit_fixed(window: _FixedWindow, limit: Limit, now: float) -> bool:
        second, minute = math.floor(now), math.floor(now / 60.0)
        if second != window.second:
            window.second, window.in_second = second, 0
        if minute != window.minute:
            window.minute, window.in_minute = minute, 0
        if window.in_second >= limit.per_second or window.in_minute >= limit.per_minute:
            return False
        window.in_second += 1
        window.in_minute += 1
        return True
