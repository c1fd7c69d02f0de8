"""LISTEN for the daemon: one session of its own, reconnected with backoff, dispatching
each channel's notifications to its subscribers on the event loop. A notification is a
wake-up, never the truth: subscribers re-read the tables (and on every reconnect too,
since what was sent while the session was down is gone)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import anyio
import structlog

from daemon.store import Store, StoreError

log = structlog.get_logger("daemon.listen")

RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0


class Listener:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._subscribers: dict[str, list[Callable[[str], None]]] = defaultdict(list)
        self._on_connect: list[Callable[[], None]] = []

    def subscribe(self, channel: str, callback: Callable[[str], None], on_connect: bool = True) -> None:
        """callback(payload) for each notification on `channel`; with on_connect, also
        callback("") whenever the session is (re)established."""
        self._subscribers[channel].append(callback)
        if on_connect:
            self._on_connect.append(lambda: callback(""))

    def _dispatch(self, channel: str, payload: str) -> None:
        for callback in self._subscribers.get(channel, ()):
            callback(payload)

    async def run(self) -> None:
        delay = RETRY_MIN_S
        while True:
            try:
                async with self.store.listen(tuple(self._subscribers), self._dispatch) as lost:
                    log.debug("listen.connected", channels=",".join(self._subscribers))
                    delay = RETRY_MIN_S
                    for catch_up in self._on_connect:
                        catch_up()
                    await lost.wait()
                log.warning("listen.lost", retry_in_s=delay)
            except StoreError as exc:
                log.warning("listen.unavailable", error=str(exc), retry_in_s=delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
