"""The eMAG answer envelope, parsed strictly and purely: bytes in, `results` or an
EmagError out (`"isError": false` is the only success; parse_envelope lists the rest)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from daemon.emag.errors import EmagApiError, EmagAuthError, EmagThrottled, EmagTransientError, one_line

NOT_ALLOWED = "not allowed to use this api"


def messages_of(data: Mapping[str, Any]) -> str:
    """The server's messages as one line: `messages` [str | {message}], `message`, `errors`."""
    parts: list[Any] = []
    for key in ("messages", "message", "errors"):
        value = data.get(key)
        parts.extend(value if isinstance(value, list) else [value] if value not in (None, "") else [])
    texts = [str(p.get("message", p)) if isinstance(p, Mapping) else str(p) for p in parts]
    return one_line("; ".join(t for t in texts if t)) or "no message"


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header given in seconds; None if absent or an HTTP date."""
    value = headers.get("Retry-After") or headers.get("retry-after") or ""
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if seconds == seconds else None


def parse_envelope(path: str, status: int, headers: Mapping[str, str], body: bytes) -> Any:
    """Turn one HTTP answer into `results` or raise the right EmagError (no I/O). First match:
    429 -> EmagThrottled (the gateway's body has no isError); 5xx -> EmagTransientError;
    401/403 -> EmagAuthError; other 3xx/4xx -> EmagApiError (a redirect: a wrong base_url);
    not a JSON object -> EmagTransientError (truncated); `"isError": false` -> results;
    `"isError": true` -> EmagAuthError for "not allowed to use this API", else EmagApiError;
    anything else -> EmagTransientError, or EmagThrottled if it talks of the rate limit."""
    if status == 429:
        raise EmagThrottled(f"{path}: HTTP 429 rate limit exceeded", retry_after_s(headers))
    if status >= 500:
        raise EmagTransientError(f"{path}: HTTP {status}")
    try:
        data = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        data = None
    detail = messages_of(data) if isinstance(data, Mapping) else f"{len(body)} bytes, not an envelope"
    if status in (401, 403):
        raise EmagAuthError(f"{path}: HTTP {status} authentication refused: {detail}")
    if 300 <= status < 400:
        location = one_line(headers.get("Location", "?"), limit=120)
        raise EmagApiError(f"{path}: HTTP {status} redirect to {location}; check the account's base_url")
    if status >= 400 or status < 200:
        raise EmagApiError(f"{path}: HTTP {status}: {detail}")
    if not isinstance(data, Mapping):
        raise EmagTransientError(f"{path}: malformed JSON answer ({len(body)} bytes)")
    flag = data.get("isError")
    if flag is False:
        return data.get("results")
    if flag is True:
        if NOT_ALLOWED in detail.lower():
            raise EmagAuthError(f"{path}: authentication refused: {detail}")
        raise EmagApiError(f"{path}: API error: {detail}")
    if "rate limit" in detail.lower():
        raise EmagThrottled(f"{path}: HTTP {status} {detail}", retry_after_s(headers))
    raise EmagTransientError(f'{path}: answer without "isError": false ({detail})')


def _number(results: Mapping[str, Any], key: str) -> int | None:
    """A non-negative whole number given as an int, a float or a string ("797", " 8 ", "8.0")."""
    value = results.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"{key} is a boolean")
    number = float(value.strip()) if isinstance(value, str) else float(value)
    if number != int(number) or number < 0:
        raise ValueError(f"{key}={value!r} is not a count")
    return int(number)


@dataclass(frozen=True)
class Count:
    """The `count` endpoint's snapshot: items, pages and the page size it assumed."""

    items: int
    pages: int
    per_page: int

    @classmethod
    def from_api(cls, results: Any, asked_per_page: int) -> Count:
        """`{"noOfItems":"797","noOfPages":"8","itemsPerPage":"100"}`; numbers as strings or
        ints; `[]` (PHP's empty object) or `{}` means nothing to read."""
        if results in ([], {}):
            return cls(0, 0, asked_per_page)
        if not isinstance(results, Mapping):
            raise EmagApiError(f"count answered {type(results).__name__}, expected an object")
        try:
            items = _number(results, "noOfItems")
            per_page = _number(results, "itemsPerPage") or asked_per_page
            pages = _number(results, "noOfPages")
        except (TypeError, ValueError, OverflowError) as exc:
            raise EmagApiError(f"count answered a value that is not a count: {one_line(exc)}") from None
        if items is None:
            raise EmagApiError("count answered without noOfItems")
        if pages is None or per_page != asked_per_page:
            # noOfPages is in the server's page size; we page in the one we asked for
            pages, per_page = -(-items // asked_per_page), asked_per_page
        return cls(items, pages, per_page)
