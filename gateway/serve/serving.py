"""How one process serves the app, the same for a single process and for every worker of
``--workers N``: runner options, the event loop, stop signals and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Final

from aiohttp import web

from ..connection import GatewayRunner
from ..observability.access_log import AccessLogger
from ..settings import ServerSettings, Settings
from . import reload
from .collector import tune_collector
from .tls import reload_certificate, server_context

__all__ = (
    "STOP_SIGNALS", "Reload", "ignore_reloads", "new_event_loop", "server_options", "serving",
    "stop_signal",
)  # fmt: skip

# What a reload does in a serving process: the TLS certificate read again, and the settings
# (if any: None when the configuration was refused) put in force.
Reload = Callable[[Settings | None], None]

STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
_LOGGER = logging.getLogger(__name__)


def server_options(server: ServerSettings) -> dict[str, Any]:
    """``GatewayRunner`` options shared by the single process and every worker of
    ``--workers N``: change them here, for both."""
    return {
        # One line per request with request id, principal and catalog, never a header (so
        # never a key or a token): see observability.access_log.
        "access_log_class": AccessLogger,
        # How long a stopping process lets requests in flight finish, once it has stopped
        # accepting connections (the drain).
        "shutdown_timeout": server.drain_seconds,
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
    app: web.Application,
    server: ServerSettings,
    *,
    reuse_port: bool = False,
    reload_on_hangup: bool = True,
    reread: Callable[[], Settings] | None = None,
) -> AsyncIterator[Reload]:
    """``app`` listening on ``server.host:server.port`` (over TLS when the settings give a
    certificate) until the block ends, then a graceful stop: no new connections, requests in
    flight finish (for up to ``server.drain_seconds``), then the app's cleanup (``last_used``,
    the audit queue) runs. SIGHUP reloads: the certificate, and the configuration ``reread``
    reads (see ``reload``). Without ``reload_on_hangup`` SIGHUP is left to the caller (``make
    run``, where closing the terminal must stop it; a worker, whose supervisor reloads it
    with what it yields)."""
    tls = server_context(server)  # TlsError (an OSError) before anything listens
    runner = GatewayRunner(app, handle_signals=False, **server_options(server))
    await runner.setup()
    tune_collector()  # the caches are what grows from here (collector.py says why)
    loop = asyncio.get_running_loop()
    try:
        site = web.TCPSite(runner, server.host, server.port, reuse_port=reuse_port, ssl_context=tls)
        await site.start()

        def reload_with(settings: Settings | None) -> None:
            if tls is not None:
                reload_certificate(tls, server)
            if settings is not None:
                reload.apply(app, settings)

        def on_hangup() -> None:
            reload_with(reload.reread(reread) if reread is not None else None)

        if reload_on_hangup:
            # SIGHUP re-reads what can change under a running listener; never its default
            # (which ends the process): a reload must not be a crash.
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        yield reload_with
    finally:
        if reload_on_hangup:
            loop.remove_signal_handler(signal.SIGHUP)  # which restores SIGHUP's default: ...
            ignore_reloads()  # ... a reload sent while draining must not end the drain
        await runner.cleanup()


def ignore_reloads() -> None:
    """SIGHUP ignored, as it is while a process starts and stops: its default action ends the
    process, and a reload sent a moment too early or late must not be a crash. (While the
    listener is up, ``serving`` reloads on it.)"""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


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
