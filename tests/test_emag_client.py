"""The HTTP client, byte by byte, against a scripted aiohttp server on 127.0.0.1 (port 0).

(aioresponses 0.7.9 cannot build responses for aiohttp 3.14 — `ClientResponse` now needs
`stream_writer` — so the bytes come from a real socket; exceptions aiohttp raises
without a server are injected by patching `ClientSession.post`.)
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
import pytest_asyncio
import structlog
from aiohttp import web

from daemon.constants import EMAG_WINDOW_S
from daemon.emag import (
    AccountLimiter,
    ApiStats,
    Count,
    EmagApiError,
    EmagAuthError,
    EmagClient,
    EmagError,
    EmagRetriesExhausted,
    EmagThrottled,
    EmagTimeout,
    EmagTransientError,
    RateLimiter,
    RetryPolicy,
)
from tests.scripted_api import Reply, Script, ok, serve

USER, PASSWORD = "seller@example.com", "s3cr3t-P4ss:word"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (PASSWORD, TOKEN)
FAST = RetryPolicy(max_attempts=4, base_delay_s=0.001, max_delay_s=0.005, max_total_s=10.0)
THROTTLED = b'{"message":"API rate limit exceeded"}'


class FakeTime:
    """The limiter's clock: moves only when the limiter sleeps, so 429 pauses cost no real time."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.sleeps.append(delay_s)
        self.now += delay_s


def fake_limits() -> tuple[AccountLimiter, FakeTime]:
    fake = FakeTime()
    make = lambda per_s, per_min: RateLimiter(per_s, per_min, clock=fake.clock, sleep=fake.sleep)  # noqa: E731
    return AccountLimiter(orders=make(12, 720), other=make(3, 180)), fake


def client(base: str, retry: RetryPolicy = FAST, **kwargs: Any) -> EmagClient:
    limits = kwargs.pop("limiter", None) or fake_limits()[0]
    return EmagClient(base, USER, PASSWORD, limits, retry=retry, rng=random.Random(0), **kwargs)


def assert_clean(error: BaseException) -> None:
    """An EmagError whose text is one line without credentials."""
    assert isinstance(error, EmagError)
    for text in (str(error), repr(error)):
        assert "\n" not in text
        assert not any(secret in text for secret in SECRETS)


@pytest_asyncio.fixture
async def script() -> AsyncIterator[Script]:
    scripted = Script()
    async with serve(scripted.handle) as base:
        scripted.base = base
        yield scripted


@pytest.mark.asyncio
async def test_read_posts_json_with_paging_and_filters_at_the_top(script: Script) -> None:
    script.then(ok([{"id": 1}, {"id": 2}]))
    async with client(script.base) as api:
        records = await api.read("product_offer", 2, 100, {"status": 1}, stats=(stats := ApiStats()))
    assert records == [{"id": 1}, {"id": 2}]
    assert script.paths == ["product_offer/read"]
    assert script.bodies == [{"currentPage": 2, "itemsPerPage": 100, "status": 1}]
    assert script.auth == [f"Basic {TOKEN}"]
    assert (stats.requests, stats.retries, stats.errors, len(stats.latencies_s)) == (1, 0, 0, 1)
    assert PASSWORD not in repr(api) and TOKEN not in repr(api)


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (
            Reply(403, b'{"isError":true,"messages":["You are not allowed to use this API."],"results":[]}'),
            EmagAuthError,
            "product_offer/read: HTTP 403 authentication refused: You are not allowed to use this API.",
        ),
        (
            Reply(200, b'{"isError":true,"messages":["Invalid vendor ip [1.2.3.4]"],"results":[]}'),
            EmagApiError,
            "product_offer/read: API error: Invalid vendor ip [1.2.3.4]",
        ),
        (
            Reply(200, b'{"isError":true,"message":"Maximum input vars of 4000 exceeded"}'),
            EmagApiError,
            "Maximum input vars of 4000 exceeded",
        ),
        (Reply(400, b"<html>Bad request</html>"), EmagApiError, "HTTP 400"),
        (Reply(302, b"", {"Location": "https://elsewhere.test/login"}), EmagApiError, "redirect to https://elsewhere"),
        (ok({"noOfItems": "3"}), EmagApiError, "results is dict"),
    ],
)
@pytest.mark.asyncio
async def test_final_errors_are_not_retried(script: Script, reply: Reply, error: type, text: str) -> None:
    script.then(reply)
    async with client(script.base) as api:
        with pytest.raises(error) as caught:
            await api.read("product_offer", 1, 100, {}, stats=(stats := ApiStats()))
    assert text in str(caught.value)
    assert_clean(caught.value)
    assert len(script.bodies) == 1
    assert stats.retries == 0 and stats.errors == 1 and stats.last_error == str(caught.value)


