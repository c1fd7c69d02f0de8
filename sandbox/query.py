"""Request bodies into paging and filters, the way the eMAG API reads them.

Pure functions: bytes in, a Query (page, page size, record predicate) out, or
BadRequest with the message the API would put in an isError answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from sandbox.data import LOCAL_FORMAT, Record

DEFAULT_ITEMS_PER_PAGE = 100
DEFAULT_ORDER_TYPE = 3
MAX_DATE_WINDOW = timedelta(days=31)
OFFER_INT_FILTERS = ("id", "status")
OFFER_STR_FILTERS = ("part_number", "part_number_key")
ORDER_INT_FILTERS = ("id", "status", "type", "payment_mode_id", "is_complete")
DATE_FILTERS = (("created", "date"), ("modified", "modified"))
_FORM_KEY = re.compile(r"^data\[(\w+)\](\[\])?$")


class BadRequest(Exception):
    """The request cannot be served; the message goes into an isError answer."""


@dataclass(frozen=True)
class Query:
    page: int
    per_page: int
    match: Callable[[Record], bool]

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page


def parse_params(raw: bytes, content_type: str) -> dict[str, Any]:
    """Paging and filters from a JSON body or a form body.

    JSON: parameters at the top level or under "data" (an object or a JSON
    string). Form: `data` holding a JSON string, or PHP-style `data[key]=v`
    and `data[key][]=v` fields.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("Request body is not valid UTF-8.") from exc
    if not text.strip():
        return {}
    if content_type == "application/x-www-form-urlencoded":
        params = _parse_form(text)
    else:
        params = _json_object(text)
    data = params.get("data")
    if isinstance(data, str):
        data = _json_object(data)
    if isinstance(data, dict):
        params = {**{k: v for k, v in params.items() if k != "data"}, **data}
    elif data is not None:
        raise BadRequest("Invalid data parameter.")
    return params


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadRequest("Invalid JSON in request body.") from exc
    if not isinstance(value, dict):
        raise BadRequest("Request body must be a JSON object.")
    return value


def _parse_form(text: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        bracket = _FORM_KEY.match(key)
        if bracket is None:
            params[key] = value
        elif bracket.group(2):
            params.setdefault(bracket.group(1), []).append(value)
        else:
            params[bracket.group(1)] = value
    return params


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise BadRequest(f"Invalid value for {name}.")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise BadRequest(f"Invalid value for {name}.")


def _int_set(name: str, value: Any) -> frozenset[int]:
    values = value if isinstance(value, list) else [value]
    return frozenset(_int(name, v) for v in values)


def _paging(params: dict[str, Any], max_items: int) -> tuple[int, int]:
    page = _int("currentPage", params.get("currentPage", 1))
    per_page = _int("itemsPerPage", params.get("itemsPerPage", DEFAULT_ITEMS_PER_PAGE))
    if page < 1 or per_page < 1:
        raise BadRequest("currentPage and itemsPerPage must be positive.")
    return page, min(per_page, max_items)


def _predicate(
    int_filters: dict[str, frozenset[int]],
    str_filters: dict[str, str],
    ranges: list[tuple[str, str, str]],
) -> Callable[[Record], bool]:
    def match(record: Record) -> bool:
        return (
            all(record.get(field) in allowed for field, allowed in int_filters.items())
            and all(record.get(field) == wanted for field, wanted in str_filters.items())
            and all(low <= record[field] <= high for field, low, high in ranges)
        )

    return match


def offer_query(params: dict[str, Any], max_items: int) -> Query:
    page, per_page = _paging(params, max_items)
    ints = {name: _int_set(name, params[name]) for name in OFFER_INT_FILTERS if name in params}
    strs = {name: str(params[name]) for name in OFFER_STR_FILTERS if name in params}
    return Query(page, per_page, _predicate(ints, strs, []))


def _stamp(name: str, value: Any) -> datetime:
    try:
        return datetime.strptime(str(value), LOCAL_FORMAT)
    except ValueError as exc:
        raise BadRequest(f"Invalid date format for {name}; expected YYYY-mm-dd HH:ii:ss.") from exc


def _date_range(params: dict[str, Any], prefix: str) -> tuple[str, str] | None:
    after_key, before_key = f"{prefix}After", f"{prefix}Before"
    if before_key in params and after_key not in params:
        raise BadRequest(f"{before_key} can only be used together with {after_key}.")
    if after_key not in params:
        return None
    after = _stamp(after_key, params[after_key])
    if before_key not in params:
        return after.strftime(LOCAL_FORMAT), "9999-12-31 23:59:59"
    before = _stamp(before_key, params[before_key])
    if before - after > MAX_DATE_WINDOW:
        raise BadRequest(f"The interval between {after_key} and {before_key} must be at most one month.")
    return after.strftime(LOCAL_FORMAT), before.strftime(LOCAL_FORMAT)


def order_query(params: dict[str, Any], max_items: int) -> Query:
    """Orders; `type` defaults to 3 (fulfilled by seller) as on the real API."""
    page, per_page = _paging(params, max_items)
    ints = {name: _int_set(name, params[name]) for name in ORDER_INT_FILTERS if name in params}
    ints.setdefault("type", frozenset({DEFAULT_ORDER_TYPE}))
    ranges = []
    for prefix, field in DATE_FILTERS:
        bounds = _date_range(params, prefix)
        if bounds is not None:
            ranges.append((field, *bounds))
    return Query(page, per_page, _predicate(ints, {}, ranges))
