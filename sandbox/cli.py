"""`emag-sandbox`: serve a sandbox marketplace until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio

from sandbox.faults import ALL_ACCOUNTS, FaultSpecError, load_fault_file
from sandbox.market import DEFAULT_LOGINS, DEFAULT_TIMEZONE, Market
from sandbox.ratelimit import MODES
from sandbox.runner import Sandbox

log = logging.getLogger("sandbox")

MUTATIONS_PER_TICK = {"mutate_offers": 5, "mutate_orders": 3, "add_orders": 1}


@dataclass(frozen=True)
class AccountArg:
    name: str
    username: str
    password: str
    order_type: int = 3
    timezone: str = DEFAULT_TIMEZONE


def parse_account(text: str) -> AccountArg:
    """NAME:USERNAME:PASSWORD[:ORDER_TYPE[:TIMEZONE]]"""
    parts = text.split(":")
    if not 3 <= len(parts) <= 5 or not all(parts[:3]):
        raise argparse.ArgumentTypeError(f"expected NAME:USERNAME:PASSWORD[:ORDER_TYPE[:TIMEZONE]], got {text!r}")
    try:
        order_type = int(parts[3]) if len(parts) > 3 else 3
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"order type must be an integer in {text!r}") from exc
    name, username, password = parts[:3]
    account = AccountArg(name, username, password, order_type, *parts[4:])
    try:
        ZoneInfo(account.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"unknown timezone {account.timezone!r}") from exc
    return account


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emag-sandbox", description="A local eMAG Marketplace API.")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default 8080)")
    parser.add_argument("--offers", type=int, default=1275, help="offers per account")
    parser.add_argument("--orders", type=int, default=500, help="orders per account")
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument(
        "--account",
        dest="accounts",
        action="append",
        type=parse_account,
        metavar="NAME:USERNAME:PASSWORD[:ORDER_TYPE[:TIMEZONE]]",
        help="an account (repeatable); default: "
        + " and ".join(f"{name} (type {login.order_type})" for name, login in DEFAULT_LOGINS.items()),
    )
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="uniform +/- jitter on the latency")
    parser.add_argument("--rate-limit", choices=MODES, default="sliding", help="rate-limit mode")
    parser.add_argument("--faults", type=Path, metavar="FILE", help="fault specs (.json or .toml)")
    parser.add_argument("--mutate-every", type=float, metavar="SECONDS", help="mutate a few records periodically")
    parser.add_argument("--ready-file", type=Path, metavar="PATH", help="write the base URL here once listening")
    return parser


def build_market(args: argparse.Namespace) -> Market:
    market = Market(seed=args.seed)
    defaults = [
        AccountArg(name, login.username, login.password, login.order_type) for name, login in DEFAULT_LOGINS.items()
    ]
    for account in args.accounts or defaults:
        market.add_account(
            account.name,
            account.username,
            account.password,
            offers=args.offers,
            orders=args.orders,
            order_type=account.order_type,
            timezone_name=account.timezone,
        )
    return market


def install_faults(market: Market, path: Path) -> None:
    for name, faults in load_fault_file(path).items():
        if name != ALL_ACCOUNTS and name not in market.accounts:
            raise FaultSpecError(f"{path}: no account {name!r}")
        targets = market.accounts.values() if name == ALL_ACCOUNTS else [market.account(name)]
        for account in targets:
            account.faults.add([replace(fault) for fault in faults])


def write_ready_file(path: Path, base_url: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(base_url + "\n", encoding="utf-8")
    os.replace(tmp, path)


async def mutate_forever(market: Market, every_s: float) -> None:
    while True:
        await anyio.sleep(every_s)
        for account in market.accounts.values():
            account.apply_mutations(MUTATIONS_PER_TICK)


async def serve(args: argparse.Namespace, market: Market) -> None:
    sandbox = Sandbox(
        market,
        host=args.host,
        port=args.port,
        latency_s=args.latency_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        rate_mode=args.rate_limit,
    )
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with sandbox, anyio.create_task_group() as tg:
            accounts = ",".join(
                f"{a.name}:{a.username}:type={a.order_type}:tz={a.timezone_name}" for a in market.accounts.values()
            )
            log.info(
                "sandbox.started base_url=%s control_url=%s accounts=%s rate_limit=%s latency_ms=%g jitter_ms=%g",
                sandbox.base_url,
                sandbox.control_url,
                accounts,
                args.rate_limit,
                args.latency_ms,
                args.jitter_ms,
            )
            if args.ready_file is not None:
                write_ready_file(args.ready_file, sandbox.base_url)
            if args.mutate_every:
                tg.start_soon(mutate_forever, market, args.mutate_every)
            async for signum in signals:
                log.info("sandbox.stopping signal=%s", signal.Signals(signum).name)
                tg.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        market = build_market(args)
        if args.faults is not None:
            install_faults(market, args.faults)
    except (ValueError, OSError) as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    anyio.run(serve, args, market)
    return 0
