"""The sandbox's in-memory marketplace: accounts, their records, faults and counters.

Everything runs on one event loop and no method awaits, so each call is atomic
with respect to the HTTP handlers.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from sandbox import data
from sandbox.data import Record
from sandbox.faults import FaultPlan
from sandbox.query import DEFAULT_ORDER_TYPE, Query

DEFAULT_TIMEZONE = "Europe/Bucharest"
RESOURCES = ("offers", "orders")
# Plausible next statuses of an order that changes (doc: 4 -> 3/0 within 48 h, returns later).
NEXT_STATUS = {0: (0,), 1: (2, 0), 2: (3, 0), 3: (4,), 4: (5, 3, 0), 5: (5,)}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Login:
    """A seller login the sandbox accepts, and the order type its orders carry."""

    username: str
    password: str
    order_type: int = DEFAULT_ORDER_TYPE


# The sandbox's own accounts: Market.with_default_accounts and `emag-sandbox` without --account.
DEFAULT_LOGINS: Mapping[str, Login] = MappingProxyType(
    {
        "main": Login("main@sandbox.test", "sandbox-main"),
        "fbe": Login("fbe@sandbox.test", "sandbox-fbe", order_type=2),
    }
)


@dataclass
class Stats:
    requests: int = 0  # authenticated API requests, throttled ones included
    admitted: int = 0  # requests past the rate limiter; the Nth is request number N
    throttled: int = 0  # answers with HTTP 429 (limiter or throttle fault)
    auth_failures: int = 0  # known username, wrong password
    routes: Counter[str] = field(default_factory=Counter)  # admitted requests per "resource/action"

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "admitted": self.admitted,
            "throttled": self.throttled,
            "auth_failures": self.auth_failures,
            "routes": dict(self.routes),
        }


class Account:
    """One seller login with its offers and orders (orders kept newest first)."""

    def __init__(
        self,
        name: str,
        username: str,
        password: str,
        *,
        seed: int,
        timezone_name: str = DEFAULT_TIMEZONE,
        order_type: int = 3,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.name = name
        self.username = username
        self.password = password
        self.seed = seed
        self.timezone_name = timezone_name
        self.tz = ZoneInfo(timezone_name)
        self.order_type = order_type
        self.now = now
        self.offers: list[Record] = []
        self.orders: list[Record] = []
        self.faults = FaultPlan()
        self.stats = Stats()
        self.rng = random.Random(f"{seed}:{name}:mutations")

    def info(self) -> dict[str, Any]:
        """Public description (never the password)."""
        return {
            "name": self.name,
            "username": self.username,
            "order_type": self.order_type,
            "timezone": self.timezone_name,
            "offers": len(self.offers),
            "orders": len(self.orders),
        }

    def now_local(self) -> str:
        return data.local_time(self.now(), self.tz)

    def records(self, resource: str) -> list[Record]:
        return self.offers if resource == "offers" else self.orders

    # -- reading ---------------------------------------------------------

    def read(self, resource: str, query: Query) -> tuple[list[Record], int]:
        """The requested page of matching records, and how many records match."""
        matching = [r for r in self.records(resource) if query.match(r)]
        return matching[query.offset : query.offset + query.per_page], len(matching)

    def synthetic_page(self, resource: str, query: Query, total: int) -> list[Record]:
        """A full page of fresh records with new ids, for a page past the end (`endless`)."""
        records = self.records(resource)
        top = max((r["id"] for r in records), default=data.OFFER_ID_BASE)
        first = top + 1 + query.offset - total
        ids = range(first, first + query.per_page)
        if resource == "offers":
            return [data.make_offer(self.seed, self.name, i) for i in ids]
        stamp = self.now_local()
        return [self._make_order(i, stamp) for i in ids]

    def _make_order(self, order_id: int, stamp: str) -> Record:
        return data.make_order(
            self.seed,
            self.name,
            order_id,
            created=stamp,
            modified=stamp,
            order_type=self.order_type,
            offers=self.offers,
        )

    # -- mutations -------------------------------------------------------

    def _sample(self, records: list[Record], n: int, rng: random.Random | None) -> list[Record]:
        return (rng or self.rng).sample(records, min(max(n, 0), len(records)))

    def mutate_offers(self, n: int, rng: random.Random | None = None) -> list[int]:
        """Change the price and stock of n offers; returns their ids."""
        rng = rng or self.rng
        changed = self._sample(self.offers, n, rng)
        for offer in changed:
            low, high = data.to_cents(offer["min_sale_price"]), data.to_cents(offer["max_sale_price"])
            price = data.to_cents(offer["sale_price"]) * rng.randint(90, 110) // 100
            offer["sale_price"] = data.money(min(max(price, low), high))
            for item in offer["stock"]:
                item["value"] = rng.randint(0, 40)
            offer["general_stock"] = sum(item["value"] for item in offer["stock"])
            offer["estimated_stock"] = offer["general_stock"]
        return [offer["id"] for offer in changed]

    def add_offers(self, n: int) -> list[int]:
        top = max((o["id"] for o in self.offers), default=data.OFFER_ID_BASE)
        new_ids = [top + k for k in range(1, n + 1)]
        self.offers.extend(data.make_offer(self.seed, self.name, i) for i in new_ids)
        return new_ids

    def remove_offers(self, n: int, rng: random.Random | None = None) -> list[int]:
        gone = {offer["id"] for offer in self._sample(self.offers, n, rng)}
        self.offers = [offer for offer in self.offers if offer["id"] not in gone]
        return sorted(gone)

    def mutate_orders(self, n: int, rng: random.Random | None = None) -> list[int]:
        """Move n orders to a plausible next status and bump `modified` to now (local)."""
        rng = rng or self.rng
        stamp = self.now_local()
        changed = self._sample(self.orders, n, rng)
        for order in changed:
            order["status"] = rng.choice(NEXT_STATUS[order["status"]])
            order["modified"] = max(stamp, order["date"])
            if order["status"] == 0:
                reason_id, reason = rng.choice(data.CANCEL_REASONS)
                order["reason_cancellation"] = {"id": reason_id, "name": reason}
            else:
                order.pop("reason_cancellation", None)
        return [order["id"] for order in changed]

    def add_orders(self, n: int) -> list[int]:
        """n new orders created now, with ids above every existing one."""
        stamp = self.now_local()
        top = max((o["id"] for o in self.orders), default=data.ORDER_ID_BASE)
        new_ids = [top + k * data.ORDER_ID_STRIDE for k in range(1, n + 1)]
        self.orders.extend(self._make_order(i, stamp) for i in new_ids)
        self.orders.sort(key=lambda o: (o["date"], o["id"]), reverse=True)
        return new_ids

    def apply_mutations(self, plan: dict[str, Any]) -> dict[str, list[int]]:
        """Run the mutations named in `plan` ({"mutate_offers": n, ...}); ids touched per mutation."""
        actions: dict[str, Callable[[int], list[int]]] = {
            "mutate_offers": self.mutate_offers,
            "add_offers": self.add_offers,
            "remove_offers": self.remove_offers,
            "mutate_orders": self.mutate_orders,
            "add_orders": self.add_orders,
        }
        unknown = set(plan) - set(actions)
        if unknown:
            raise ValueError(f"unknown mutations {sorted(unknown)}; expected {sorted(actions)}")
        for key, n in plan.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise ValueError(f"{key} must be a non-negative integer")
        return {key: actions[key](n) for key, n in plan.items()}


class Market:
    """All sandbox accounts. Records are generated from `seed` relative to `base_time`."""

    def __init__(
        self,
        *,
        seed: int = 1,
        base_time: datetime | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.seed = seed
        self.now = now
        self.base_time = base_time or now()
        if self.base_time.tzinfo is None:
            raise ValueError("base_time must be timezone-aware")
        self.accounts: dict[str, Account] = {}

    @classmethod
    def with_default_accounts(
        cls,
        *,
        offers: int = 1275,
        orders: int = 500,
        seed: int = 1,
        base_time: datetime | None = None,
        now: Callable[[], datetime] = utc_now,
    ) -> Market:
        """The accounts of DEFAULT_LOGINS: `main` (order type 3) and `fbe` (order type 2)."""
        market = cls(seed=seed, base_time=base_time, now=now)
        for name, login in DEFAULT_LOGINS.items():
            market.add_account(
                name, login.username, login.password, offers=offers, orders=orders, order_type=login.order_type
            )
        return market

    def add_account(
        self,
        name: str,
        username: str,
        password: str,
        *,
        offers: int = 0,
        orders: int = 0,
        order_type: int = 3,
        timezone_name: str = DEFAULT_TIMEZONE,
    ) -> Account:
        if name in self.accounts:
            raise ValueError(f"account {name!r} already exists")
        if self.by_username(username) is not None:
            raise ValueError(f"username {username!r} is already used")
        account = Account(
            name, username, password, seed=self.seed, timezone_name=timezone_name, order_type=order_type, now=self.now
        )
        account.offers = data.generate_offers(self.seed, name, offers)
        account.orders = data.generate_orders(
            self.seed,
            name,
            orders,
            base_time=self.base_time,
            tz=account.tz,
            order_type=order_type,
            offers=account.offers,
        )
        self.accounts[name] = account
        return account

    def account(self, name: str) -> Account:
        return self.accounts[name]

    def by_username(self, username: str) -> Account | None:
        return next((a for a in self.accounts.values() if a.username == username), None)