@pytest.mark.parametrize(
    "failure",
    [
        Reply(500, b"<html>500 Internal Server Error</html>"),
        Reply(502, b"<html>\r\n<head><title>502 Bad Gateway</title></head></html>"),
        Reply(504, b""),
        Reply(200, b'{"isError": false, "results": [{"id": 1'),  # truncated JSON
        Reply(200, b'{"results": []}'),  # no isError
        Reply(reset=True),  # connection dropped unanswered
    ],
)
@pytest.mark.asyncio
async def test_transient_failures_retry_the_same_page(script: Script, failure: Reply) -> None:
    script.then(failure, failure, ok([{"id": 7}]))
    run_stats = ApiStats()
    async with client(script.base) as api:
        records = await api.read("order", 5, 50, {"modifiedAfter": "2025-01-01 00:00:00"}, stats=run_stats)
    assert records == [{"id": 7}]
    assert script.bodies == [{"currentPage": 5, "itemsPerPage": 50, "modifiedAfter": "2025-01-01 00:00:00"}] * 3
    assert (run_stats.requests, run_stats.retries, run_stats.errors, run_stats.throttled) == (3, 2, 2, 0)
    assert run_stats.last_error and PASSWORD not in run_stats.last_error


@pytest.mark.asyncio
async def test_giving_up_raises_retries_exhausted_from_the_last_error(script: Script) -> None:
    script.then(Reply(reset=True))
    async with client(script.base) as api:
        with pytest.raises(EmagRetriesExhausted) as caught:
            await api.read("order", 1, 100, {})
    exhausted = caught.value
    assert exhausted.attempts == FAST.max_attempts == len(script.bodies)
    assert 0 <= exhausted.elapsed_s < 5
    assert type(exhausted.__cause__) is EmagTransientError
    assert isinstance(exhausted.__cause__.__cause__, aiohttp.ClientError)  # kept for debugging only
    assert str(exhausted).startswith("order/read: gave up after 4 attempts in ")
    assert_clean(exhausted)


@pytest.mark.asyncio
async def test_a_429_without_is_error_is_throttled_penalizes_and_retries(script: Script) -> None:
    limits, fake = fake_limits()
    script.then(
        Reply(429, THROTTLED, {"X-RateLimit-Limit-3second": "9", "X-RateLimit-Remaining-3second": "0"}),
        Reply(429, THROTTLED, {"Retry-After": "0.25"}),
        Reply(),
    )
    async with client(script.base, limiter=limits) as api:
        with structlog.testing.capture_logs() as logs:
            assert await api.read("product_offer", 3, 100, {}, stats=(stats := ApiStats())) == []
    assert (stats.requests, stats.throttled, stats.retries) == (3, 2, 2)
    assert fake.sleeps[0] == pytest.approx(1.0) and len(fake.sleeps) == 2  # the limiter held the account back
    assert [e["delay_s"] for e in logs][1] == 0.25  # Retry-After honoured
    assert limits.other.interval_s > limits.other.nominal_s  # and slowed down
    assert limits.orders.interval_s == limits.orders.nominal_s  # the order budget is untouched
    assert script.bodies == [{"currentPage": 3, "itemsPerPage": 100}] * 3


