"""Sandbox pieces without HTTP: data generation, request parsing, rate limiter, fault specs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.data import ORDER_ID_BASE, local_time
from sandbox.faults import Fault, FaultPlan, FaultSpecError, Request, load_fault_file, parse_faults
from sandbox.market import Market
from sandbox.query import BadRequest, offer_query, order_query, parse_params
from sandbox.ratelimit import LIMITS, ORDERS, OTHER, Limit, RateLimiter, route_group

BASE = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)
MONEY = re.compile(r"^\d+\.\d{4}$")
LOCAL = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def market(seed: int = 7, offers: int = 40, orders: int = 60) -> Market:
    return Market.with_default_accounts(offers=offers, orders=orders, seed=seed, base_time=BASE)


# -- data ------------------------------------------------------------------


def test_same_seed_gives_byte_identical_records() -> None:
    one, two = market(), market()
    for name in ("main", "fbe"):
        a, b = one.account(name), two.account(name)
        assert json.dumps(a.offers) == json.dumps(b.offers)
        assert json.dumps(a.orders) == json.dumps(b.orders)
    assert json.dumps(market(seed=8).account("main").offers) != json.dumps(one.account("main").offers)


def test_offers_look_like_emag_offers() -> None:
    offers = market().account("main").offers
    ids = [o["id"] for o in offers]
    assert ids == sorted(set(ids))
    for offer in offers:
        assert offer["part_number"] == f"SKU-MAIN-{offer['id']:06d}"
        assert offer["part_number_key"] == "" or re.fullmatch(r"[0-9A-Z]{9}", offer["part_number_key"])
        for key in ("sale_price", "recommended_price", "min_sale_price", "max_sale_price"):
            assert MONEY.match(offer[key]), offer[key]
        assert offer["status"] in (0, 1, 2) and offer["currency"] == "RON"
        assert offer["general_stock"] == sum(s["value"] for s in offer["stock"])
        assert {"warehouse_id", "value"} <= set(offer["handling_time"][0])
        assert set(offer["offer_validation_status"]) == {"value", "description"}
    assert sum(o["status"] == 1 for o in offers) > len(offers) // 2


def test_orders_look_like_emag_orders() -> None:
    m = market()
    main, fbe = m.account("main").orders, m.account("fbe").orders
    assert {o["type"] for o in main} == {3} and {o["type"] for o in fbe} == {2}
    assert {o["id"] for o in main} & {o["id"] for o in fbe}, "some order ids must repeat across accounts"
    assert all(o["id"] > 2**31 and o["id"] > ORDER_ID_BASE for o in main)
    oldest = local_time(BASE - timedelta(days=90), m.account("main").tz)
    newest = local_time(BASE, m.account("main").tz)
    for order in main:
        assert LOCAL.match(order["date"]) and LOCAL.match(order["modified"])
        assert oldest <= order["date"] <= order["modified"] <= newest
        assert "@" not in order["customer"]["email"]
        assert all(MONEY.match(p["sale_price"]) for p in order["products"])
        assert ("reason_cancellation" in order) == (order["status"] == 0)
    keys = [(o["date"], o["id"]) for o in main]
    assert keys == sorted(keys, reverse=True), "orders are kept newest first"


def test_mutations_change_records_and_keep_invariants() -> None:
    account = market().account("main")
    before = json.dumps(account.offers)
    changed = account.mutate_offers(5)
    assert len(changed) == 5 and json.dumps(account.offers) != before
    added = account.add_offers(3)
    assert [o["id"] for o in account.offers[-3:]] == added
    removed = account.remove_offers(2)
    assert not {o["id"] for o in account.offers} & set(removed)
    assert len(account.offers) == 40 + 3 - 2

    moved = account.mutate_orders(4)
    now = account.now_local()
    for order in account.orders:
        if order["id"] in moved:
            assert order["modified"][:16] == now[:16]
    new_orders = account.add_orders(2)
    assert {o["id"] for o in account.orders[:2]} == set(new_orders)
    assert min(new_orders) > max(o["id"] for o in account.orders[2:])
    with pytest.raises(ValueError):
        account.apply_mutations({"explode": 1})
    with pytest.raises(ValueError):
        account.apply_mutations({"add_orders": -1})


# -- request parsing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b'{"currentPage": 2, "itemsPerPage": 5}', "application/json"),
        (b'{"data": {"currentPage": 2, "itemsPerPage": 5}}', "application/json"),
        (b'{"data": "{\\"currentPage\\": 2, \\"itemsPerPage\\": 5}"}', "application/json"),
        (b"data=%7B%22currentPage%22%3A2%2C%22itemsPerPage%22%3A5%7D", "application/x-www-form-urlencoded"),
        (b"data%5BcurrentPage%5D=2&data%5BitemsPerPage%5D=5", "application/x-www-form-urlencoded"),
    ],
)
def test_params_are_read_from_every_body_shape(raw: bytes, content_type: str) -> None:
    params = parse_params(raw, content_type)
    query = offer_query(params, 100)
    assert (query.page, query.per_page) == (2, 5)


def test_php_style_form_lists() -> None:
    params = parse_params(b"data%5Bstatus%5D%5B%5D=1&data%5Bstatus%5D%5B%5D=4", "application/x-www-form-urlencoded")
    query = order_query(params, 1000)
    assert query.match({"status": 4, "type": 3}) and not query.match({"status": 2, "type": 3})


@pytest.mark.parametrize(
    "raw", [b"{nope", b"[1, 2]", b'{"data": 5}', b'{"currentPage": 0}', b'{"itemsPerPage": "x"}', b"\xff"]
)
def test_bad_bodies_are_bad_requests(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        offer_query(parse_params(raw, "application/json"), 100)


def test_empty_body_means_defaults_and_cap() -> None:
    assert offer_query(parse_params(b"", "application/json"), 100).per_page == 100
    assert offer_query({"itemsPerPage": 5000}, 100).per_page == 100
    assert order_query({"itemsPerPage": 5000}, 1000).per_page == 1000


@pytest.mark.parametrize(
    "params",
    [
        {"modifiedBefore": "2025-01-10 00:00:00"},
        {"createdAfter": "2025-01-01 00:00:00", "createdBefore": "2025-02-15 00:00:00"},
        {"modifiedAfter": "2025-01-01T00:00:00"},
    ],
)
def test_bad_date_windows_are_rejected(params: dict[str, str]) -> None:
    with pytest.raises(BadRequest):
        order_query(params, 1000)


# -- rate limiter ------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def admitted(limiter: RateLimiter, group: str, n: int, login: str = "main") -> int:
    return sum(limiter.admit(login, group).admitted for _ in range(n))


def test_route_groups() -> None:
    assert route_group("order") == ORDERS
    assert route_group("product_offer") == route_group("awb") == OTHER
    assert (LIMITS[ORDERS].per_second, LIMITS[ORDERS].per_minute) == (12, 720)
    assert (LIMITS[OTHER].per_second, LIMITS[OTHER].per_minute) == (3, 180)


def test_sliding_window_per_second() -> None:
    clock = FakeClock()
    limiter = RateLimiter("sliding", clock=clock)
    assert admitted(limiter, OTHER, 5) == 3
    assert admitted(limiter, ORDERS, 20) == 12, "orders have their own budget"
    assert admitted(limiter, OTHER, 5, login="fbe") == 3, "budgets are per login"
    clock.now += 0.999
    assert admitted(limiter, OTHER, 1) == 0, "still inside (now-1s, now]"
    clock.now += 0.001
    assert admitted(limiter, OTHER, 5) == 3


@pytest.mark.parametrize("mode", ["sliding", "fixed"])
def test_minute_budget(mode: str) -> None:
    clock = FakeClock(6000.0)
    limiter = RateLimiter(mode, clock=clock, limits={OTHER: Limit(3, 7), ORDERS: Limit(12, 720)})
    total = 0
    for _ in range(5):
        total += admitted(limiter, OTHER, 3)
        clock.now += 1.0
    assert total == 7
    clock.now = 6060.5
    assert admitted(limiter, OTHER, 3) == 3, "a minute later the budget is back"


def test_sliding_window_catches_bursts_across_second_boundaries() -> None:
    clock = FakeClock(1000.6)
    sliding = RateLimiter("sliding", clock=clock)
    fixed = RateLimiter("fixed", clock=clock)
    assert admitted(sliding, OTHER, 3) == 3 and admitted(fixed, OTHER, 3) == 3
    clock.now = 1001.1
    assert admitted(sliding, OTHER, 3) == 0, "sliding: 3 requests 0.5 s ago"
    assert admitted(fixed, OTHER, 3) == 3, "fixed: a new whole second"


def test_fixed_windows_are_whole_seconds_and_off_admits_everything() -> None:
    clock = FakeClock(6000.0)
    fixed = RateLimiter("fixed", clock=clock)
    assert admitted(fixed, ORDERS, 13) == 12
    clock.now = 6000.99
    assert admitted(fixed, ORDERS, 1) == 0
    clock.now = 6001.0
    assert admitted(fixed, ORDERS, 13) == 12
    off = RateLimiter("off", clock=clock)
    assert admitted(off, OTHER, 1000) == 1000
    with pytest.raises(ValueError):
        RateLimiter("leaky")


# -- fault specs -------------------------------------------------------------


def test_fault_matching_by_resource_page_request_and_times() -> None:
    plan = FaultPlan()
    plan.add(parse_faults([{"kind": "status", "resource": "orders", "page": 3, "times": 2}]))
    plan.add([Fault("reset", request=5, times=0)])
    assert plan.take(Request("offers", "read", 1, 3)) is None
    assert plan.take(Request("orders", "read", 2, 2)) is None
    assert plan.take(Request("orders", "read", 3, 3)).kind == "status"
    assert plan.take(Request("orders", "count", 4, 3)).kind == "status"
    assert plan.take(Request("orders", "read", 6, 3)) is None, "times=2 is used up"
    for _ in range(3):
        assert plan.take(Request("offers", "read", 5, 1)).kind == "reset", "times=0 is forever"


def test_kind_specific_matching() -> None:
    plan = FaultPlan()
    plan.add(parse_faults([{"kind": "endless"}, {"kind": "lying_count", "items": 5}, {"kind": "repeat_page"}]))
    assert plan.take(Request("offers", "read", 1, 1)) is None, "endless waits for a page past the end"
    assert plan.take(Request("offers", "count", 2, 1)).kind == "lying_count"
    assert plan.take(Request("offers", "read", 3, 2)).kind == "repeat_page"
    assert plan.take(Request("offers", "read", 4, 9, past_end=True)).kind == "endless"


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "explode"},
        {"kind": "status", "status": 200},
        {"kind": "hang", "colour": 1},
        {"resource": "offers"},
        {"kind": "status", "resource": "awb"},
        {"kind": "status", "body": "xml"},
        {"kind": "cap_items", "limit": 0},
    ],
)
def test_bad_fault_specs(spec: dict[str, object]) -> None:
    with pytest.raises(FaultSpecError):
        parse_faults([spec])


def test_fault_files_json_and_toml(tmp_path: Path) -> None:
    json_file = tmp_path / "faults.json"
    json_file.write_text(json.dumps([{"kind": "status", "status": 502, "account": "main"}, {"kind": "reset"}]))
    loaded = load_fault_file(json_file)
    assert [f.status for f in loaded["main"]] == [502] and loaded["*"][0].kind == "reset"
    toml_file = tmp_path / "faults.toml"
    toml_file.write_text('[[faults]]\nkind = "hang"\nseconds = 2.5\naccount = "fbe"\nresource = "orders"\n')
    assert load_fault_file(toml_file)["fbe"][0].seconds == 2.5
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(FaultSpecError):
        load_fault_file(bad)
