"""Shared fixtures.

- ``make_gateway``: the real app (``create_app``) with a real SQLite store, in the test's loop,
  in front of a recording fake upstream, for header/auth/token tests.
- ``seaweed`` (session): one real SeaweedFS with credentials for the whole run, and
  ``live_gateway`` (session): the gateway in a thread in front of it, for real clients such as
  PyIceberg, which are synchronous.
- ``postgres_server`` (session): one real PostgreSQL (``tests/postgres.py``), started only when
  a test first asks for it; ``postgres_url``: a fresh empty database on it for each test,
  dropped afterwards. A failed test that used it reports the tail of the server's log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Final, cast

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import AuthenticatorFactory, create_app
from gateway.auth.authenticator import Authenticator
from gateway.connection import GatewayRunner
from gateway.identity.bootstrap import initialize
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.settings import CatalogSettings, Settings, StoreSettings, UpstreamAuthSettings
from gateway.state import AUTHENTICATOR, CONFIGURED, SERVICE_USERS
from gateway.store import PostgresStore, SqliteStore, make_store
from gateway.store.tables import StoreTables

from .fakes import FakeClock, RecordingUpstream
from .live import LiveGateway, SeaweedUpstream
from .postgres import PostgresServer

_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Guard against pyarrow hanging the interpreter at exit (apache/arrow#50188: its S3
    atexit finalizer can deadlock once S3 was used), which would stall CI after the suite has
    passed. Finalize S3 explicitly; should exit still hang, end the process with pytest's own
    status after a grace period (a daemon timer never delays a normal exit)."""
    fs = sys.modules.get("pyarrow.fs")
    if fs is not None:
        gc.collect()
        fs.finalize_s3()
    timer = threading.Timer(30.0, os._exit, args=(_exit_status,))
    timer.daemon = True
    timer.start()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the real PostgreSQL (``postgres_server``, also through
    ``postgres_url``) carries the ``postgres`` marker without saying so itself. (A fixture
    that asks for ``postgres_url`` only on some of its parameters marks those itself.)"""
    for item in items:
        if "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    server = getattr(item, "funcargs", {}).get("postgres_server")
    if report.failed and isinstance(server, PostgresServer):
        report.sections.append(("postgres log (tail)", server.log_tail()))
    return report


def make_settings(tmp_path: Path, catalogs: dict[str, CatalogSettings], **changes: Any) -> Settings:
    settings = Settings(
        store=StoreSettings(path=str(tmp_path / "pangolin.db")),
        catalogs=catalogs,
    )
    return dataclasses.replace(settings, **changes)


@dataclasses.dataclass
class Gateway:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: SqliteStore
    root: CreatedKey
    upstream: RecordingUpstream
    clock: FakeClock

    @property
    def admin(self) -> ServiceUserAdmin:
        return self.app[SERVICE_USERS]

    async def user(
        self, name: str = "etl", role: Role = Role.TENANT_USER, tenant: str = "default",
        **kwargs: Any,
    ) -> CreatedKey:  # fmt: skip
        return await self.admin.create(name=name, role=role, tenant=tenant, actor="test", **kwargs)

    async def token(self, created: CreatedKey, path: str = "/v1/oauth/tokens") -> str:
        resp = await self.client.post(
            path,
            data={"grant_type": "client_credentials", "client_id": created.user.id,
                  "client_secret": created.api_key.plaintext()},
        )  # fmt: skip
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token

    async def flush(self) -> None:
        await self.app[AUTHENTICATOR].flush_last_used()

    def another_store(self) -> SqliteStore | PostgresStore:
        """Another (unopened) store object on this gateway's database, with connections of
        its own: what another worker or another replica holds."""
        return make_store(self.app[CONFIGURED].settings.store)

    async def committed_rows(self, sql: str) -> list[tuple[Any, ...]]:
        """``sql``'s rows as committed, read over a connection of the test's own (sqlite3 or
        asyncpg), never through the store under test."""
        settings = self.app[CONFIGURED].settings.store
        if not settings.url:
            with contextlib.closing(sqlite3.connect(settings.path)) as file:
                return file.execute(sql).fetchall()
        database = await asyncpg.connect(settings.url)
        try:
            return [tuple(row) for row in await database.fetch(sql)]
        finally:
            await database.close()


MakeGateway = Callable[..., Awaitable[Gateway]]


class GatewayTestServer(TestServer):
    """aiohttp's test server with the gateway's connection layer (``GatewayRunner``), so
    tests see what clients see, parser refusals and timeouts included."""

    async def _make_runner(self, **kwargs: Any) -> GatewayRunner:
        # As the gateway serves (runner.serving): a client that goes away does not cancel its
        # handler (aiohttp's test server would), the handler sees the connection's end.
        kwargs.pop("handler_cancellation", None)
        return GatewayRunner(self.app, **kwargs)


@pytest.fixture
def store_engine(request: pytest.FixtureRequest) -> str:
    """The store ``make_gateway`` builds: "sqlite" unless a module parametrises it
    (``pytest.mark.parametrize("store_engine", ENGINES, indirect=True)``)."""
    return str(getattr(request, "param", "sqlite"))


# For the modules whose tests run on both engines (authentication, rotation, management).
ENGINES: Final = ("sqlite", pytest.param("postgres", marks=pytest.mark.postgres))


@pytest.fixture
async def make_gateway(
    tmp_path: Path,
    aiohttp_client: Any,
    aiohttp_server: Any,
    store_engine: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeGateway]:
    stores: list[StoreTables] = []
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        *,
        upstream: RecordingUpstream | None = None,
        catalogs: dict[str, CatalogSettings] | None = None,
        upstream_auth: UpstreamAuthSettings | None = None,
        authenticator: AuthenticatorFactory = Authenticator,
        **changes: Any,
    ) -> Gateway:
        upstream = upstream or RecordingUpstream()
        server: TestServer = await aiohttp_server(upstream.app())
        base = str(server.make_url("")).rstrip("/")
        if catalogs is None:
            catalogs = {
                "default": CatalogSettings(
                    upstream=base, upstream_auth=upstream_auth or UpstreamAuthSettings()
                )
            }
        else:
            catalogs = {
                name: dataclasses.replace(c, upstream=c.upstream or base)
                for name, c in catalogs.items()
            }
        settings = make_settings(tmp_path / f"gw{len(stores)}", catalogs, **changes)
        clock = FakeClock()
        store: StoreTables
        if store_engine == "postgres":
            pg: PostgresServer = request.getfixturevalue("postgres_server")
            url = pg.url(await pg.create_database())  # one per gateway made
            settings = dataclasses.replace(
                settings, store=dataclasses.replace(settings.store, url=url)
            )
            store = PostgresStore(url)
        else:
            store = SqliteStore(settings.store.path)
        await store.open()
        stores.append(store)
        result = await initialize(store, ServiceUserAdmin(store, clock=clock))
        assert result.root is not None
        app = create_app(settings, store=store, clock=clock, authenticator=authenticator)
        client = await aiohttp_client(GatewayTestServer(app))
        clients.append(client)
        # A PostgresStore on the postgres runs: the modules run on both engines never reach
        # for what only SQLite has (the file's path).
        return Gateway(client, app, cast(SqliteStore, store), result.root, upstream, clock)

    yield make
    # Apps first: their shutdown flushes last_used into the store, which must still be open.
    for client in clients:
        await client.close()
    for opened in stores:
        await opened.close()


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedUpstream]:
    with SeaweedUpstream.start(tmp_path_factory.mktemp("seaweedfs")) as upstream:
        yield upstream


@pytest.fixture(scope="session")
def live_gateway(
    seaweed: SeaweedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with LiveGateway.start(tmp_path_factory.mktemp("live-gateway"), seaweed) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with PostgresServer.start() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    with postgres_server.database() as url:
        yield url
