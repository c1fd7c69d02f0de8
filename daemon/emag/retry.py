"""Retry policy as a pure decision: given this error and attempt, retry after x s or give up."""

from __future__ import annotations

import random
from dataclasses import dataclass

from daemon.constants import EMAG_WINDOW_S
from daemon.emag.errors import EmagError, EmagThrottled, EmagTransientError


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the retries of ONE request (one page): attempts, backoff, total time.

    `throttle_attempts_factor`: a 429 means the server is alive and the limiter has just
    slowed down, so throttles may use this many times `max_attempts` attempts in all;
    any other retryable error still gives up at `max_attempts`. Both stop at `max_total_s`."""

    max_attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    max_total_s: float = 300.0
    throttle_attempts_factor: int = 2

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.throttle_attempts_factor < 1:
            raise ValueError("max_attempts and throttle_attempts_factor must be at least 1")
        if min(self.base_delay_s, self.max_delay_s, self.max_total_s) < 0:
            raise ValueError("retry delays must not be negative")


def backoff_s(policy: RetryPolicy, attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(max_delay_s, base_delay_s * 2**(attempt-1))]."""
    ceiling = min(policy.max_delay_s, policy.base_delay_s * 2.0 ** min(max(attempt - 1, 0), 60))
    return rng.uniform(0.0, ceiling)


def retry_delay(
    policy: RetryPolicy, error: EmagError, attempt: int, elapsed_s: float, rng: random.Random
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None to give up.

    `attempt` counts every attempt made so far (1 after the first failure), throttled
    or not; `elapsed_s` is the time since the first attempt began.

    - EmagAuthError, EmagApiError (and anything not retryable): None, at once.
    - EmagThrottled: Retry-After if the server sent one, else full jitter with a floor of
      EMAG_WINDOW_S (the server's shortest window); allowed up to `max_attempts * throttle_attempts_factor` attempts.
    - EmagTransientError / EmagTimeout: full jitter; allowed up to `max_attempts` attempts.
    - Never a delay that would end past `max_total_s`: give up instead of sleeping into it.
    """
    if isinstance(error, EmagThrottled):
        if attempt >= policy.max_attempts * policy.throttle_attempts_factor:
            return None
        if error.retry_after_s is not None:
            delay = error.retry_after_s
        else:
            delay = max(min(EMAG_WINDOW_S, policy.max_delay_s), backoff_s(policy, attempt, rng))
    elif isinstance(error, EmagTransientError):
        if attempt >= policy.max_attempts:
            return None
        delay = backoff_s(policy, attempt, rng)
    else:
        return None
    if elapsed_s + delay > policy.max_total_s:
        return None
    return delay
