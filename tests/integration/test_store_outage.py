"""When the database is down (issue 13): a real PostgreSQL of this module's own, stopped and
started again under a running gateway app.

Identities already cached keep working for ``store.outage_grace_seconds`` after the last poll
that worked; unknown credentials and management writes are 503 at once; ``/readyz`` and
``/metrics`` say so; past the grace every authenticated request is 503 (a revocation made
during the outage is never ignored for longer); when the database is back everything recovers
without a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import gateway.auth.authenticator as authenticator_module
from gateway.app import create_app
from gateway.identity.bootstrap import initialize
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.settings import CatalogSettings
from gateway.state import AUTHENTICATOR
from gateway.store import PostgresStore

from ..conftest import make_settings
from ..fakes import RecordingUpstream
from ..helpers import key_header
from ..postgres import PostgresServer

pytestmark = pytest.mark.postgres

GRACE = 30.0


@pytest.fixture(scope="module")
def own_server() -> Iterator[PostgresServer]:
    """A server of this module alone: stopping it must not stop anyone else's tests."""
    with PostgresServer.start() as server:
        yield server


@dataclasses.dataclass
class Outage:
    client: TestClient[web.Request, web.Application]
    server: PostgresServer
    root: CreatedKey
    cached: CreatedKey
    later: float = 0.0  # seconds added to the authenticator's monotonic clock

    def advance(self, seconds: float) -> None:
        self.later += seconds


async def until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def outage(
    own_server: PostgresServer,
    tmp_path: Path,
    aiohttp_client: Any,
    aiohttp_server: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Outage]:
    url = own_server.url(await own_server.create_database())
    async with PostgresStore(url) as store:
        admin = ServiceUserAdmin(store)
        root = (await initialize(store, admin)).root
        assert root is not None
        cached = await admin.create(name="etl", actor="test")
    upstream = RecordingUpstream()
    base = str((await aiohttp_server(upstream.app())).make_url("")).rstrip("/")
    settings = make_settings(tmp_path, {"default": CatalogSettings(upstream=base)})
    settings = dataclasses.replace(
        settings, store=dataclasses.replace(settings.store, url=url, outage_grace_seconds=GRACE)
    )
    state = Outage(await aiohttp_client(TestServer(create_app(settings))), own_server, root, cached)
    real = authenticator_module._monotonic
    monkeypatch.setattr(authenticator_module, "_monotonic", lambda: real() + state.later)
    try:
        yield state
    finally:
        if not (own_server.data_dir / "postmaster.pid").exists():
            own_server.start_again()
        await state.client.close()


async def status(outage: Outage, created: CreatedKey, path: str = "/v1/namespaces") -> int:
    async with outage.client.get(path, headers=key_header(created)) as answer:
        await answer.read()
        return answer.status


async def test_cached_identities_work_through_an_outage_until_the_grace_then_everything_is_503(
    outage: Outage,
) -> None:
    assert await status(outage, outage.cached) == 200  # now cached
    authenticator = outage.client.app[AUTHENTICATOR]
    outage.server.stop()

    await until(lambda: _unreachable(authenticator), "the poll to notice the outage")
    assert await status(outage, outage.cached) == 200  # within the grace: still served

    # An identity the gateway has not seen: it cannot be checked, so it is 503, not 401.
    async with outage.client.get("/v1/namespaces", headers=key_header(outage.root)) as answer:
        assert answer.status == 503
        body = await answer.json()
        assert body["error"]["type"] == "ServiceUnavailableException"
    # A management write cannot be made (and is not pretended).
    async with outage.client.post(
        "/api/v1/service-users", json={"name": "new"}, headers=key_header(outage.cached)
    ) as answer:
        assert answer.status in (403, 503)  # a TenantUser is refused before the store
    async with outage.client.get("/readyz") as answer:
        assert answer.status == 503
        assert (await answer.json())["checks"]["store"] == "unavailable"
    async with outage.client.get("/metrics") as answer:
        assert "pangolin_store_reachable 0.0" in await answer.text()

    outage.advance(GRACE + 1)  # past the grace: what is cached may have been revoked
    assert await status(outage, outage.cached) == 503
    # The token endpoint too: a key revoked during the outage gets no new token.
    form = {"grant_type": "client_credentials", "client_id": outage.cached.user.id,
            "client_secret": outage.cached.api_key.plaintext()}  # fmt: skip
    async with outage.client.post("/v1/oauth/tokens", data=form) as answer:
        assert answer.status == 503

    outage.server.start_again()
    await until(lambda: _reachable(authenticator), "the poll to see the store again")
    assert await status(outage, outage.cached) == 200
    assert await status(outage, outage.root) == 200  # cache misses work again
    async with outage.client.get("/readyz") as answer:
        assert answer.status == 200


async def test_a_management_write_during_an_outage_is_503_and_happens_later_once_retried(
    outage: Outage,
) -> None:
    body = {"name": "made-after"}
    outage.server.stop()
    async with outage.client.post(
        "/api/v1/service-users", json=body, headers=key_header(outage.root)
    ) as answer:
        assert answer.status == 503
        assert (await answer.json())["error"]["code"] == 503
    outage.server.start_again()
    await until(lambda: _reachable(outage.client.app[AUTHENTICATOR]), "the store to answer")
    async with outage.client.post(
        "/api/v1/service-users", json=body, headers=key_header(outage.root)
    ) as answer:
        assert answer.status == 201, await answer.text()


async def _unreachable(authenticator: Any) -> bool:
    return not authenticator.store_reachable


async def _reachable(authenticator: Any) -> bool:
    return bool(authenticator.store_reachable)
