"""Deterministic, realistic eMAG offer and order records.

Every record is built from its own random generator seeded with
(seed, account, kind, id), so the same seed and account always give
byte-identical records, and any single record can be rebuilt on its own
(the `endless` fault and `add_offers` rely on that).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

Record = dict[str, Any]

LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
OFFER_ID_BASE = 10_000
ORDER_ID_BASE = 3_000_000_000
SHARED_ORDER_IDS = 3  # the oldest orders of every account reuse these ids
ORDER_ID_STRIDE = 97
HISTORY_DAYS = 90
CURRENCY = "RON"
WAREHOUSES = (1, 2)
ORDER_STATUSES = (0, 1, 2, 3, 4, 5)
ORDER_STATUS_WEIGHTS = (8, 10, 15, 12, 50, 5)

BRANDS = ("Philips", "Bosch", "Samsung", "Tefal", "Xiaomi", "Braun", "Lenovo", "Nike", "Lego", "Gorenje")
ADJECTIVES = ("Compact", "Pro", "Classic", "Smart", "Ultra", "Eco", "Mini", "Max")
NOUNS = ("Blender", "Kettle", "Headphones", "Vacuum cleaner", "Toaster", "Monitor", "Sneakers", "Drill")
COLORS = ("Black", "White", "Silver", "Red", "Blue")
CATEGORY_IDS = (506, 1284, 2571, 3310, 4402, 5987)
PAYMENT_MODES = (1, 2, 3)  # cash on delivery, bank transfer, card online
DELIVERY_MODES = ("courier", "pickup")
CANCEL_REASONS = ((1, "Lipsa stoc"), (2, "Anulata de client"), (15, "Livrare esuata"))
PNK_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CUSTOMER_NAMES = ("Ion Popescu", "Maria Ionescu", "Andrei Georgescu", "Elena Dumitru", "Mihai Stan")


def record_rng(seed: int, account: str, kind: str, key: int | str) -> random.Random:
    """The generator for one record; string seeds are hashed stably (sha512)."""
    return random.Random(f"{seed}:{account}:{kind}:{key}")


def money(cents: int) -> str:
    """Cents as the API's 4-decimal string: 4201 -> "42.0100"."""
    return f"{cents // 100}.{cents % 100:02d}00"


def to_cents(amount: str) -> int:
    units, _, decimals = amount.partition(".")
    return int(units) * 100 + int((decimals + "00")[:2])


def local_time(moment: datetime, tz: ZoneInfo) -> str:
    """An aware datetime as the API's zone-less local-time string."""
    return moment.astimezone(tz).strftime(LOCAL_FORMAT)


def part_number(account: str, offer_id: int) -> str:
    return f"SKU-{account.upper()}-{offer_id:06d}"


