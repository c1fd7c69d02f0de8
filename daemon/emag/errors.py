"""The marketplace layer's exceptions; no aiohttp exception escapes `daemon.emag`.

Every message is one human line without credentials: build it with `one_line()`,
which collapses whitespace, cuts long server text and masks the secrets it is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_MESSAGE_CHARS = 300
_WHITESPACE = re.compile(r"\s+")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]*@", re.IGNORECASE)


def one_line(text: object, *, secrets: Iterable[str] = (), limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` as one line of at most `limit` characters, with every secret (and any
    `user:password@` inside a URL) replaced by `***`."""
    value = str(text)
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        value = value.replace(secret, "***")
    value = _URL_USERINFO.sub(r"\g<scheme>***@", value)
    value = _WHITESPACE.sub(" ", value).strip()
    return value if len(value) <= limit else value[: limit - 1] + "…"


class EmagError(Exception):
    """Root of every marketplace error; the message is one line, without credentials."""


class EmagAuthError(EmagError):
    """HTTP 401/403 or "You are not allowed to use this API." — wrong login or no API rights. Never retried."""


class EmagApiError(EmagError):
    """A business error (`isError: true`), an unexpected 3xx/4xx, or an answer of the wrong shape. Not retried."""


class EmagThrottled(EmagError):
    """HTTP 429 from the API gateway; `retry_after_s` comes from a Retry-After header, if any."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class EmagTransientError(EmagError):
    """5xx, connection reset or refused, malformed JSON, an envelope without `"isError": false`:
    worth retrying the same request."""


class EmagTimeout(EmagTransientError):
    """The request did not complete within its timeout."""


class EmagRetriesExhausted(EmagError):
    """Retries of one request ran out; the last error is the `__cause__`."""

    def __init__(self, message: str, attempts: int, elapsed_s: float) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.elapsed_s = elapsed_s


class PagingError(EmagError):
    """Paging cannot be trusted to go on (a repeated page, endless pages, max pages)."""
