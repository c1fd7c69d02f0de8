"""Requests signed as the sandbox's default logins (sandbox.DEFAULT_LOGINS)."""

from __future__ import annotations

from daemon.emag.client import basic_auth_header
from sandbox import DEFAULT_LOGINS


def auth(account: str = "main", password: str | None = None) -> dict[str, str]:
    """The Authorization header of `account`'s login; with `password` instead of its own, if given."""
    login = DEFAULT_LOGINS[account]
    return {"Authorization": basic_auth_header(login.username, password or login.password)}
