"""The eMAG API subset over HTTP: auth, rate limits, latency, faults, read and count.

Routes: POST /api-3/product_offer/{read,count} and /api-3/order/{read,count}.
A request goes: auth (403) -> rate limiter (429) -> latency -> fault -> answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import hdrs, web

from sandbox.control import Control
from sandbox.faults import Fault, Request
from sandbox.market import Account, Market
from sandbox.query import BadRequest, Query, offer_query, order_query, parse_params
from sandbox.ratelimit import Limit, RateLimiter, route_group

API_PREFIX = "/api-3"
RESOURCE_OF = {"product_offer": "offers", "order": "orders"}
FORBIDDEN = {"isError": True, "messages": ["You are not allowed to use this API."], "results": []}
THROTTLED_BODY = '{"message":"API rate limit exceeded"}'
STATUS_REASONS = {
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Temporarily Unavailable",
    504: "Gateway Time-out",
}


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(username, password) from an `Authorization: Basic ...` header, or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body, separators=(",", ":")), content_type="application/json")


def envelope(results: Any) -> dict[str, Any]:
    return {"isError": False, "messages": [], "results": results}


def error_envelope(message: str) -> dict[str, Any]:
    return {"isError": True, "messages": [message], "results": []}


def throttled(limit: Limit) -> web.Response:
    headers = {"X-RateLimit-Limit-3second": str(limit.per_second * 3), "X-RateLimit-Remaining-3second": "0"}
    return web.Response(status=429, text=THROTTLED_BODY, content_type="application/json", headers=headers)


def status_fault(fault: Fault) -> web.Response:
    if fault.body == "json":
        return json_response(error_envelope(fault.message), status=fault.status)
    title = f"{fault.status} {STATUS_REASONS.get(fault.status, 'Error')}"
    html = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n"
        f"<body>\r\n<center><h1>{title}</h1></center>\r\n</body>\r\n</html>\r\n"
    )
    return web.Response(status=fault.status, text=html, content_type="text/html")


def count_results(items: int, pages: int, per_page: int) -> dict[str, str]:
    return {"noOfItems": str(items), "noOfPages": str(pages), "itemsPerPage": str(per_page)}


class MarketApi:
    def __init__(
        self,
        market: Market,
        limiter: RateLimiter,
        *,
        latency_s: float,
        jitter_s: float,
        max_items: dict[str, int],
        rng: random.Random,
    ) -> None:
        self.market = market
        self.limiter = limiter
        self.latency_s = latency_s
        self.jitter_s = jitter_s
        self.max_items = max_items
        self.rng = rng

    def authenticate(self, request: web.Request) -> Account | None:
        credentials = basic_credentials(request.headers.get(hdrs.AUTHORIZATION, ""))
        if credentials is None:
            return None
        username, password = credentials
        account = self.market.by_username(username)
        if account is None:
            return None
        if not hmac.compare_digest(password.encode(), account.password.encode()):
            account.stats.auth_failures += 1
            return None
        return account

    async def handle(self, request: web.Request) -> web.StreamResponse:
        api_resource, action = request.match_info["api_resource"], request.match_info["action"]
        resource = RESOURCE_OF[api_resource]
        account = self.authenticate(request)
        if account is None:
            return json_response(FORBIDDEN, status=403)
        account.stats.requests += 1
        decision = self.limiter.admit(account.username, route_group(api_resource))
        if not decision.admitted:
            account.stats.throttled += 1
            return throttled(decision.limit)
        account.stats.admitted += 1
        account.stats.routes[f"{api_resource}/{action}"] += 1
        await self._latency()
        return await self._answer(request, account, resource, action, decision.limit)

    async def _answer(
        self, request: web.Request, account: Account, resource: str, action: str, limit: Limit
    ) -> web.StreamResponse:
        """The answer to an admitted request: a fault's, an isError, or the records."""
        query: Query | None = None
        results: list[Any] = []
        total, error = 0, ""
        try:
            query = self._query(resource, parse_params(await request.read(), request.content_type))
            results, total = account.read(resource, query)
        except BadRequest as exc:
            error = str(exc)
        page = query.page if query is not None else None
        past_end = query is not None and query.offset >= total
        fault = account.faults.take(Request(resource, action, account.stats.admitted, page, past_end))
        if fault is not None:
            interrupted = await self._interrupt(request, account, fault, limit)
            if interrupted is not None:
                return interrupted
        if query is None:
            return json_response(error_envelope(error))
        if action == "count":
            body = envelope(self._count(query, total, fault))
        else:
            body = envelope(self._read(account, resource, query, results, total, fault))
        text = json.dumps(body, separators=(",", ":"))
        if fault is not None and fault.kind == "malformed":
            text = text[: len(text) // 2]
        return web.Response(text=text, content_type="application/json")

    def _query(self, resource: str, params: dict[str, Any]) -> Query:
        build: Callable[[dict[str, Any], int], Query] = offer_query if resource == "offers" else order_query
        return build(params, self.max_items[resource])

    async def _latency(self) -> None:
        delay = self.latency_s + self.rng.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else self.latency_s
        if delay > 0:
            await asyncio.sleep(delay)

    async def _interrupt(
        self, request: web.Request, account: Account, fault: Fault, limit: Limit
    ) -> web.StreamResponse | None:
        """The answer of a fault that replaces the normal one, or None to go on."""
        if fault.kind == "status":
            return status_fault(fault)
        if fault.kind == "auth":
            return json_response(FORBIDDEN, status=403)
        if fault.kind == "is_error":
            return json_response(error_envelope(fault.message))
        if fault.kind == "throttle":
            account.stats.throttled += 1
            return throttled(limit)
        if fault.kind == "hang":
            await asyncio.sleep(fault.seconds)
        elif fault.kind == "reset":
            # Drop the TCP connection unanswered; aiohttp treats a cancelled
            # handler on a closed connection as a client disconnect (no log, no reply).
            request.protocol.force_close()
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return None

    def _read(
        self, account: Account, resource: str, query: Query, results: list[Any], total: int, fault: Fault | None
    ) -> list[Any]:
        kind = fault.kind if fault is not None else None
        if kind == "cap_items" and fault is not None:
            return account.read(resource, replace(query, per_page=min(query.per_page, fault.limit)))[0]
        if kind == "repeat_page":
            return account.read(resource, replace(query, page=query.page - 1))[0]
        if kind == "endless":
            return account.synthetic_page(resource, query, total)
        if kind == "empty_page":
            return []
        return results

    @staticmethod
    def _count(query: Query, total: int, fault: Fault | None) -> dict[str, str]:
        items, pages = total, math.ceil(total / query.per_page)
        if fault is not None and fault.kind == "lying_count":
            items = fault.items if fault.items is not None else items
            pages = fault.pages if fault.pages is not None else math.ceil(items / query.per_page)
        return count_results(items, pages, query.per_page)


def create_app(
    market: Market,
    *,
    latency_s: float = 0.0,
    jitter_s: float = 0.0,
    rate_mode: str = "sliding",
    clock: Callable[[], float] = time.monotonic,
    max_items_offers: int = 100,
    max_items_orders: int = 1000,
    seed: int | None = None,
) -> web.Application:
    """The sandbox web application. `clock` drives the rate limiter; `seed` the latency jitter."""
    limiter = RateLimiter(rate_mode, clock=clock)
    api = MarketApi(
        market,
        limiter,
        latency_s=latency_s,
        jitter_s=jitter_s,
        max_items={"offers": max_items_offers, "orders": max_items_orders},
        rng=random.Random(seed),
    )
    app = web.Application()
    app.router.add_post(API_PREFIX + "/{api_resource:product_offer|order}/{action:read|count}", api.handle)
    Control(market, limiter).register(app.router)
    return app
