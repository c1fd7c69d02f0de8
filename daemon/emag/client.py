"""The eMAG HTTP client (all of the marketplace's HTTP): per account one aiohttp session,
each attempt after the login's rate limiter and under its own deadline, a strict
envelope, and retries of the SAME request per RetryPolicy: a page is never skipped.
No aiohttp exception leaves this module, and no message carries the credentials."""

from __future__ import annotations

import base64
import bisect
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import structlog
import yarl

from daemon import __version__
from daemon.constants import EMAG_WINDOW_S
from daemon.emag.envelope import Count, parse_envelope
from daemon.emag.errors import (
    EmagApiError,
    EmagAuthError,
    EmagError,
    EmagRetriesExhausted,
    EmagThrottled,
    EmagTimeout,
    EmagTransientError,
    one_line,
)
from daemon.emag.ratelimit import AccountLimiter
from daemon.emag.retry import RetryPolicy, retry_delay

log = structlog.get_logger(__name__)

CONNECTIONS_MAX = 8  # per account: the rate limits allow no more than a handful in flight


@dataclass
class ApiStats:
    """What a caller's requests cost; the client updates them (mutable on purpose)."""

    requests: int = 0  # attempts that passed the rate limiter and went out
    retries: int = 0  # attempts repeated after a retryable failure
    throttled: int = 0  # HTTP 429 answers
    errors: int = 0  # failed attempts of any kind
    last_error: str | None = None
    wait_s: float = 0.0  # time spent waiting on the login's rate limiter
    latencies_s: list[float] = field(default_factory=list)  # each attempt, sent to answered; kept sorted

    def record_latency(self, seconds: float) -> None:
        bisect.insort(self.latencies_s, seconds)

    def latency_s(self, quantile: float) -> float | None:
        """The latency at `quantile` (0..1, nearest rank); None before any request."""
        ordered = self.latencies_s
        if not ordered:
            return None
        return ordered[min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))]


