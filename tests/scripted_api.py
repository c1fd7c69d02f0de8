"""A scripted eMAG API on 127.0.0.1 (port 0) for the client's tests: each request gets the
next scripted reply, and what came in is recorded."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

OK_EMPTY = b'{"isError":false,"messages":[],"results":[]}'


class serve:
    """`async with serve(handler) as base_url:` a tiny aiohttp server on 127.0.0.1, port 0."""

    def __init__(self, handler: Any) -> None:
        self.app = web.Application()
        self.app.router.add_post("/api-3/{tail:.*}", handler)
        self.runner = web.AppRunner(self.app, shutdown_timeout=0.5)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/api-3"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = OK_EMPTY
    headers: dict[str, str] = field(default_factory=dict)
    reset: bool = False  # drop the connection without an answer


def ok(results: Any) -> Reply:
    return Reply(body=json.dumps({"isError": False, "messages": [], "results": results}).encode())


class Script:
    """Answers each request with the next reply; the last one repeats. Records what came in."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.paths: list[str] = []
        self.bodies: list[Any] = []
        self.auth: list[str] = []
        self.base = ""

    def then(self, *replies: Reply) -> Script:
        self.replies.extend(replies)
        return self

    async def handle(self, request: web.Request) -> web.Response:
        self.paths.append(request.match_info["tail"])
        self.auth.append(request.headers.get("Authorization", ""))
        self.bodies.append(await request.json())
        reply = self.replies.popleft() if len(self.replies) > 1 else self.replies[0]
        if reply.reset:
            request.protocol.force_close()
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError
        return web.Response(
            status=reply.status, body=reply.body, headers=reply.headers, content_type="application/json"
        )
