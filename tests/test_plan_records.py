"""Pure decisions of a run (order windows, resume) and record typing, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.records import InvalidRecord, OfferRow, OrderRow, format_api_date, parse_api_date
from daemon.sync import plan

UTC = UTC
MONTH = timedelta(days=30)
T0 = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@given(st.integers(0, 4000), st.integers(1, 60))
def test_windows_cover_the_range_contiguously_and_respect_the_span(hours: int, span_days: int) -> None:
    start, end, span = T0 - timedelta(hours=hours), T0, timedelta(days=span_days)
    windows = plan.split_windows(start, end, span)
    assert windows[0][0] == start and windows[-1][1] == max(start, end)
    for (_, b), (c, _) in pairwise(windows):
        assert b == c  # shared, inclusive bound: nothing falls between windows
    assert all(b - a <= span for a, b in windows)


def test_incremental_starts_at_watermark_minus_overlap() -> None:
    wm = T0 - timedelta(hours=1)
    assert plan.order_start("incremental", wm, T0, timedelta(minutes=10), timedelta(days=365)) == wm - timedelta(
        minutes=10
    )
    # no watermark yet, or full mode: the whole horizon
    assert plan.order_start("incremental", None, T0, timedelta(minutes=10), timedelta(days=90)) == T0 - timedelta(
        days=90
    )
    assert plan.order_start("full", wm, T0, timedelta(minutes=10), timedelta(days=90)) == T0 - timedelta(days=90)
    # a very old watermark is capped by the horizon
    assert plan.order_start(
        "incremental", T0 - timedelta(days=900), T0, timedelta(0), timedelta(days=90)
    ) == T0 - timedelta(days=90)


def test_full_mode_reads_back_to_the_horizon_in_month_windows() -> None:
    p = plan.plan_orders("full", None, None, T0, timedelta(minutes=10), timedelta(days=365), MONTH, 100)
    assert len(p.windows) == 13 and (p.first_window, p.first_page) == (0, 1)


def test_orders_resume_after_the_last_committed_page() -> None:
    p = plan.plan_orders("full", None, None, T0, timedelta(minutes=10), timedelta(days=365), MONTH, 100)
    cp = plan.orders_checkpoint("full", p, window=4, page=7, per_page=100)
    later = T0 + timedelta(hours=3)
    resumed = plan.plan_orders("full", T0, cp, later, timedelta(minutes=10), timedelta(days=365), MONTH, 100)
    assert resumed.windows == p.windows and (resumed.first_window, resumed.first_page) == (4, 8)
    # read with another page size, page 8 would start elsewhere: the window is re-read
    resized = plan.plan_orders("full", T0, cp, later, timedelta(minutes=10), timedelta(days=365), MONTH, 50)
    assert resized.windows == p.windows and (resized.first_window, resized.first_page) == (4, 1)
    # a checkpoint of the other mode is not resumed
    fresh = plan.plan_orders("incremental", T0, cp, later, timedelta(minutes=10), timedelta(days=365), MONTH, 100)
    assert (fresh.first_window, fresh.first_page) == (0, 1) and fresh.end == later


def test_offers_resume() -> None:
    assert plan.offers_resume(None, T0, 100) == (1, T0)
    cp = plan.offers_checkpoint(9, T0 - timedelta(hours=1), 100)
    assert plan.offers_resume(cp, T0, 100) == (10, T0 - timedelta(hours=1))
    # another page size: the same scan (its start kept, so nothing is marked missing
    # wrongly) from page 1, never from an offset that would skip offers
    assert plan.offers_resume(cp, T0, 50) == (1, T0 - timedelta(hours=1))


def test_api_dates_are_marketplace_local_time() -> None:
    tz = ZoneInfo("Europe/Bucharest")
    moment = parse_api_date("2026-07-01 12:00:00", tz)
    assert moment.astimezone(UTC) == datetime(2026, 7, 1, 9, 0, tzinfo=UTC)  # EEST = UTC+3
    assert format_api_date(datetime(2026, 1, 1, 10, 0, tzinfo=UTC), tz) == "2026-01-01 12:00:00"


def test_offer_accepts_loose_types_and_hashes_content() -> None:
    raw = {
        "id": "123",
        "sale_price": "42.0100",
        "general_stock": "5",
        "status": 1,
        "part_number_key": "",
        "stock": [{"warehouse_id": 1, "value": 5}],
        "category_id": [],
    }
    row = OfferRow.from_api(raw)
    assert (row.id, row.sale_price, row.general_stock, row.category_id) == (123, Decimal("42.0100"), 5, None)
    assert OfferRow.from_api(dict(reversed(raw.items()))).content_hash == row.content_hash
    assert OfferRow.from_api({**raw, "general_stock": "6"}).content_hash != row.content_hash


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ({"name": "no id"}, "missing or non-integer id"),
        ({"id": "abc"}, "missing or non-integer id"),
        ({"id": True}, "missing or non-integer id"),
        ({"id": 1, "sale_price": "12,5"}, "sale_price is not a number"),
        ({"id": 1, "general_stock": "many"}, "general_stock is not an integer"),
        ({"id": -4}, "id out of range"),
    ],
)
def test_invalid_offers_name_their_reason(raw: dict, reason: str) -> None:
    with pytest.raises(InvalidRecord, match=reason):
        OfferRow.from_api(raw)


def test_order_ids_above_2_31_and_dates() -> None:
    tz = ZoneInfo("Europe/Bucharest")
    row = OrderRow.from_api(
        {
            "id": 3_000_000_123,
            "status": "4",
            "type": 3,
            "is_complete": 1,
            "date": "2026-01-02 10:00:00",
            "modified": "2026-01-03 11:00:00",
        },
        tz,
    )
    assert row.id == 3_000_000_123 and row.status == 4 and row.is_complete is True
    assert row.modified == datetime(2026, 1, 3, 9, 0, tzinfo=UTC)
    with pytest.raises(InvalidRecord, match="modified is not a YYYY-mm-dd"):
        OrderRow.from_api({"id": 1, "modified": "03/01/2026"}, tz)
