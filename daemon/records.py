"""Offers and orders as the API sends them, checked and typed for the store.

The API is loose (numbers as strings, `[]` for an empty object); a record that
cannot be typed raises InvalidRecord naming its id, so one bad record is counted
and logged instead of poisoning its page.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

API_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class InvalidRecord(ValueError):
    def __init__(self, record_id: Any, reason: str) -> None:
        super().__init__(f"record {record_id!r}: {reason}")
        self.record_id = record_id
        self.reason = reason


def canonical_json(raw: Mapping[str, Any]) -> str:
    return json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(canonical: str) -> bytes:
    return hashlib.blake2b(canonical.encode("utf-8"), digest_size=16).digest()


def _id(raw: Mapping[str, Any]) -> int:
    value = raw.get("id")
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidRecord(value, "missing or non-integer id") from None
    if not 0 < number < 2**63:
        raise InvalidRecord(value, "id out of range")
    return number


def _int(raw: Mapping[str, Any], key: str, record_id: int) -> int | None:
    value = raw.get(key)
    if value is None or value == "" or value == []:
        return None
    try:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise InvalidRecord(record_id, f"{key} is not an integer: {value!r}") from None


def _decimal(raw: Mapping[str, Any], key: str, record_id: int) -> Decimal | None:
    value = raw.get(key)
    if value is None or value == "" or value == []:
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRecord(record_id, f"{key} is not a number: {value!r}") from None
    if not number.is_finite():
        raise InvalidRecord(record_id, f"{key} is not finite")
    return number


def _text(raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None or value == []:
        return None
    return value if isinstance(value, str) else str(value)


def parse_api_date(value: Any, tz: ZoneInfo) -> datetime:
    """`YYYY-mm-dd HH:MM:SS` in the marketplace's local time -> an aware datetime."""
    return datetime.strptime(str(value), API_DATE_FORMAT).replace(tzinfo=tz)


def format_api_date(moment: datetime, tz: ZoneInfo) -> str:
    return moment.astimezone(tz).strftime(API_DATE_FORMAT)


@dataclass(frozen=True, slots=True)
class OfferRow:
    id: int
    part_number: str | None
    part_number_key: str | None
    name: str | None
    brand: str | None
    category_id: int | None
    status: int | None
    sale_price: Decimal | None
    recommended_price: Decimal | None
    min_sale_price: Decimal | None
    max_sale_price: Decimal | None
    currency: str | None
    vat_id: int | None
    general_stock: int | None
    estimated_stock: int | None
    raw: str
    content_hash: bytes

    @classmethod
    def from_api(cls, raw: Mapping[str, Any]) -> OfferRow:
        if not isinstance(raw, Mapping):
            raise InvalidRecord(None, "not an object")
        rid = _id(raw)
        canonical = canonical_json(raw)
        return cls(
            id=rid,
            part_number=_text(raw, "part_number"),
            part_number_key=_text(raw, "part_number_key"),
            name=_text(raw, "name"),
            brand=_text(raw, "brand"),
            category_id=_int(raw, "category_id", rid),
            status=_int(raw, "status", rid),
            sale_price=_decimal(raw, "sale_price", rid),
            recommended_price=_decimal(raw, "recommended_price", rid),
            min_sale_price=_decimal(raw, "min_sale_price", rid),
            max_sale_price=_decimal(raw, "max_sale_price", rid),
            currency=_text(raw, "currency"),
            vat_id=_int(raw, "vat_id", rid),
            general_stock=_int(raw, "general_stock", rid),
            estimated_stock=_int(raw, "estimated_stock", rid),
            raw=canonical,
            content_hash=content_hash(canonical),
        )


@dataclass(frozen=True, slots=True)
class OrderRow:
    id: int
    status: int | None
    type: int | None
    is_complete: bool | None
    payment_mode_id: int | None
    date: datetime | None
    modified: datetime | None
    raw: str
    content_hash: bytes

    @classmethod
    def from_api(cls, raw: Mapping[str, Any], tz: ZoneInfo) -> OrderRow:
        if not isinstance(raw, Mapping):
            raise InvalidRecord(None, "not an object")
        rid = _id(raw)
        dates = {}
        for key in ("date", "modified"):
            value = raw.get(key)
            try:
                dates[key] = parse_api_date(value, tz) if value not in (None, "") else None
            except ValueError:
                raise InvalidRecord(rid, f"{key} is not a YYYY-mm-dd HH:MM:SS date: {value!r}") from None
        complete = _int(raw, "is_complete", rid)
        canonical = canonical_json(raw)
        return cls(
            id=rid,
            status=_int(raw, "status", rid),
            type=_int(raw, "type", rid),
            is_complete=None if complete is None else bool(complete),
            payment_mode_id=_int(raw, "payment_mode_id", rid),
            date=dates["date"],
            modified=dates["modified"],
            raw=canonical,
            content_hash=content_hash(canonical),
        )