@pytest.mark.asyncio
async def test_a_huge_retry_after_fails_the_request_without_freezing_the_account(script: Script) -> None:
    limits, fake = fake_limits()
    script.then(Reply(429, THROTTLED, {"Retry-After": "7200"}), Reply())
    async with client(script.base, limiter=limits) as api:
        with pytest.raises(EmagRetriesExhausted):
            await api.read("product_offer", 1, 100, {})  # 2 h is past the 10 s retry budget: give up now
        before = fake.now
        assert await api.read("product_offer", 2, 100, {}) == []  # the next request is not held for 2 h
    assert fake.now - before <= max(FAST.max_delay_s, EMAG_WINDOW_S) + limits.other.interval_s


@pytest.mark.asyncio
async def test_endless_throttling_gives_up_within_its_own_budget(script: Script) -> None:
    script.then(Reply(429, THROTTLED, {"Retry-After": "0"}))
    async with client(script.base) as api:
        with pytest.raises(EmagRetriesExhausted) as caught:
            await api.count("product_offer", 100, {})
    assert caught.value.attempts == FAST.max_attempts * FAST.throttle_attempts_factor == len(script.bodies)
    assert isinstance(caught.value.__cause__, EmagThrottled)
    assert caught.value.__cause__.retry_after_s == 0.0


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({"noOfItems": "797", "noOfPages": "8", "itemsPerPage": "100"}, Count(797, 8, 100)),
        ({"noOfItems": 797, "noOfPages": 8, "itemsPerPage": 100}, Count(797, 8, 100)),
        ([], Count(0, 0, 100)),
    ],
)
@pytest.mark.asyncio
async def test_count(script: Script, results: Any, expected: Count) -> None:
    script.then(ok(results))
    async with client(script.base) as api:
        assert await api.count("order", 100, {"type": 2}) == expected
    assert script.paths == ["order/count"] and script.bodies == [{"itemsPerPage": 100, "type": 2}]


@pytest.mark.asyncio
async def test_credentials_in_the_url_are_dropped(script: Script) -> None:
    script.then(Reply())
    host = script.base.removeprefix("http://")
    async with client(f"http://someone:{PASSWORD}@{host}/") as api:
        assert api.base_url == script.base
        assert await api.read("order", 1, 100, {}) == []
    assert script.auth == [f"Basic {TOKEN}"]


