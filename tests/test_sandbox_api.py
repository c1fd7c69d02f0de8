"""The sandbox over real HTTP: auth, envelope, paging, filters, rate limits, latency, control."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import pytest

from sandbox import DEFAULT_LOGINS, Market, Sandbox
from tests.logins import auth

BASE = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
FORBIDDEN = {"isError": True, "messages": ["You are not allowed to use this API."], "results": []}
MARKET = {"offers": 250, "orders": 180, "seed": 3, "base_time": BASE}  # the conftest's market and sb fixtures


async def call(
    session: aiohttp.ClientSession, sb: Sandbox, route: str, body: Any = None, account: str = "main", **kw: Any
) -> tuple[int, Any]:
    headers = kw.pop("headers", None) or auth(account)
    async with session.post(f"{sb.base_url}/{route}", json=body or {}, headers=headers, **kw) as resp:
        return resp.status, json.loads(await resp.text())


@pytest.mark.asyncio
@pytest.mark.parametrize("route", ["product_offer/read", "product_offer/count", "order/read", "order/count"])
async def test_wrong_or_missing_credentials_get_403(sb: Sandbox, session: aiohttp.ClientSession, route: str) -> None:
    assert await call(session, sb, route, headers=auth("main", "wrong")) == (403, FORBIDDEN)
    assert await call(session, sb, route, headers={"X-No": "auth"}) == (403, FORBIDDEN)
    assert await call(session, sb, route, headers={"Authorization": "Basic !!!"}) == (403, FORBIDDEN)
    fbe_user_main_password = auth("fbe", DEFAULT_LOGINS["main"].password)
    assert await call(session, sb, route, headers=fbe_user_main_password) == (403, FORBIDDEN)
    status, body = await call(session, sb, route, account="fbe")
    assert status == 200 and body["isError"] is False
    assert sb.market.account("main").stats.auth_failures == 1


@pytest.mark.asyncio
async def test_offer_paging_envelope_and_string_counts(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    status, count = await call(session, sb, "product_offer/count", {"itemsPerPage": 100})
    assert status == 200
    results = {"noOfItems": "250", "noOfPages": "3", "itemsPerPage": "100"}
    assert count == {"isError": False, "messages": [], "results": results}
    seen = []
    for page in (1, 2, 3, 4):
        status, body = await call(session, sb, "product_offer/read", {"currentPage": page, "itemsPerPage": 100})
        assert status == 200 and body["isError"] is False and body["messages"] == []
        seen.append([o["id"] for o in body["results"]])
    assert [len(ids) for ids in seen] == [100, 100, 50, 0], "past the last page: results []"
    all_ids = [i for ids in seen for i in ids]
    assert all_ids == sorted(all_ids) == [o["id"] for o in sb.market.account("main").offers]


@pytest.mark.asyncio
async def test_items_per_page_caps_and_defaults(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    _, offers = await call(session, sb, "product_offer/read", {"itemsPerPage": 500})
    assert len(offers["results"]) == 100
    _, count = await call(session, sb, "product_offer/count", {"itemsPerPage": 500})
    assert count["results"]["itemsPerPage"] == "100"
    _, orders = await call(session, sb, "order/read", {"itemsPerPage": 5000})
    assert len(orders["results"]) == 180
    _, default = await call(session, sb, "order/read")
    assert len(default["results"]) == 100


@pytest.mark.asyncio
async def test_capped_servers_are_configurable(session: aiohttp.ClientSession) -> None:
    market = Market.with_default_accounts(offers=30, orders=30, base_time=BASE)
    async with Sandbox(market, rate_mode="off", max_items_offers=10, max_items_orders=20) as sandbox:
        _, offers = await call(session, sandbox, "product_offer/read", {"itemsPerPage": 100})
        _, orders = await call(session, sandbox, "order/read", {"itemsPerPage": 100})
    assert (len(offers["results"]), len(orders["results"])) == (10, 20)


@pytest.mark.asyncio
async def test_order_type_defaults_to_3(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    _, main = await call(session, sb, "order/count")
    assert main["results"]["noOfItems"] == "180"
    _, fbe_default = await call(session, sb, "order/read", account="fbe")
    assert fbe_default == {"isError": False, "messages": [], "results": []}
    _, fbe = await call(session, sb, "order/read", {"type": 2, "itemsPerPage": 1000}, account="fbe")
    assert len(fbe["results"]) == 180 and {o["type"] for o in fbe["results"]} == {2}
    shared = {o["id"] for o in fbe["results"]} & {o["id"] for o in sb.market.account("main").orders}
    assert shared


@pytest.mark.asyncio
async def test_orders_newest_first_and_paged(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    pages = []
    for page in (1, 2, 3):
        _, body = await call(session, sb, "order/read", {"currentPage": page, "itemsPerPage": 100})
        pages.append(body["results"])
    assert [len(p) for p in pages] == [100, 80, 0]
    keys = [(o["date"], o["id"]) for o in pages[0] + pages[1]]
    assert keys == sorted(keys, reverse=True)


@pytest.mark.asyncio
async def test_offer_filters(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    offers = sb.market.account("main").offers
    target = next(o for o in offers if o["part_number_key"])
    for field in ("id", "part_number", "part_number_key"):
        _, body = await call(session, sb, "product_offer/read", {field: target[field]})
        assert [o["id"] for o in body["results"]] == [target["id"]], field
    _, body = await call(session, sb, "product_offer/read", {"status": [0, 2], "itemsPerPage": 100})
    assert [o["id"] for o in body["results"]] == [o["id"] for o in offers if o["status"] in (0, 2)][:100]
    _, body = await call(session, sb, "product_offer/count", {"status": 1})
    assert body["results"]["noOfItems"] == str(sum(o["status"] == 1 for o in offers))


@pytest.mark.asyncio
async def test_order_filters(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    orders = sb.market.account("main").orders
    target = orders[40]
    _, body = await call(session, sb, "order/read", {"id": target["id"]})
    assert body["results"] == [target]
    _, body = await call(session, sb, "order/read", {"status": [0, 5], "itemsPerPage": 1000})
    assert [o["id"] for o in body["results"]] == [o["id"] for o in orders if o["status"] in (0, 5)]
    _, body = await call(session, sb, "order/read", {"status": 4, "itemsPerPage": 1000})
    assert {o["status"] for o in body["results"]} == {4}

    low, high = orders[80]["date"], orders[40]["date"]
    _, body = await call(session, sb, "order/read", {"createdAfter": low, "createdBefore": high, "itemsPerPage": 1000})
    assert body["isError"] is False and len(body["results"]) == 41
    assert [o["id"] for o in body["results"]] == [o["id"] for o in orders if low <= o["date"] <= high]
    assert body["results"][0]["date"] == high and body["results"][-1]["date"] == low, "bounds are inclusive"

    after = sorted(o["modified"] for o in orders)[150]
    _, body = await call(session, sb, "order/read", {"modifiedAfter": after, "itemsPerPage": 1000})
    assert sorted(o["id"] for o in body["results"]) == sorted(o["id"] for o in orders if o["modified"] >= after)
    _, body = await call(
        session, sb, "order/count", {"data": {"modifiedAfter": after, "modifiedBefore": "2025-03-01 12:00:00"}}
    )
    assert body["results"]["noOfItems"] == str(sum(o["modified"] >= after for o in orders))


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "body",
    [
        {"modifiedBefore": "2025-02-01 00:00:00"},
        {"createdAfter": "2024-12-01 00:00:00", "createdBefore": "2025-02-01 00:00:00"},
        {"createdAfter": "yesterday"},
        {"currentPage": -1},
    ],
)
async def test_invalid_requests_get_is_error(sb: Sandbox, session: aiohttp.ClientSession, body: Any) -> None:
    status, answer = await call(session, sb, "order/read", body)
    assert status == 200 and answer["isError"] is True and answer["results"] == [] and answer["messages"]


@pytest.mark.asyncio
async def test_form_bodies_and_broken_json(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    form = {"data": json.dumps({"currentPage": 2, "itemsPerPage": 10})}
    async with session.post(f"{sb.base_url}/product_offer/read", data=form, headers=auth()) as resp:
        body = await resp.json()
    assert [o["id"] for o in body["results"]] == [o["id"] for o in sb.market.account("main").offers[10:20]]
    headers = {**auth(), "Content-Type": "application/json"}
    async with session.post(f"{sb.base_url}/product_offer/read", data=b"{oops", headers=headers) as resp:
        assert resp.status == 200 and (await resp.json())["isError"] is True


@pytest.mark.asyncio
async def test_real_time_rate_limits(session: aiohttp.ClientSession) -> None:
    market = Market.with_default_accounts(offers=10, orders=10, base_time=BASE)
    async with Sandbox(market) as sandbox:
        offers = [await _raw(session, sandbox, "product_offer/read") for _ in range(4)]
        orders = [await _raw(session, sandbox, "order/read") for _ in range(13)]
        fbe = await _raw(session, sandbox, "product_offer/count", account="fbe")
        async with session.get(f"{sandbox.control_url}/accounts/main/stats") as resp:
            stats = await resp.json()
    assert [status for status, _, _ in offers] == [200, 200, 200, 429]
    _, text, headers = offers[3]
    assert text == '{"message":"API rate limit exceeded"}'
    assert "isError" not in json.loads(text)
    assert headers["X-RateLimit-Remaining-3second"] == "0" and "X-RateLimit-Limit-3second" in headers
    assert [status for status, _, _ in orders] == [200] * 12 + [429]
    assert fbe[0] == 200, "fbe is a separate login"
    assert stats["throttled"] == 2 and stats["requests"] == 17 and stats["admitted"] == 15
    assert stats["routes"] == {"product_offer/read": 3, "order/read": 12}


async def _raw(session: aiohttp.ClientSession, sb: Sandbox, route: str, account: str = "main") -> tuple[int, str, Any]:
    async with session.post(f"{sb.base_url}/{route}", json={}, headers=auth(account)) as resp:
        return resp.status, await resp.text(), resp.headers


@pytest.mark.asyncio
async def test_injected_clock_and_runtime_mode_switch(session: aiohttp.ClientSession) -> None:
    now = [500.6]
    market = Market.with_default_accounts(offers=5, orders=5, base_time=BASE)
    async with Sandbox(market, clock=lambda: now[0]) as sandbox:
        assert [(await _raw(session, sandbox, "product_offer/count"))[0] for _ in range(4)] == [200] * 3 + [429]
        now[0] = 501.1
        assert (await _raw(session, sandbox, "product_offer/count"))[0] == 429, "sliding: 0.5 s later"
        async with session.put(f"{sandbox.control_url}/ratelimit", json={"mode": "fixed"}) as resp:
            assert (await resp.json()) == {"mode": "fixed"}
        assert [(await _raw(session, sandbox, "product_offer/count"))[0] for _ in range(4)] == [200] * 3 + [429]
        async with session.put(f"{sandbox.control_url}/ratelimit", json={"mode": "nope"}) as resp:
            assert resp.status == 400


@pytest.mark.asyncio
async def test_latency_applies_per_request(session: aiohttp.ClientSession) -> None:
    market = Market.with_default_accounts(offers=5, orders=5, base_time=BASE)
    async with Sandbox(market, rate_mode="off", latency_s=0.2, jitter_s=0.05, seed=1) as sandbox:
        started = time.monotonic()
        await asyncio.gather(*(call(session, sandbox, "order/count") for _ in range(3)))
        elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 0.6


@pytest.mark.asyncio
async def test_control_records_mutations_and_stats(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    control = f"{sb.control_url}/accounts/main"
    async with session.get(f"{sb.control_url}/accounts") as resp:
        accounts = await resp.json()
    assert [a["name"] for a in accounts] == ["main", "fbe"]
    assert "password" not in json.dumps(accounts) and DEFAULT_LOGINS["main"].password not in json.dumps(accounts)
    async with session.get(f"{control}/offers") as resp:
        before = await resp.json()
    assert before == sb.market.account("main").offers
    plan = {"mutate_offers": 3, "add_offers": 2, "remove_offers": 1, "mutate_orders": 2, "add_orders": 1}
    async with session.post(f"{control}/mutate", json=plan) as resp:
        touched = await resp.json()
    assert {k: len(v) for k, v in touched.items()} == {k: v for k, v in plan.items()}
    async with session.get(f"{control}/orders") as resp:
        orders = await resp.json()
    assert orders[0]["id"] == touched["add_orders"][0]
    _, count = await call(session, sb, "product_offer/count")
    assert count["results"]["noOfItems"] == "251"
    async with session.post(f"{control}/mutate", json={"melt": 1}) as resp:
        assert resp.status == 400
    async with session.get(f"{sb.control_url}/accounts/nobody/stats") as resp:
        assert resp.status == 404
    async with session.get(f"{control}/stats") as resp:
        assert (await resp.json())["routes"] == {"product_offer/count": 1}
    async with session.delete(f"{control}/stats") as resp:
        assert (await resp.json())["requests"] == 0


def test_sandbox_runs_under_anyio() -> None:
    async def scenario() -> tuple[int, Any]:
        market = Market.with_default_accounts(offers=5, orders=5, base_time=BASE)
        async with Sandbox(market, rate_mode="off") as sandbox, aiohttp.ClientSession() as session:
            with anyio.fail_after(5):
                return await call(session, sandbox, "product_offer/count")

    status, body = anyio.run(scenario, backend="asyncio")
    assert status == 200 and body["results"]["noOfItems"] == "5"
