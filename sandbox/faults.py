"""Fault specs: what to break, on which requests, how many times.

A fault is selected by resource ("offers", "orders" or "*"), optionally by
page (`currentPage`) and/or request number (the Nth request of the account
that passed the rate limiter, 1-based), and fires `times` times (0 or None:
forever). The server decides what each kind does; this module only describes
faults, loads them and picks the one that applies to a request.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

KINDS = frozenset(
    {
        "status",  # HTTP `status` (500/502/503/504) with an HTML or JSON `body`
        "hang",  # sleep `seconds`, then answer normally
        "reset",  # close the connection without an HTTP answer
        "malformed",  # 200 with truncated JSON
        "is_error",  # 200 with isError true and `message`
        "auth",  # 403 "You are not allowed to use this API."
        "throttle",  # forced 429
        "repeat_page",  # read page N answers page N-1's results
        "lying_count",  # count reports `items` / `pages`
        "cap_items",  # read caps itemsPerPage to `limit`
        "endless",  # read pages past the end are full pages of fresh records
        "empty_page",  # read page N answers `results: []` (as if past the end) although it is not
    }
)
READ_ONLY_KINDS = frozenset({"repeat_page", "cap_items", "endless", "empty_page"})
RESOURCES = frozenset({"offers", "orders", "*"})
ALL_ACCOUNTS = "*"


class FaultSpecError(ValueError):
    """A fault spec that cannot be understood."""


@dataclass(frozen=True)
class Request:
    """What fault matching needs to know about one API request."""

    resource: str  # "offers" | "orders"
    action: str  # "read" | "count"
    number: int  # 1-based request number of the account
    page: int | None  # currentPage, None if the body could not be parsed
    past_end: bool = False  # a read page beyond the last record


@dataclass
class Fault:
    kind: str
    resource: str = "*"
    page: int | None = None
    request: int | None = None
    times: int | None = 1
    status: int = 503
    body: str = "html"
    seconds: float = 3600.0
    message: str = "Sandbox fault: service temporarily unavailable"
    items: int | None = None
    pages: int | None = None
    limit: int = 10
    fired: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultSpecError(f"unknown fault kind {self.kind!r}; expected one of {sorted(KINDS)}")
        if self.resource not in RESOURCES:
            raise FaultSpecError(f"unknown fault resource {self.resource!r}; expected offers, orders or *")
        if self.body not in ("html", "json"):
            raise FaultSpecError(f"fault body must be 'html' or 'json', not {self.body!r}")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise FaultSpecError(f"status fault needs an HTTP error status, not {self.status}")
        if self.kind == "cap_items" and self.limit < 1:
            raise FaultSpecError("cap_items needs limit >= 1")

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> Fault:
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(spec) - known
        if unknown:
            raise FaultSpecError(f"unknown fault keys {sorted(unknown)}")
        if "kind" not in spec:
            raise FaultSpecError("a fault needs a 'kind'")
        try:
            return cls(**spec)
        except TypeError as exc:
            raise FaultSpecError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.times > 0 and self.fired >= self.times

    def applies(self, req: Request) -> bool:
        if self.exhausted or self.resource not in ("*", req.resource):
            return False
        if self.request is not None and self.request != req.number:
            return False
        if self.page is not None and self.page != req.page:
            return False
        if self.kind in READ_ONLY_KINDS and req.action != "read":
            return False
        if self.kind == "lying_count" and req.action != "count":
            return False
        if self.kind == "repeat_page" and (req.page or 1) < 2:
            return False
        return self.kind != "endless" or req.past_end


class FaultPlan:
    """The faults of one account, in the order they were added."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []

    def add(self, faults: list[Fault]) -> None:
        self.faults.extend(faults)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, req: Request) -> Fault | None:
        """The first fault that applies to `req`, counted as fired."""
        for fault in self.faults:
            if fault.applies(req):
                fault.fired += 1
                return fault
        return None


def parse_faults(specs: Any) -> list[Fault]:
    """A JSON list of fault specs (or one spec) as Fault objects."""
    if isinstance(specs, dict):
        specs = [specs]
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise FaultSpecError("faults must be a list of objects")
    return [Fault.from_dict(spec) for spec in specs]


def load_fault_file(path: Path) -> dict[str, list[Fault]]:
    """Faults per account name ("*" = every account) from a JSON or TOML file.

    JSON: a list of specs, or {"faults": [...]}. TOML: [[faults]] tables.
    Each spec may carry "account" (default "*").
    """
    text = path.read_text(encoding="utf-8")
    try:
        doc: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise FaultSpecError(f"{path}: {exc}") from exc
    if isinstance(doc, dict):
        doc = doc.get("faults", [])
    if not isinstance(doc, list) or not all(isinstance(s, dict) for s in doc):
        raise FaultSpecError(f"{path}: expected a list of fault specs")
    by_account: dict[str, list[Fault]] = {}
    for spec in doc:
        spec = dict(spec)
        account = str(spec.pop("account", ALL_ACCOUNTS))
        by_account.setdefault(account, []).append(Fault.from_dict(spec))
    return by_account
