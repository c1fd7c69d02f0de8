"""Pure decisions of the marketplace layer: page verdicts, retry delays, the envelope, counts."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.emag import (
    Count,
    EmagApiError,
    EmagAuthError,
    EmagError,
    EmagThrottled,
    EmagTimeout,
    EmagTransientError,
    RetryPolicy,
    judge_page,
    parse_envelope,
    retry_delay,
)
from daemon.emag.errors import one_line
from daemon.emag.paging import CONTINUE, DONE, FAIL


def verdict(
    page: int,
    ids: list[int],
    prev: list[int] | None = None,
    *,
    asked: int = 2,
    total: int | None = None,
    max_pages: int = 10,
) -> tuple[str, str]:
    v = judge_page(page=page, ids=ids, prev_ids=prev, asked=asked, pages_total=total, max_pages=max_pages)
    return v.action, v.reason


@pytest.mark.parametrize(
    ("args", "kwargs", "action", "reason"),
    [
        # 1. empty page: done, whatever else is true
        ((1, []), dict(total=3), DONE, ""),
        ((99, [], [1, 2]), dict(total=3, max_pages=10), DONE, ""),
        # 2. short page with asked <= 100: done, even at max_pages or past the count
        ((3, [5], [3, 4]), dict(asked=100, total=3), DONE, ""),
        ((10, [1], [0, 9]), dict(max_pages=10), DONE, ""),
        ((9, [1], [0, 9]), dict(total=3), DONE, ""),
        ((3, [1] * 100, None), dict(asked=100, total=3), CONTINUE, ""),
        # ...but not when asked > 100: the server may cap silently
        ((3, [5], [3, 4]), dict(asked=500, total=9), CONTINUE, ""),
        ((2, list(range(100)), list(range(100, 200))), dict(asked=101, total=9), CONTINUE, ""),
        # 3. a repeat of the previous page fails
        ((2, [1, 2], [1, 2]), dict(total=3), FAIL, "page 2 repeats page 1"),
        ((2, [7, 8], [1, 2]), dict(total=3), CONTINUE, ""),
        ((2, [1, 2], [2, 1]), dict(total=3), CONTINUE, ""),  # same ids, moved rows: not a repeat
        ((1, [1, 2], None), dict(total=3), CONTINUE, ""),  # first page (or resume): nothing to compare
        # 4. past the count's total + slack with pages still coming
        ((4, [1, 2], [0, 9]), dict(total=3), CONTINUE, ""),  # within slack
        ((5, [1, 2], [0, 9]), dict(total=3), FAIL, "count said 3 pages, still reading at page 5"),
        ((2, [1, 2], [0, 9]), dict(total=0), FAIL, "count said 0 pages"),
        ((5, [1, 2], [0, 9]), dict(total=3, max_pages=5), FAIL, "count said 3 pages"),  # 4 before 5
        # 5. max pages
        ((10, [1, 2], [0, 9]), dict(max_pages=10), FAIL, "max pages reached (10)"),
        ((12, [1, 2], [0, 9]), dict(max_pages=10), FAIL, "max pages reached (10)"),
        ((9, [1, 2], [0, 9]), dict(max_pages=10), CONTINUE, ""),
        # repeat wins over the other failures
        ((10, [1, 2], [1, 2]), dict(total=3, max_pages=10), FAIL, "repeats"),
    ],
)
def test_judge_page(args: tuple, kwargs: dict, action: str, reason: str) -> None:
    got_action, got_reason = verdict(*args, **kwargs)
    assert got_action == action
    assert reason in got_reason
    if action != FAIL:
        assert got_reason == ""


@pytest.mark.parametrize(
    ("kwargs", "keep"),
    [
        (dict(page=3, ids=[1], prev_ids=[0], pages_total=None, max_pages=3), True),  # max pages: real records
        (dict(page=3, ids=[1], prev_ids=[1], pages_total=None, max_pages=9), False),  # a repeat: dropped
        (dict(page=5, ids=[1], prev_ids=[0], pages_total=3, max_pages=9), False),  # past the count: dropped
    ],
)
def test_which_failing_pages_are_kept(kwargs: dict, keep: bool) -> None:
    judged = judge_page(asked=1, **kwargs)
    assert judged.action == FAIL and judged.keep_page is keep


_E = EmagTransientError("x")
_T = EmagThrottled("x")


@pytest.mark.parametrize(
    ("error", "attempt", "elapsed_s", "low", "high"),
    [
        (EmagAuthError("x"), 1, 0.0, None, None),
        (EmagApiError("x"), 1, 0.0, None, None),
        (EmagError("x"), 1, 0.0, None, None),  # unknown kinds are not retried
        (_E, 1, 0.0, 0.0, 0.5),
        (_E, 2, 0.0, 0.0, 1.0),
        (_E, 4, 0.0, 0.0, 4.0),
        (_E, 5, 0.0, 0.0, 8.0),
        (_E, 6, 0.0, None, None),  # max_attempts reached
        (EmagTimeout("x"), 3, 0.0, 0.0, 2.0),
        (EmagTimeout("x"), 6, 0.0, None, None),
        (_E, 1, 300.0, None, None),  # no time left at all
        (EmagThrottled("x", retry_after_s=7.0), 1, 0.0, 7.0, 7.0),
        (EmagThrottled("x", retry_after_s=7.0), 1, 293.0, 7.0, 7.0),  # ends exactly at max_total_s
        (EmagThrottled("x", retry_after_s=7.0), 1, 295.0, None, None),  # would cross max_total_s
        (EmagThrottled("x", retry_after_s=0.0), 3, 0.0, 0.0, 0.0),
        (_T, 1, 0.0, 1.0, 1.0),  # floor of 1 s: the server's shortest window
        (_T, 6, 0.0, 1.0, 16.0),  # a throttle still retries where a 5xx would give up...
        (_T, 11, 0.0, 1.0, 30.0),
        (_T, 12, 0.0, None, None),  # ...up to twice the attempt budget
    ],
)
def test_retry_delay(error: EmagError, attempt: int, elapsed_s: float, low: float | None, high: float | None) -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.5, max_delay_s=30.0, max_total_s=300.0)
    for seed in range(20):
        delay = retry_delay(policy, error, attempt, elapsed_s, random.Random(seed))
        if low is None:
            assert delay is None
        else:
            assert delay is not None and low <= delay <= high


def test_retry_delay_is_full_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_delay(RetryPolicy(), _E, 3, 0.0, rng) for _ in range(2000)]
    assert min(delays) < 0.1 and max(delays) > 1.9 and all(0 <= d <= 2.0 for d in delays)


@given(
    st.integers(1, 100),
    st.floats(0, 1000),
    st.sampled_from([_E, _T, EmagThrottled("x", 5.0)]),
    st.integers(1, 8),
    st.floats(0.0, 2.0),
    st.floats(0.0, 60.0),
    st.floats(0.0, 600.0),
)
def test_retry_delay_is_bounded(
    attempt: int,
    elapsed_s: float,
    error: EmagError,
    max_attempts: int,
    base_s: float,
    max_delay_s: float,
    max_total_s: float,
) -> None:
    policy = RetryPolicy(
        max_attempts=max_attempts, base_delay_s=base_s, max_delay_s=max_delay_s, max_total_s=max_total_s
    )
    delay = retry_delay(policy, error, attempt, elapsed_s, random.Random(attempt))
    if delay is None:
        return
    assert delay >= 0 and elapsed_s + delay <= policy.max_total_s
    budget = policy.max_attempts * (policy.throttle_attempts_factor if isinstance(error, EmagThrottled) else 1)
    assert attempt < budget
    if not (isinstance(error, EmagThrottled) and error.retry_after_s is not None):
        assert delay <= policy.max_delay_s


@pytest.mark.parametrize(
    ("status", "body", "headers", "error", "text"),
    [
        (
            403,
            b'{"isError":true,"messages":["You are not allowed to use this API."],"results":[]}',
            {},
            EmagAuthError,
            "HTTP 403 .*not allowed",
        ),
        (403, b"<html>Forbidden</html>", {}, EmagAuthError, "HTTP 403"),
        (401, b"", {}, EmagAuthError, "HTTP 401"),
        (
            200,
            b'{"isError":true,"messages":["You are not allowed to use this API."]}',
            {},
            EmagAuthError,
            "not allowed",
        ),
        (429, b'{"message":"API rate limit exceeded"}', {}, EmagThrottled, "429"),
        (200, b'{"message":"API rate limit exceeded"}', {}, EmagThrottled, "rate limit"),
        (500, b'{"isError":false,"results":[]}', {}, EmagTransientError, "HTTP 500"),
        (502, b"<html>bad gateway</html>", {}, EmagTransientError, "HTTP 502"),
        (504, b"", {}, EmagTransientError, "HTTP 504"),
        (200, b'{"isError": fal', {}, EmagTransientError, "malformed JSON"),
        (200, b"", {}, EmagTransientError, "malformed JSON"),
        (200, b"\xff\xfe", {}, EmagTransientError, "malformed JSON"),
        (200, b"[1, 2]", {}, EmagTransientError, "malformed JSON"),
        (
            200,
            b'{"isError":true,"messages":["Invalid vendor ip [1.2.3.4]"]}',
            {},
            EmagApiError,
            r"Invalid vendor ip \[",
        ),
        (
            200,
            b'{"isError":true,"message":"Maximum input vars of 4000 exceeded"}',
            {},
            EmagApiError,
            "Maximum input vars of 4000 exceeded",
        ),
        (200, b'{"isError":true,"messages":[{"message":"a"},"b"],"errors":["c"]}', {}, EmagApiError, "a; b; c"),
        (200, b'{"isError":true}', {}, EmagApiError, "no message"),
        (200, b'{"results":[]}', {}, EmagTransientError, "isError"),
        (200, b'{"isError":"false","results":[]}', {}, EmagTransientError, "isError"),
        (200, b'{"isError":null,"results":[]}', {}, EmagTransientError, "isError"),
        (404, b"not found", {}, EmagApiError, "HTTP 404"),
        (400, b'{"isError":true,"messages":["bad filter"]}', {}, EmagApiError, "HTTP 400: bad filter"),
        (301, b"", {"Location": "https://elsewhere/api-3/x"}, EmagApiError, "redirect to https://elsewhere"),
    ],
)
def test_envelope_errors(status: int, body: bytes, headers: dict, error: type, text: str) -> None:
    with pytest.raises(error, match=text) as caught:
        parse_envelope("product_offer/read", status, headers, body)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("product_offer/read: ")


def test_envelope_messages_become_one_line() -> None:
    body = b'{"isError":true,"messages":["line one\\nline two", "' + b"x" * 1000 + b'"]}'
    with pytest.raises(EmagApiError) as caught:
        parse_envelope("order/read", 200, {}, body)
    assert "line one line two" in str(caught.value) and len(str(caught.value)) < 400


@pytest.mark.parametrize(
    ("body", "results"),
    [
        (b'{"isError":false,"messages":[],"results":[{"id":1}]}', [{"id": 1}]),
        (b'{"isError":false,"results":[]}', []),
        (b'{"isError":false,"results":{"noOfItems":"1"}}', {"noOfItems": "1"}),
        (b'{"isError":false}', None),
    ],
)
def test_envelope_ok(body: bytes, results: object) -> None:
    assert parse_envelope("x", 200, {}, body) == results


@pytest.mark.parametrize(
    ("headers", "retry_after_s"),
    [
        ({}, None),
        ({"Retry-After": "3"}, 3.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "-2"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({"Retry-After": "nan"}, None),
    ],
)
def test_envelope_retry_after(headers: dict, retry_after_s: float | None) -> None:
    with pytest.raises(EmagThrottled) as caught:
        parse_envelope("x", 429, headers, b'{"message":"API rate limit exceeded"}')
    assert caught.value.retry_after_s == retry_after_s


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ({"noOfItems": "797", "noOfPages": "8", "itemsPerPage": "100"}, Count(797, 8, 100)),
        ({"noOfItems": 250, "noOfPages": 3, "itemsPerPage": 100}, Count(250, 3, 100)),
        # counted in another page size than asked (50 vs 100): pages in the size we page in
        ({"noOfItems": " 250 ", "noOfPages": 5.0, "itemsPerPage": "50"}, Count(250, 3, 100)),
        ({"noOfItems": "250"}, Count(250, 3, 100)),
        ({"noOfItems": "250", "itemsPerPage": "50"}, Count(250, 3, 100)),
        ({"noOfItems": "0", "noOfPages": "0", "itemsPerPage": "100"}, Count(0, 0, 100)),
        ({"noOfItems": 4000000000, "noOfPages": "40000000"}, Count(4000000000, 40000000, 100)),
        ([], Count(0, 0, 100)),
        ({}, Count(0, 0, 100)),
    ],
)
def test_count_accepts_loose_types(results: object, expected: Count) -> None:
    assert Count.from_api(results, 100) == expected


@pytest.mark.parametrize(
    "results",
    [
        None,
        "797",
        [1, 2],
        {"noOfItems": "many"},
        {"noOfItems": "-1"},
        {"noOfItems": "2.5"},
        {"noOfItems": True},
        {"noOfPages": "3"},
        {"noOfItems": "1", "noOfPages": [3]},
    ],
)
def test_count_rejects_nonsense(results: object) -> None:
    with pytest.raises(EmagApiError, match="count"):
        Count.from_api(results, 100)


@pytest.mark.parametrize(
    ("text", "secrets", "expected"),
    [
        ("a\n b\t\tc ", (), "a b c"),
        ("boom hunter2 boom", ("hunter2",), "boom *** boom"),
        ("GET https://user:pw@host/x failed", (), "GET https://***@host/x failed"),
        ("x" * 400, (), "x" * 299 + "…"),
    ],
)
def test_one_line(text: str, secrets: tuple, expected: str) -> None:
    assert one_line(text, secrets=secrets) == expected
