"""Running the gateway: initializing a store and serving an app (shared by the CLI and demo)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from aiohttp import web

from ..app import create_app
from ..identity.bootstrap import InitResult, initialize
from ..identity.service_users import ServiceUserAdmin
from ..settings import Settings
from ..store import make_store
from ..store.migrations import MIGRATIONS
from .serving import ignore_reloads, new_event_loop, serving, stop_signal
from .workers import supervise

__all__ = ("check_initialized", "run_init", "run_migrate", "serve_settings")


async def run_init(settings: Settings) -> InitResult:
    async with make_store(settings.store) as store:
        return await initialize(store, ServiceUserAdmin(store))


async def run_migrate(settings: Settings) -> tuple[int, int]:
    """Bring the store to this gateway's schema: (version found, version now)."""
    async with make_store(settings.store) as store:
        return store.found_version, len(MIGRATIONS)


def _where(settings: Settings) -> str:
    return "the PostgreSQL store" if settings.store.url else f"store {settings.store.path}"


async def check_initialized(settings: Settings) -> None:
    """Raise LookupError with the fix if the store was never initialized, and StoreError if
    its schema is not this gateway's (older: the command that migrates it)."""
    if not settings.store.url and not settings.store_path.exists():
        # Opening would create (and migrate) a store: a refused `serve` must leave no trace,
        # least of all an empty store at a mistyped path.
        raise LookupError(
            f"store {settings.store.path} does not exist; "
            "run `pangolin-gateway init --config FILE` first"
        )
    store = make_store(settings.store)
    await store.open(migrate=False)
    try:
        if not await store.signing_keys():
            raise LookupError(
                f"{_where(settings)} is not initialized; "
                "run `pangolin-gateway init --config FILE` first"
            )
    finally:
        await store.close()


def serve_settings(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int = 1,
    app_factory: Callable[[Settings], web.Application] = create_app,
    reload_on_hangup: bool = True,
    reread: Callable[[], Settings] | None = None,
) -> int:
    """Serve until SIGINT or SIGTERM; the exit status. ``workers`` > 1: that many processes
    share the port (SO_REUSEPORT) and the store, under a supervisor (see ``workers``).
    ``app_factory`` builds the single process's app (the benchmark's seam; workers always
    build ``create_app``'s). SIGHUP reloads (the TLS certificate, and the configuration
    ``reread`` reads, with the same ``host``/``port``), unless ``reload_on_hangup`` is False
    (``make run``, whose own SIGHUP handler stops it: closing the terminal ends it)."""

    def overridden(loaded: Settings) -> Settings:
        server = dataclasses.replace(
            loaded.server,
            host=host if host is not None else loaded.server.host,
            port=port if port is not None else loaded.server.port,
        )
        return dataclasses.replace(loaded, server=server)

    settings = overridden(settings)
    again = (lambda: overridden(reread())) if reread is not None else None
    if reload_on_hangup:
        ignore_reloads()  # until it serves (and for --workers' supervisor, which passes it on)
    asyncio.run(check_initialized(settings))
    if workers > 1:
        return supervise(settings, workers, again)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve_until_signalled(settings, app_factory, reload_on_hangup, again))
    return 0


async def _serve_until_signalled(
    settings: Settings,
    app_factory: Callable[[Settings], web.Application],
    reload_on_hangup: bool,
    reread: Callable[[], Settings] | None,
) -> None:
    with stop_signal() as stop:
        app = app_factory(settings)
        async with serving(app, settings.server, reload_on_hangup=reload_on_hangup, reread=reread):
            await stop.wait()
