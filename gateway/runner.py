"""Running the gateway: initializing a store and serving an app (shared by the CLI and demo)."""

from __future__ import annotations

import asyncio
import dataclasses

from aiohttp import web

from .app import create_app
from .bootstrap import InitResult, initialize
from .service_users import ServiceUserAdmin
from .settings import Settings
from .store import SqliteStore

__all__ = ("ACCESS_LOG_FORMAT", "check_initialized", "run_init", "serve_settings")

# Method, path and status only: never headers, so never a key or a token.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'


async def run_init(settings: Settings) -> InitResult:
    async with SqliteStore(settings.store.path) as store:
        return await initialize(store, ServiceUserAdmin(store))


async def check_initialized(settings: Settings) -> None:
    """Raise LookupError with the fix if the store was never initialized."""
    if not settings.store_path.exists():
        # Opening would create (and migrate) a store: a refused `serve` must leave no trace,
        # least of all an empty store at a mistyped path.
        raise LookupError(
            f"store {settings.store.path} does not exist; "
            "run `pangolin-gateway init --config FILE` first"
        )
    async with SqliteStore(settings.store.path) as store:
        if not await store.signing_keys():
            raise LookupError(
                f"store {settings.store.path} is not initialized; "
                "run `pangolin-gateway init --config FILE` first"
            )


def serve_settings(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    server = dataclasses.replace(
        settings.server,
        host=host if host is not None else settings.server.host,
        port=port if port is not None else settings.server.port,
    )
    settings = dataclasses.replace(settings, server=server)
    asyncio.run(check_initialized(settings))
    web.run_app(
        create_app(settings),
        host=server.host,
        port=server.port,
        access_log_format=ACCESS_LOG_FORMAT,
        print=lambda _msg: None,
        shutdown_timeout=10.0,
    )
