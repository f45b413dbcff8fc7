"""A small recording upstream for unit tests of forwarding (never the only proof: the
integration tests use a real SeaweedFS)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict

__all__ = ("FakeClock", "Recorded", "RecordingUpstream")


@dataclass
class Recorded:
    method: str
    raw_path: str
    headers: CIMultiDict[str]
    body: bytes


Responder = Callable[[web.Request, Recorded], Awaitable[web.StreamResponse]]


async def _default_responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
    if recorded.raw_path.startswith("/v1/oauth/tokens"):
        return web.json_response(
            {"access_token": "upstream-token-1", "token_type": "bearer", "expires_in": 3600}
        )
    if recorded.raw_path.startswith("/v1/config"):
        return web.json_response({"defaults": {}, "overrides": {}})
    return web.json_response({"ok": True})


@dataclass
class RecordingUpstream:
    """Records every request; ``responder`` decides the answer."""

    requests: list[Recorded] = field(default_factory=list)
    responder: Responder = _default_responder

    def app(self) -> web.Application:
        # Long lines as a Go or Java catalog takes them (aiohttp's default is 8190 bytes).
        app = web.Application(client_max_size=1024**3, handler_args={"max_line_size": 2**20})
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            request.method, request.raw_path, CIMultiDict(request.headers), await request.read()
        )
        self.requests.append(recorded)
        return await self.responder(request, recorded)

    @contextlib.asynccontextmanager
    async def stuck(self) -> AsyncIterator[None]:
        """Within the block the upstream accepts requests and never answers; afterwards its
        handlers finish, so the test server can shut down."""
        release = asyncio.Event()
        previous = self.responder

        async def wait_forever(request: web.Request, recorded: Recorded) -> web.StreamResponse:
            await release.wait()
            return web.json_response({})

        self.responder = wait_forever
        try:
            yield
        finally:
            release.set()
            self.responder = previous

    def catalog_requests(self) -> list[Recorded]:
        """Requests other than the gateway's own upstream token fetches."""
        return [r for r in self.requests if not r.raw_path.startswith("/v1/oauth/tokens")]

    @property
    def last(self) -> Recorded:
        return self.catalog_requests()[-1]


def json_body(recorded: Recorded) -> object:
    return json.loads(recorded.body)


class FakeClock:
    """Wall-clock stand-in the tests move by hand (no sleeping)."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
