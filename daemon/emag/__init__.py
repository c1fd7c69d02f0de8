"""The marketplace, and nothing else: HTTP client, envelope, errors, rate limits, paging."""

from daemon.emag.client import ApiStats, EmagClient
from daemon.emag.envelope import Count, parse_envelope
from daemon.emag.errors import (
    EmagApiError,
    EmagAuthError,
    EmagError,
    EmagRetriesExhausted,
    EmagThrottled,
    EmagTimeout,
    EmagTransientError,
    PagingError,
)
from daemon.emag.paging import Action, Page, Verdict, iter_pages, judge_page
from daemon.emag.ratelimit import AccountLimiter, RateLimiter
from daemon.emag.retry import RetryPolicy, retry_delay

__all__ = [
    "AccountLimiter",
    "ApiStats",
    "Action",
    "Count",
    "EmagApiError",
    "EmagAuthError",
    "EmagClient",
    "EmagError",
    "EmagRetriesExhausted",
    "EmagThrottled",
    "EmagTimeout",
    "EmagTransientError",
    "Page",
    "PagingError",
    "RateLimiter",
    "RetryPolicy",
    "Verdict",
    "iter_pages",
    "judge_page",
    "parse_envelope",
    "retry_delay",
]
