"""A TCP proxy in front of PostgreSQL that a test can cut: a database restart or outage
without touching the server every other test uses."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import urlsplit, urlunsplit


class PgProxy:
    """`with PgProxy(dsn) as proxy:` forwards `proxy.dsn` to `dsn`'s server on its own thread.

    cut() drops every connection and refuses new ones (the server is down); restore()
    accepts again (it is back); freeze() keeps every connection open but passes nothing
    (a network partition: no error, no answer) until thaw()."""

    def __init__(self, dsn: str) -> None:
        parts = urlsplit(dsn)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._parts = parts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self.port = 0

    @property
    def dsn(self) -> str:
        netloc = self._parts.netloc.rpartition("@")
        host = f"127.0.0.1:{self.port}"
        return urlunsplit((self._parts.scheme, f"{netloc[0]}@{host}" if netloc[1] else host, *self._parts[2:]))

    def __enter__(self) -> PgProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def __exit__(self, *exc: object) -> None:
        self.thaw()
        self._call(self._stop_listening())
        self._call(self._drain())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._stop_listening())

    def freeze(self) -> None:
        self._loop.call_soon_threadsafe(self._flow().clear)

    def thaw(self) -> None:
        self._loop.call_soon_threadsafe(self._flow().set)

    def _flow(self) -> asyncio.Event:
        if self._flowing is None:
            self._flowing = asyncio.Event()
            self._flowing.set()
        return self._flowing

    def restore(self) -> None:
        self._call(self._listen())

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._flow()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port or 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # RST: what clients see when the server process dies
        self._writers.clear()

    async def _drain(self) -> None:
        """Let the aborted connections' tasks finish, so nothing is left to the garbage collector."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    await self._flow().wait()
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._writers -= {writer, up_writer}