class _Raises:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    async def __aenter__(self) -> Any:
        await anyio.lowlevel.checkpoint()
        raise self.exc

    async def __aexit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize(
    "exc",
    [
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientConnectionResetError("Connection reset by peer"),
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ClientOSError(104, f"boom Authorization: Basic {TOKEN} {PASSWORD}\nsecond line"),
        aiohttp.ServerTimeoutError("Timeout on reading data from socket"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
)
@pytest.mark.asyncio
async def test_no_library_exception_escapes_and_none_carries_credentials(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    monkeypatch.setattr(aiohttp.ClientSession, "post", lambda self, *a, **k: _Raises(exc))
    async with client("https://marketplace-api.emag.test/api-3") as api:
        with pytest.raises(EmagRetriesExhausted) as caught:
            await api.read("product_offer", 1, 100, {}, stats=(stats := ApiStats()))
    assert_clean(caught.value)
    assert_clean(caught.value.__cause__)
    assert isinstance(caught.value.__cause__, EmagTransientError)
    assert isinstance(caught.value.__cause__, EmagTimeout) == isinstance(exc, TimeoutError)
    assert not any(secret in (stats.last_error or "") for secret in SECRETS)


@pytest.mark.asyncio
async def test_each_retry_is_logged_without_payload_or_credentials(script: Script) -> None:
    script.then(Reply(503, b"<html>503</html>"), Reply())
    async with client(script.base) as api:
        with structlog.testing.capture_logs() as logs:
            await api.read("order", 4, 100, {"modifiedAfter": "2025-02-03 04:05:06"})
    assert [(e["event"], e["log_level"], e["path"], e["attempt"], e["page"]) for e in logs] == [
        ("emag.retry", "warning", "order/read", 1, 4)
    ]
    assert logs[0]["error"] == "order/read: HTTP 503" and 0 <= logs[0]["delay_s"] <= FAST.max_delay_s
    text = json.dumps(logs)
    assert "2025-02-03" not in text and not any(secret in text for secret in SECRETS)


@pytest.mark.asyncio
async def test_calls_outside_the_context_are_refused() -> None:
    api = client("http://127.0.0.1:9/api-3")
    with pytest.raises(RuntimeError, match="async with"):
        await api.read("order", 1, 100, {})


# --- a real socket that hangs ------------------------------------------------------


async def _until_released(release: anyio.Event) -> None:
    with anyio.move_on_after(5):
        await release.wait()


@pytest.mark.asyncio
async def test_a_hanging_server_times_out_then_the_retry_succeeds() -> None:
    calls, release = [], anyio.Event()

    async def handler(request: web.Request) -> web.Response:
        calls.append(await request.json())
        if len(calls) == 1:
            await _until_released(release)  # hang: headers never come
        return web.json_response({"isError": False, "messages": [], "results": [{"id": 9}]})

    async with serve(handler) as base:
        async with client(base, connect_timeout_s=0.2, read_timeout_s=0.2) as api:
            with structlog.testing.capture_logs() as logs:
                with anyio.fail_after(5):
                    assert await api.read("product_offer", 2, 100, {}, stats=(stats := ApiStats())) == [{"id": 9}]
        release.set()
    assert calls == [{"currentPage": 2, "itemsPerPage": 100}] * 2
    assert stats.retries == 1 and "no answer in time" in (stats.last_error or "")
    assert [e["event"] for e in logs] == ["emag.retry"]


@pytest.mark.asyncio
async def test_a_trickling_server_is_cut_by_the_overall_deadline() -> None:
    """Bytes every 50 ms defeat the socket read timeout; `fail_after(connect + read)` does not."""
    release = anyio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        with anyio.move_on_after(5):
            try:
                await response.write(b'{"isError": false, "results": [')
                while not release.is_set():
                    await anyio.sleep(0.05)
                    await response.write(b" ")
            except (ConnectionError, aiohttp.ClientConnectionResetError):
                pass
        return response

    async with serve(handler) as base:
        async with client(
            base,
            connect_timeout_s=0.1,
            read_timeout_s=0.2,
            retry=RetryPolicy(max_attempts=2, base_delay_s=0.001, max_delay_s=0.001),
        ) as api:
            began = anyio.current_time()
            with pytest.raises(EmagRetriesExhausted) as caught:
                await api.read("order", 1, 100, {})
            elapsed_s = anyio.current_time() - began
        release.set()
    assert isinstance(caught.value.__cause__, EmagTimeout)
    assert caught.value.attempts == 2 and 0.55 <= elapsed_s < 2.0
    assert_clean(caught.value)


@pytest.mark.asyncio
async def test_connection_refused_is_transient_and_clean() -> None:
    with anyio.fail_after(5):
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        await listener.aclose()  # nothing listens there now
    async with client(f"http://127.0.0.1:{port}/api-3", retry=RetryPolicy(max_attempts=2, base_delay_s=0.001)) as api:
        with pytest.raises(EmagRetriesExhausted) as caught:
            await api.read("order", 1, 100, {})
    assert type(caught.value.__cause__) is EmagTransientError
    assert "Cannot connect" in str(caught.value) or "refused" in str(caught.value).lower()
    assert_clean(caught.value)
