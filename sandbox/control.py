"""Control endpoints under /_sandbox/ (no auth; bind to loopback).

GET    /_sandbox/accounts                   accounts (never passwords)
GET    /_sandbox/accounts/{name}/offers     every offer, in API order
GET    /_sandbox/accounts/{name}/orders     every order, in API order
POST   /_sandbox/accounts/{name}/mutate     {"mutate_offers": n, "add_offers": n, "remove_offers": n,
                                             "mutate_orders": n, "add_orders": n} -> ids touched
GET    /_sandbox/accounts/{name}/faults     active faults with their `fired` counts
POST   /_sandbox/accounts/{name}/faults     add a JSON list of fault specs (or one spec)
DELETE /_sandbox/accounts/{name}/faults     remove every fault of the account
GET    /_sandbox/accounts/{name}/stats      requests, admitted, throttled, auth_failures, routes
DELETE /_sandbox/accounts/{name}/stats      reset the counters
GET    /_sandbox/ratelimit                  {"mode": ...}
PUT    /_sandbox/ratelimit                  {"mode": "sliding" | "fixed" | "off"}
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from sandbox.faults import FaultSpecError, parse_faults
from sandbox.market import Account, Market, Stats
from sandbox.ratelimit import MODES, RateLimiter

PREFIX = "/_sandbox"


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def _fail(status: int, message: str) -> web.HTTPException:
    exc_class = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return exc_class(text=json.dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except json.JSONDecodeError as exc:
        raise _fail(400, f"invalid JSON: {exc}") from exc


class Control:
    def __init__(self, market: Market, limiter: RateLimiter) -> None:
        self.market = market
        self.limiter = limiter

    def register(self, router: web.UrlDispatcher) -> None:
        account = PREFIX + "/accounts/{name}"
        router.add_get(PREFIX + "/accounts", self.accounts)
        router.add_get(account + "/{resource:offers|orders}", self.records)
        router.add_post(account + "/mutate", self.mutate)
        router.add_get(account + "/faults", self.get_faults)
        router.add_post(account + "/faults", self.add_faults)
        router.add_delete(account + "/faults", self.clear_faults)
        router.add_get(account + "/stats", self.get_stats)
        router.add_delete(account + "/stats", self.reset_stats)
        router.add_get(PREFIX + "/ratelimit", self.get_ratelimit)
        router.add_put(PREFIX + "/ratelimit", self.set_ratelimit)

    def _account(self, request: web.Request) -> Account:
        name = request.match_info["name"]
        if name not in self.market.accounts:
            raise _fail(404, f"no account {name!r}")
        return self.market.account(name)

    async def accounts(self, request: web.Request) -> web.Response:
        return _json([account.info() for account in self.market.accounts.values()])

    async def records(self, request: web.Request) -> web.Response:
        return _json(self._account(request).records(request.match_info["resource"]))

    async def mutate(self, request: web.Request) -> web.Response:
        account = self._account(request)
        plan = await _body(request)
        if not isinstance(plan, dict):
            raise _fail(400, "expected an object of mutation counts")
        try:
            return _json(account.apply_mutations(plan))
        except ValueError as exc:
            raise _fail(400, str(exc)) from exc

    async def get_faults(self, request: web.Request) -> web.Response:
        return _json([fault.to_dict() for fault in self._account(request).faults.faults])

    async def add_faults(self, request: web.Request) -> web.Response:
        account = self._account(request)
        try:
            faults = parse_faults(await _body(request))
        except FaultSpecError as exc:
            raise _fail(400, str(exc)) from exc
        account.faults.add(faults)
        return _json([fault.to_dict() for fault in account.faults.faults])

    async def clear_faults(self, request: web.Request) -> web.Response:
        self._account(request).faults.clear()
        return _json([])

    async def get_stats(self, request: web.Request) -> web.Response:
        return _json(self._account(request).stats.as_dict())

    async def reset_stats(self, request: web.Request) -> web.Response:
        account = self._account(request)
        account.stats = Stats()
        return _json(account.stats.as_dict())

    async def get_ratelimit(self, request: web.Request) -> web.Response:
        return _json({"mode": self.limiter.mode})

    async def set_ratelimit(self, request: web.Request) -> web.Response:
        body = await _body(request)
        mode = body.get("mode") if isinstance(body, dict) else None
        if mode not in MODES:
            raise _fail(400, f"mode must be one of {list(MODES)}")
        self.limiter.mode = mode
        return _json({"mode": mode})
