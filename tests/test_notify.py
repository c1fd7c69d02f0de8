"""The sd_notify protocol against a datagram socket the test binds, and watchdog rules."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import anyio
import pytest

from daemon import logs
from daemon.notify import Notifier, watchdog_interval_s, watchdog_loop
from tests.notify_socket import NotifySocket


@pytest.fixture
def notify_socket(tmp_path: Path):
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def test_everything_is_a_noop_without_notify_socket() -> None:
    n = Notifier(env={})
    assert not n.enabled and n.watchdog_s is None
    n.ready("x")
    n.status("y")
    n.watchdog()
    n.stopping()


def test_ready_status_stopping(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    n = Notifier()
    n.ready("starting up")
    n.status("main/offers page 1/3")
    n.status("main/offers page 1/3")  # unchanged: not resent
    n.status("main/offers page 2/3")
    n.stopping("bye")
    n.close()
    notify_socket.wait_for("STOPPING", "1")  # the last one: a datagram socket keeps the order
    messages = [m for _, m in notify_socket.drain()]
    assert messages == [
        "READY=1\nSTATUS=starting up",
        "STATUS=main/offers page 1/3",
        "STATUS=main/offers page 2/3",
        "STOPPING=1\nSTATUS=bye",
    ]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "12345"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "garbage"}, None),
    ],
)
def test_watchdog_interval_is_half_and_honours_pid(env: dict, expected: float | None) -> None:
    assert watchdog_interval_s(env, pid=999) == expected


def test_watchdog_pid_matching_this_process() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "999"}, pid=999) == 0.5


def record_pings(n: Notifier) -> list[float]:
    """When the pinging task sent each WATCHDOG=1 (time.monotonic()), as it sends them."""
    sent: list[float] = []
    ping = n.watchdog

    def watchdog() -> None:
        sent.append(time.monotonic())
        ping()

    n.watchdog = watchdog  # type: ignore[method-assign]
    return sent


async def until(condition: Callable[[], bool], timeout_s: float) -> None:
    with anyio.fail_after(timeout_s):
        while not condition():
            await anyio.sleep(0.01)


def assert_received(notify_socket: NotifySocket, pings: int) -> None:
    """Every ping sent reached the socket (systemd's side), and no other."""
    deadline = time.monotonic() + 5
    while len(notify_socket.fields("WATCHDOG")) < pings and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(notify_socket.fields("WATCHDOG")) == pings


# Bounds below are turns of the pinging loop (half of WATCHDOG_USEC), waited for with a deadline
# of many turns: a loaded machine makes a test slower, not red.
WATCHDOG_USEC = 200_000
TURN_S = WATCHDOG_USEC / 2 / 1_000_000


async def test_watchdog_pings_only_while_alive(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    n = Notifier()
    assert n.watchdog_s == TURN_S
    sent = record_pings(n)
    alive, asked = True, 0

    def is_alive() -> bool:
        nonlocal asked
        asked += 1
        return alive

    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, is_alive)
        await until(lambda: len(sent) >= 5, timeout_s=50 * TURN_S)
        healthy = list(sent)
        alive = False  # the scheduler stopped making progress
        asked_before = asked
        await until(lambda: asked >= asked_before + 3, timeout_s=50 * TURN_S)  # three more turns: withheld
        tg.cancel_scope.cancel()
    n.close()
    assert sent == healthy
    gaps = [b - a for a, b in pairwise(healthy)]
    # one ping a turn: never sooner, and mostly on time (a late turn or two on a busy machine)
    assert min(gaps) >= 0.9 * TURN_S and sorted(gaps)[len(gaps) // 2] < 1.5 * TURN_S, gaps
    assert_received(notify_socket, len(sent))


async def test_blocked_event_loop_sends_no_pings(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    n = Notifier()
    sent = record_pings(n)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, lambda: True)
        await until(lambda: len(sent) >= 2, timeout_s=50 * TURN_S)
        blocked_at = time.monotonic()
        time.sleep(8 * TURN_S)  # the loop is blocked: the pinging task cannot run
        unblocked_at = time.monotonic()
        await until(lambda: sent[-1] > unblocked_at, timeout_s=50 * TURN_S)  # pings again once it runs
        tg.cancel_scope.cancel()
    n.close()
    assert not [at for at in sent if blocked_at < at < unblocked_at]
    # the silence outlasted WatchdogSec (two turns): systemd would have restarted us
    assert max(b - a for a, b in pairwise(sent)) >= 8 * TURN_S > 2 * TURN_S
    assert_received(notify_socket, len(sent))


def test_a_notify_socket_that_cannot_be_reached_is_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    logs.configure("kv", "info", stream=stream)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    n = Notifier()
    n.ready("x")  # goes nowhere, and says so once
    assert "notify.socket_unavailable" in stream.getvalue() and "warning" in stream.getvalue()
    assert n.watchdog_s is None


def test_utf8_status_arrives_intact(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    n = Notifier()
    n.status("main/offers page 1/3 · așteptare bază de date")
    n.close()
    assert notify_socket.wait_for("STATUS") == "main/offers page 1/3 · așteptare bază de date"
