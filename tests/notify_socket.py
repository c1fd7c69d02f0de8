"""A NOTIFY_SOCKET the tests bind themselves, standing in for systemd (not PID 1 here)."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class NotifySocket:
    path: Path
    sock: socket.socket = field(init=False)
    messages: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        # A reader thread stamps each datagram on arrival, even while the sender's loop is blocked.
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, OSError):
                continue
            with self._lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def drain(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self.messages)

    def fields(self, key: str) -> list[tuple[float, str]]:
        """(time, value) of every KEY=value line received so far."""
        out = []
        for at, message in self.drain():
            for line in message.splitlines():
                if line.startswith(key + "="):
                    out.append((at, line[len(key) + 1 :]))
        return out

    def wait_for(self, key: str, value: str | None = None, timeout_s: float = 20.0, predicate=None) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, v in self.fields(key):
                if (value is None or v == value) and (predicate is None or predicate(v)):
                    return v
            time.sleep(0.05)
        raise AssertionError(f"no {key}={value or '*'} within {timeout_s}s; got {self.drain()[-10:]}")

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self.sock.close()
