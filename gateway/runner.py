"""Running the gateway: initializing a store and serving an app (shared by the CLI and demo)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from .accesslog import AccessLogger
from .app import create_app
from .bootstrap import InitResult, initialize
from .server import GatewayRunner
from .service_users import ServiceUserAdmin
from .settings import Settings
from .store import SqliteStore

__all__ = (
    "STOP_SIGNALS",
    "check_initialized",
    "new_event_loop",
    "run_init",
    "serve_settings",
    "server_options",
    "serving",
)

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def server_options() -> dict[str, Any]:
    """``GatewayRunner`` options shared by the single process and every worker of
    ``--workers N``: change them here, for both."""
    return {
        # One line per request with request id, principal and catalog, never a header (so
        # never a key or a token): see accesslog.
        "access_log_class": AccessLogger,
        # How long a stopping process lets requests in flight finish.
        "shutdown_timeout": 10.0,
    }


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (the ``fast`` extra), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


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


def serve_settings(
    settings: Settings, *, host: str | None = None, port: int | None = None, workers: int = 1
) -> int:
    """Serve until SIGINT or SIGTERM; the exit status. ``workers`` > 1: that many processes
    share the port (SO_REUSEPORT) and the store, under a supervisor (see ``workers``)."""
    server = dataclasses.replace(
        settings.server,
        host=host if host is not None else settings.server.host,
        port=port if port is not None else settings.server.port,
    )
    settings = dataclasses.replace(settings, server=server)
    asyncio.run(check_initialized(settings))
    if workers > 1:
        from .workers import supervise

        return supervise(settings, workers)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(_serve_until_signalled(settings))
    return 0


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> AsyncIterator[GatewayRunner]:
    """``app`` listening on ``host:port`` until the block ends, then a graceful stop: requests
    in flight finish, then the app's cleanup (``last_used``, the audit queue) runs."""
    runner = GatewayRunner(app, handle_signals=False, **server_options())
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
        yield runner
    finally:
        await runner.cleanup()


async def _serve_until_signalled(settings: Settings) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serving(create_app(settings), settings.server.host, settings.server.port):
            await stop.wait()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