def basic_auth_header(username: str, password: str) -> str:
    """`Basic base64(username:password)`, UTF-8 (RFC 7617); the username may not hold a ':'."""
    if ":" in username:
        raise EmagAuthError("the username may not contain ':' (HTTP Basic auth)")
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class EmagClient:
    """`async with EmagClient(...) as client:`; every task of the account shares it.

    `read`/`count`/`call` count what they cost in the caller's `stats` (a run's own)."""

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        limiter: AccountLimiter,
        *,
        connect_timeout_s: float = 10.0,
        read_timeout_s: float = 60.0,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
    ) -> None:
        # Credentials come from username/password only, never from user:password@ in the URL.
        self.base_url = str(yarl.URL(base_url).with_user(None)).rstrip("/")
        self.limiter = limiter
        self.connect_timeout_s, self.read_timeout_s = connect_timeout_s, read_timeout_s
        self.retry = retry or RetryPolicy()
        self.rng = rng if rng is not None else random.Random()
        self._auth = basic_auth_header(username, password)
        self._secrets = tuple(s for s in (password, self._auth, self._auth.partition(" ")[2]) if s)
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"EmagClient({one_line(self.base_url, secrets=self._secrets)!r})"

    async def __aenter__(self) -> EmagClient:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s, sock_read=self.read_timeout_s)
        headers = {"Authorization": self._auth, "Accept": "application/json", "User-Agent": f"emag-sync/{__version__}"}
        self._session = aiohttp.ClientSession(
            headers=headers,
            timeout=timeout,
            raise_for_status=False,
            connector=aiohttp.TCPConnector(limit=CONNECTIONS_MAX),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        session, self._session = self._session, None
        if session is not None:
            with anyio.CancelScope(shield=True):
                await session.close()

    async def read(
        self, resource: str, page: int, per_page: int, filters: Mapping[str, Any], *, stats: ApiStats | None = None
    ) -> list[dict[str, Any]]:
        """One page of `{resource}/read`; `[]` past the last page."""
        payload = {"currentPage": page, "itemsPerPage": per_page, **filters}
        results = await self.call(f"{resource}/read", payload, stats=stats)
        if not isinstance(results, list):
            raise self._recorded(
                stats,
                EmagApiError(f"{resource}/read page {page}: results is {type(results).__name__}, expected a list"),
            )
        return results

    async def count(
        self, resource: str, per_page: int, filters: Mapping[str, Any], *, stats: ApiStats | None = None
    ) -> Count:
        """`{resource}/count` for these filters and page size."""
        results = await self.call(f"{resource}/count", {"itemsPerPage": per_page, **filters}, stats=stats)
        try:
            return Count.from_api(results, per_page)
        except EmagApiError as exc:
            raise self._recorded(stats, EmagApiError(f"{resource}/{exc}")) from None

    async def call(self, path: str, payload: Mapping[str, Any], *, stats: ApiStats | None = None) -> Any:
        """POST `payload` as JSON to `{base_url}/{path}` and return `results`, retrying the
        same request per the RetryPolicy. Raises EmagAuthError / EmagApiError at once,
        EmagRetriesExhausted (from the last error) when retries run out."""
        stats = stats if stats is not None else ApiStats()
        limiter = self.limiter.for_path(path)
        began = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                results = await self._attempt(path, payload, stats)
            except EmagError as exc:
                self._recorded(stats, exc)
                if isinstance(exc, (EmagAuthError, EmagApiError)):
                    raise
                if isinstance(exc, EmagThrottled):
                    stats.throttled += 1
                    # A huge Retry-After must not freeze every task of this login: this request
                    # gives up per its policy, the others wait at most one max backoff delay.
                    pause_s = exc.retry_after_s if exc.retry_after_s is not None else EMAG_WINDOW_S
                    limiter.penalize(min(pause_s, max(self.retry.max_delay_s, EMAG_WINDOW_S)))
                elapsed_s = time.monotonic() - began
                delay_s = retry_delay(self.retry, exc, attempt, elapsed_s, self.rng)
                if delay_s is None:
                    raise EmagRetriesExhausted(
                        f"{path}: gave up after {attempt} attempts in {elapsed_s:.1f} s: {exc}", attempt, elapsed_s
                    ) from exc
                stats.retries += 1
                log.warning(
                    "emag.retry",
                    path=path,
                    page=payload.get("currentPage"),
                    attempt=attempt,
                    delay_s=round(delay_s, 3),
                    error=str(exc),
                )
                await anyio.sleep(delay_s)
            else:
                limiter.on_success()
                return results

    async def _attempt(self, path: str, payload: Mapping[str, Any], stats: ApiStats) -> Any:
        """One request: limiter slot, POST under a deadline, envelope. Raises EmagError only."""
        if self._session is None:
            raise RuntimeError("EmagClient used outside `async with`")
        waited_s = await self.limiter.for_path(path).acquire()
        stats.requests += 1
        stats.wait_s += waited_s
        url = f"{self.base_url}/{path.lstrip('/')}"
        limit_s = self.connect_timeout_s + self.read_timeout_s
        sent = time.monotonic()
        try:
            with anyio.fail_after(limit_s):
                async with self._session.post(url, json=payload, allow_redirects=False) as response:
                    body = await response.read()
                    status, headers = response.status, response.headers
        except TimeoutError as exc:  # our fail_after, or aiohttp's socket timeouts
            raise EmagTimeout(f"{path}: no answer in time (limit {limit_s:g} s, {type(exc).__name__})") from exc
        except aiohttp.InvalidURL as exc:
            raise EmagApiError(f"{path}: invalid URL {self._clean(exc)}; check the account's base_url") from exc
        except (aiohttp.ClientError, OSError) as exc:  # resets, refused, payload errors, TLS
            raise EmagTransientError(f"{path}: {type(exc).__name__}: {self._clean(exc)}") from exc
        finally:
            stats.record_latency(time.monotonic() - sent)
        return parse_envelope(path, status, headers, body)

    @staticmethod
    def _recorded(stats: ApiStats | None, error: EmagError) -> EmagError:
        """Count a failed attempt (or an answer of the wrong shape) and return the error."""
        if stats is not None:
            stats.errors += 1
            stats.last_error = str(error)
        return error

    def _clean(self, exc: BaseException) -> str:
        return one_line(exc, secrets=self._secrets) or "no detail"
