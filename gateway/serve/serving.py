"""How one process serves the app, the same for a single process and for every worker of
``--workers N``: runner options, the event loop, stop signals and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any, Final

from aiohttp import web

from ..connection import GatewayRunner
from ..observability.access_log import AccessLogger

__all__ = ("STOP_SIGNALS", "new_event_loop", "server_options", "serving", "stop_signal")

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def server_options() -> dict[str, Any]:
    """``GatewayRunner`` options shared by the single process and every worker of
    ``--workers N``: change them here, for both."""
    return {
        # One line per request with request id, principal and catalog, never a header (so
        # never a key or a token): see observability.access_log.
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


@contextlib.contextmanager
def stop_signal() -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM, any number of times (Ctrl-C in a terminal reaches the
    whole process group and a supervisor forwards it as well: a repeated signal must not cut
    the cleanup short); the handlers are removed on the way out."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
