"""The sd_notify protocol against a datagram socket the test binds, and watchdog rules."""

from __future__ import annotations

import io
import time
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
    time.sleep(0.1)
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


async def test_watchdog_pings_only_while_alive(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    n = Notifier()
    alive = True
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, lambda: alive)
        await anyio.sleep(0.55)
        healthy = len(notify_socket.fields("WATCHDOG"))
        alive = False  # the scheduler stopped making progress
        await anyio.sleep(0.15)
        withheld_from = len(notify_socket.fields("WATCHDOG"))
        await anyio.sleep(0.5)
        assert len(notify_socket.fields("WATCHDOG")) == withheld_from
        tg.cancel_scope.cancel()
    n.close()
    assert healthy >= 4


async def test_blocked_event_loop_sends_no_pings(notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_socket.path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    n = Notifier()
    async with anyio.create_task_group() as tg:
        tg.start_soon(watchdog_loop, n, lambda: True)
        await anyio.sleep(0.3)
        time.sleep(0.8)  # the loop is blocked: the pinging task cannot run
        await anyio.sleep(0.25)
        pings = [at for at, _ in notify_socket.fields("WATCHDOG")]
        tg.cancel_scope.cancel()
    n.close()
    gaps = [b - a for a, b in pairwise(pings)]
    assert max(gaps) >= 0.75  # systemd (WatchdogSec=0.2s) would have restarted us


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