def _pnk(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return ""
    return "".join(rng.choice(PNK_ALPHABET) for _ in range(9))


def _ean(rng: random.Random) -> str:
    digits = [rng.randint(0, 9) for _ in range(12)]
    check = (10 - sum(d * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return "".join(map(str, digits)) + str(check)


def make_offer(seed: int, account: str, offer_id: int) -> Record:
    rng = record_rng(seed, account, "offer", offer_id)
    brand = rng.choice(BRANDS)
    sale = rng.randint(500, 250_000)
    stock = [{"warehouse_id": w, "value": rng.choice((0, rng.randint(1, 40)))} for w in WAREHOUSES]
    general = sum(item["value"] for item in stock)
    return {
        "id": offer_id,
        "part_number": part_number(account, offer_id),
        "part_number_key": _pnk(rng),
        "name": f"{brand} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.randint(100, 999)}",
        "brand": brand,
        "category_id": rng.choice(CATEGORY_IDS),
        "status": rng.choices((1, 0, 2), weights=(85, 10, 5))[0],
        "sale_price": money(sale),
        "recommended_price": money(sale * rng.randint(100, 130) // 100),
        "min_sale_price": money(sale * 80 // 100),
        "max_sale_price": money(sale * 150 // 100),
        "currency": CURRENCY,
        "vat_id": rng.choice((1, 4)),
        "general_stock": general,
        "estimated_stock": max(0, general - rng.randint(0, 3)),
        "stock": stock,
        "handling_time": [{"warehouse_id": w, "value": rng.randint(0, 3)} for w in WAREHOUSES],
        "ean": [_ean(rng)],
        "images": [
            {"url": f"https://sandbox.emag.test/images/{offer_id}-{n}.jpg", "display_type": 1 if n == 0 else 2}
            for n in range(rng.randint(1, 3))
        ],
        "characteristics": [
            {"id": 6506, "value": rng.choice(COLORS)},
            {"id": 8292, "value": f"{rng.randint(1, 50)} cm"},
        ],
        "offer_validation_status": {"value": 1, "description": "Valid"},
        "validation_status": [{"value": 9, "description": "Approved documentation"}],
        "buy_button_rank": rng.randint(1, 5),
        "number_of_offers": rng.randint(1, 8),
    }


def generate_offers(seed: int, account: str, count: int) -> list[Record]:
    """`count` offers with unique ascending ids (with small gaps)."""
    rng = record_rng(seed, account, "offer-ids", count)
    offers: list[Record] = []
    offer_id = OFFER_ID_BASE
    for _ in range(count):
        offer_id += rng.randint(1, 4)
        offers.append(make_offer(seed, account, offer_id))
    return offers


def _product(rng: random.Random, line: int, offer: Record) -> Record:
    return {
        "id": line,
        "product_id": offer["id"],
        "part_number": offer["part_number"],
        "ext_part_number": offer["part_number"],
        "part_number_key": offer["part_number_key"],
        "name": offer["name"],
        "quantity": rng.choices((1, 2, 3), weights=(80, 15, 5))[0],
        "sale_price": offer["sale_price"],
        "currency": CURRENCY,
        "vat": "0.19",
        "status": 1,
    }


def make_order(
    seed: int,
    account: str,
    order_id: int,
    *,
    created: str,
    modified: str,
    order_type: int,
    offers: Sequence[Record],
) -> Record:
    """One order; `created`/`modified` are local-time strings, `offers` the catalogue it buys from."""
    rng = record_rng(seed, account, "order", order_id)
    status = rng.choices(ORDER_STATUSES, weights=ORDER_STATUS_WEIGHTS)[0]
    lines = []
    for n in range(rng.choices((1, 2, 3), weights=(70, 20, 10))[0]):
        offer = rng.choice(offers) if offers else make_offer(seed, account, OFFER_ID_BASE + rng.randint(1, 999))
        lines.append(_product(rng, order_id * 10 + n, offer))
    total = sum(to_cents(line["sale_price"]) * line["quantity"] for line in lines)
    payment_mode = rng.choice(PAYMENT_MODES)
    customer_id = rng.randint(1_000_000, 9_999_999)
    shipping = rng.choice((0, 1599, 1999))
    order: Record = {
        "id": order_id,
        "status": status,
        "type": order_type,
        "is_complete": 1 if status in (3, 4) else rng.randint(0, 1),
        "date": created,
        "modified": modified,
        "payment_mode_id": payment_mode,
        "payment_status": 1 if payment_mode != 1 or status == 4 else 0,
        "delivery_mode": rng.choice(DELIVERY_MODES),
        "customer": {
            "id": customer_id,
            "name": rng.choice(CUSTOMER_NAMES),
            "email": f"{zlib.crc32(f'{seed}:{customer_id}'.encode()):08x}{rng.getrandbits(96):024x}",
            "phone_1": f"07{rng.randint(10_000_000, 99_999_999)}",
            "billing_city": rng.choice(("Bucuresti", "Cluj-Napoca", "Iasi", "Timisoara")),
            "shipping_country": "RO",
        },
        "products": lines,
        "vouchers": [],
        "shipping_tax": money(shipping),
        "cashed_co": money(total + shipping) if payment_mode == 3 else "0.0000",
        "cashed_cod": money(total + shipping) if payment_mode == 1 and status == 4 else "0.0000",
    }
    if status == 0:
        reason_id, reason = rng.choice(CANCEL_REASONS)
        order["reason_cancellation"] = {"id": reason_id, "name": reason}
    return order


def generate_orders(
    seed: int,
    account: str,
    count: int,
    *,
    base_time: datetime,
    tz: ZoneInfo,
    order_type: int,
    offers: Sequence[Record],
) -> list[Record]:
    """`count` orders spread over the HISTORY_DAYS before `base_time` (aware), newest first.

    Ids grow with the creation date; the SHARED_ORDER_IDS oldest orders of every
    account share their ids, so (account, id) is the only safe key.
    """
    rng = record_rng(seed, account, "order-dates", count)
    span_s = HISTORY_DAYS * 86_400
    ages = sorted((rng.randint(0, span_s) for _ in range(count)), reverse=True)
    offset = zlib.crc32(account.encode()) % ORDER_ID_STRIDE
    orders = []
    for n, age_s in enumerate(ages):
        created = base_time - timedelta(seconds=age_s)
        modified = created + timedelta(seconds=rng.randint(0, min(age_s, 20 * 86_400)))
        if n < SHARED_ORDER_IDS:
            order_id = ORDER_ID_BASE + n + 1
        else:
            order_id = ORDER_ID_BASE + 1000 + n * ORDER_ID_STRIDE + offset
        orders.append(
            make_order(
                seed,
                account,
                order_id,
                created=local_time(created, tz),
                modified=local_time(modified, tz),
                order_type=order_type,
                offers=offers,
            )
        )
    orders.reverse()
    return orders
