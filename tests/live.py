"""Real parts for integration tests: a SeaweedFS catalog with credentials, and the gateway
running in its own thread and event loop, so synchronous clients (PyIceberg) can call it."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from gateway.app import create_app
from gateway.connection import GatewayRunner
from gateway.demo.seaweedfs import SeaweedFS, free_ports
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.serve.runner import run_init
from gateway.settings import (
    CatalogSettings,
    LimitSettings,
    Settings,
    StoreSettings,
    UpstreamAuthSettings,
)
from gateway.state import AUTHENTICATOR, SERVICE_USERS, STORE, TENANTS
from gateway.store import DEFAULT_TENANT, SqliteStore

__all__ = ("NO_BACKOFF", "LiveGateway", "SeaweedUpstream")

# Budgets no test reaches: for gateways whose tests fail credentials on purpose, from one
# address, and are not about the backoff.
NO_BACKOFF = LimitSettings(failed_auth_per_key=1_000_000, failed_auth_per_address=1_000_000)

T = TypeVar("T")
WAREHOUSE = "warehouse"


@dataclass
class SeaweedUpstream:
    server: SeaweedFS
    access_key: str
    secret_key: str
    # A read-only identity's access key and secret, if the server has one (start(reader=True)).
    reader: tuple[str, str] | None = None

    @classmethod
    @contextmanager
    def start(cls, data_dir: Path, *, reader: bool = False) -> Iterator[SeaweedUpstream]:
        """A credentialed SeaweedFS; with ``reader``, also with a read-only identity (it may
        list and load, and is refused creates and commits by SeaweedFS itself)."""
        access_key = "PGLTEST" + secrets.token_hex(4).upper()
        secret_key = secrets.token_urlsafe(24)
        reading = ("PGLREAD" + secrets.token_hex(4).upper(), secrets.token_urlsafe(24))
        server = SeaweedFS(
            data_dir, ports=free_ports(), access_key=access_key, secret_key=secret_key,
            table_bucket=WAREHOUSE, reader=reading if reader else None,
        )  # fmt: skip
        with server:  # starts it, and stops it on the way out
            yield cls(server, access_key, secret_key, server.reader)

    def s3_properties(self, *, as_reader: bool = False) -> dict[str, str]:
        """What a client needs to read and write table data (S3 goes around the gateway);
        ``as_reader``: the read-only identity's keys, which may read table data only."""
        key, secret = self._reader() if as_reader else (self.access_key, self.secret_key)
        return {
            "s3.endpoint": self.server.s3_endpoint,
            "s3.region": "us-east-1",
            "s3.access-key-id": key,
            "s3.secret-access-key": secret,
        }

    def reader_auth(self, client_secret: str | None = None) -> UpstreamAuthSettings:
        """The read-only identity as a catalog's ``upstream_auth_read`` (oauth2 against
        SeaweedFS's token endpoint); ``client_secret`` instead of its own: a wrong one, say."""
        key, secret = self._reader()
        return UpstreamAuthSettings(
            type="oauth2",
            client_id=key,
            client_secret=secret if client_secret is None else client_secret,
        )

    def reader_token(self) -> str:
        """A catalog JWT of the read-only identity, straight from SeaweedFS."""
        return self.server.upstream_token(self._reader())

    def _reader(self) -> tuple[str, str]:
        if self.reader is None:
            raise RuntimeError("this SeaweedFS has no reader identity: start(reader=True)")
        return self.reader

    def catalog(self, **changes: Any) -> CatalogSettings:
        """A catalog in front of this server with its admin credential (``upstream_auth``);
        ``changes`` replace fields, e.g. ``upstream_auth_read=self.reader_auth()``."""
        catalog = CatalogSettings(
            upstream=self.server.iceberg_url,
            warehouse=WAREHOUSE,
            upstream_auth=UpstreamAuthSettings(
                type="oauth2", client_id=self.access_key, client_secret=self.secret_key
            ),
        )
        return dataclasses.replace(catalog, **changes)


class LiveGateway:
    """The gateway on a real port, served from a background thread."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: GatewayRunner | None = None
        self.url = ""

    @classmethod
    @contextmanager
    def start(
        cls,
        tmp_path: Path,
        seaweed: SeaweedUpstream | None = None,
        *,
        catalogs: Mapping[str, CatalogSettings] | None = None,
        clock: Callable[[], float] = time.time,
        tenants: Iterable[str] = (),
        **catalog_changes: Any,
    ) -> Iterator[LiveGateway]:
        """One catalog "default" in front of ``seaweed`` (changed by ``catalog_changes``), or
        the given ``catalogs``. Every tenant a catalog names, and each of ``tenants``, is
        created; ``clock`` is the gateway's wall clock (a FakeClock makes tokens expire)."""
        if catalogs is None:
            if seaweed is None:
                raise TypeError("give seaweed or catalogs")
            catalogs = {"default": seaweed.catalog(**catalog_changes)}
        elif catalog_changes:
            raise TypeError("catalog_changes apply only to the default catalog built from seaweed")
        settings = Settings(
            store=StoreSettings(path=str(tmp_path / "pangolin.db")),
            catalogs=dict(catalogs),
            # One gateway for a whole session of tests, all from 127.0.0.1, many of them
            # presenting bad credentials on purpose: the backoff (tests/http/test_auth_backoff)
            # must not hold that address for the tests that follow.
            limits=NO_BACKOFF,
        )
        asyncio.run(run_init(settings))
        gateway = cls(settings, clock)
        gateway._thread.start()
        try:
            gateway.call(gateway._serve())
            wanted = {*(c.tenant for c in catalogs.values()), *tenants} - {DEFAULT_TENANT}
            for tenant in sorted(wanted):
                gateway.call(gateway.app[TENANTS].create(tenant, actor="test"))
            yield gateway
        finally:
            gateway.close()

    async def _serve(self) -> None:
        self.app = create_app(self.settings, clock=self.clock)
        self._runner = GatewayRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the gateway's loop (where its store connection lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def admin(self) -> ServiceUserAdmin:
        return self.app[SERVICE_USERS]

    @property
    def store(self) -> SqliteStore:
        store = self.app[STORE]
        assert isinstance(store, SqliteStore)
        return store

    def user(self, name: str, role: Role = Role.TENANT_USER, **kwargs: Any) -> CreatedKey:
        name = f"{name}-{secrets.token_hex(3)}"  # tests share this gateway: unique names
        return self.call(self.admin.create(name=name, role=role, actor="test", **kwargs))

    def flush_last_used(self) -> None:
        self.call(self.app[AUTHENTICATOR].flush_last_used())

    def pyiceberg_properties(
        self, created: CreatedKey, seaweed: SeaweedUpstream | None, catalog: str = "default"
    ) -> dict[str, str]:
        """The seed's PyIceberg snippet for ``catalog``, plus the storage settings of the
        local SeaweedFS (None: catalog operations only, or the caller adds its own)."""
        return {
            "type": "rest",
            "uri": f"{self.url}/v1/{catalog}/",
            "credential": f"{created.user.id}:{created.api_key.plaintext()}",
            "oauth2-server-uri": f"{self.url}/v1/{catalog}/v1/oauth/tokens",
            "scope": "catalog",
            **(seaweed.s3_properties() if seaweed is not None else {}),
        }

    def close(self) -> None:
        if self._runner is not None:
            self.call(self._runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()
