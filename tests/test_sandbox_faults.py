"""Every fault kind of the sandbox, seen from a real HTTP client."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox
from tests.logins import auth

BASE = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
MARKET = {"offers": 250, "orders": 120, "seed": 5, "base_time": BASE}  # the conftest's market and sb fixtures


async def inject(session: aiohttp.ClientSession, sb: Sandbox, *specs: dict[str, Any], account: str = "main") -> None:
    async with session.post(f"{sb.control_url}/accounts/{account}/faults", json=list(specs)) as resp:
        assert resp.status == 200, await resp.text()


async def post(
    session: aiohttp.ClientSession,
    sb: Sandbox,
    route: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    **kw: Any,
) -> tuple[int, str, str]:
    async with session.post(f"{sb.base_url}/{route}", json=body or {}, headers=headers or auth(), **kw) as resp:
        return resp.status, resp.content_type, await resp.text()


def ids(text: str) -> list[int]:
    return [record["id"] for record in json.loads(text)["results"]]


@pytest.mark.asyncio
async def test_status_burst_on_one_page_of_one_account(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "status", "status": 502, "resource": "orders", "page": 2, "times": 3})
    await inject(session, sb, {"kind": "status", "status": 504, "body": "json"}, account="fbe")
    assert (await post(session, sb, "order/read", {"currentPage": 1}))[0] == 200
    assert (await post(session, sb, "product_offer/read", {"currentPage": 2}))[0] == 200, "offers are not affected"
    for _ in range(3):
        status, content_type, text = await post(session, sb, "order/read", {"currentPage": 2})
        assert (status, content_type) == (502, "text/html") and "502 Bad Gateway" in text
    assert (await post(session, sb, "order/read", {"currentPage": 2}))[0] == 200, "the burst is over"
    status, content_type, text = await post(session, sb, "order/read", headers=auth("fbe"))
    assert (status, content_type) == (504, "application/json") and json.loads(text)["isError"] is True


@pytest.mark.asyncio
async def test_fault_by_request_number_and_forever(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "status", "status": 500, "request": 2}, {"kind": "is_error", "request": 4})
    statuses = [(await post(session, sb, "product_offer/count"))[0] for _ in range(3)]
    assert statuses == [200, 500, 200]
    _, _, text = await post(session, sb, "product_offer/count")
    message = "Sandbox fault: service temporarily unavailable"
    assert json.loads(text) == {"isError": True, "messages": [message], "results": []}
    async with session.get(f"{sb.control_url}/accounts/main/faults") as resp:
        assert [f["fired"] for f in await resp.json()] == [1, 1]
    async with session.delete(f"{sb.control_url}/accounts/main/faults") as resp:
        assert await resp.json() == []
    async with session.post(f"{sb.control_url}/accounts/main/faults", json=[{"kind": "boom"}]) as resp:
        assert resp.status == 400


@pytest.mark.asyncio
async def test_hang_outlasts_the_client_timeout(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "hang", "resource": "offers"})
    await inject(session, sb, {"kind": "hang", "seconds": 0.2, "resource": "orders"})
    with pytest.raises(TimeoutError):
        await post(session, sb, "product_offer/read", timeout=aiohttp.ClientTimeout(total=0.3))
    status, _, text = await post(session, sb, "order/read", timeout=aiohttp.ClientTimeout(total=5))
    assert status == 200 and len(ids(text)) == 100, "a short hang answers normally afterwards"


@pytest.mark.asyncio
async def test_reset_closes_the_connection(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "reset", "times": 2})
    for _ in range(2):
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await post(session, sb, "order/read")
    assert (await post(session, sb, "order/read"))[0] == 200


@pytest.mark.asyncio
async def test_malformed_auth_and_throttle(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    specs = [{"kind": "malformed", "request": 1}, {"kind": "auth", "request": 2}, {"kind": "throttle", "request": 3}]
    await inject(session, sb, *specs)
    status, _, text = await post(session, sb, "product_offer/read")
    assert status == 200 and text.startswith('{"isError":false')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    status, _, text = await post(session, sb, "product_offer/read")
    assert status == 403 and json.loads(text)["messages"] == ["You are not allowed to use this API."]
    async with session.post(f"{sb.base_url}/order/count", json={}, headers=auth()) as resp:
        assert resp.status == 429 and await resp.text() == '{"message":"API rate limit exceeded"}'
        assert "X-RateLimit-Limit-3second" in resp.headers
    assert sb.market.account("main").stats.throttled == 1


@pytest.mark.asyncio
async def test_repeat_page(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "repeat_page", "page": 2, "resource": "offers"})
    page1 = ids((await post(session, sb, "product_offer/read", {"currentPage": 1}))[2])
    page2 = ids((await post(session, sb, "product_offer/read", {"currentPage": 2}))[2])
    assert page1 == page2 and len(page1) == 100
    again = ids((await post(session, sb, "product_offer/read", {"currentPage": 2}))[2])
    assert again == [o["id"] for o in sb.market.account("main").offers[100:200]], "times=1: back to normal"


@pytest.mark.asyncio
async def test_lying_count_and_cap_items(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(
        session,
        sb,
        {"kind": "lying_count", "items": 797, "pages": 8, "times": 0},
        {"kind": "cap_items", "limit": 7, "times": 0},
    )
    _, _, text = await post(session, sb, "product_offer/count")
    assert json.loads(text)["results"] == {"noOfItems": "797", "noOfPages": "8", "itemsPerPage": "100"}
    _, _, text = await post(session, sb, "order/read", {"itemsPerPage": 50, "currentPage": 2})
    assert ids(text) == [o["id"] for o in sb.market.account("main").orders[7:14]], "as if itemsPerPage were 7"


@pytest.mark.asyncio
async def test_endless_reads_never_end(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "endless", "resource": "offers", "times": 0})
    known = {o["id"] for o in sb.market.account("main").offers}
    pages = [ids((await post(session, sb, "product_offer/read", {"currentPage": p}))[2]) for p in range(1, 7)]
    assert [len(p) for p in pages] == [100, 100, 50, 100, 100, 100], "the real last page is still short"
    fresh = [i for page in pages[3:] for i in page]
    assert len(set(fresh)) == 300 and not set(fresh) & known
    _, _, text = await post(session, sb, "product_offer/count")
    assert json.loads(text)["results"]["noOfItems"] == "250"
    _, _, orders = await post(session, sb, "order/read", {"currentPage": 3})
    assert ids(orders) == [], "orders are not affected"


@pytest.mark.asyncio
async def test_empty_page_answers_nothing_inside_the_catalog(sb: Sandbox, session: aiohttp.ClientSession) -> None:
    await inject(session, sb, {"kind": "empty_page", "resource": "offers", "page": 2, "times": 1})
    first = ids((await post(session, sb, "product_offer/read", {"currentPage": 2}))[2])
    again = ids((await post(session, sb, "product_offer/read", {"currentPage": 2}))[2])
    assert first == [] and again == [o["id"] for o in sb.market.account("main").offers[100:200]]
