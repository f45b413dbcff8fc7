"""Liveness (``/healthz``: the process answers, with its pid, so one can tell which worker
did) and readiness (``/readyz``: the store answers and every catalog upstream answers
``/v1/config``, asked through the catalog's own forwarding transport, so the probe tests the
client, pool and settings real requests use)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Final

from aiohttp import web

from .proxy import Forwarder
from .proxy.transport import (
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
)
from .state import CONFIGURED, STORE

__all__ = ("healthz", "readyz")

_LOGGER = logging.getLogger(__name__)
_PROBE_SECONDS: Final = 2.0


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _probe(forwarder: Forwarder) -> bool:
    try:
        # In flight like a request: a reload meanwhile waits for it before closing.
        with forwarder.in_flight:
            async with asyncio.timeout(_PROBE_SECONDS):
                # No credential: any HTTP answer below 500 means the catalog is up (it may
                # want one). Redirects are never followed by a transport.
                response = await forwarder.transport.request("GET", "/v1/config", ())
    except (UpstreamConnectError, UpstreamProtocolError, UpstreamReadTimeout, TimeoutError):
        return False
    # Released unread: the connection goes back to the pool if the (small) answer is complete.
    response.release()
    return response.status < 500


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
        checks["store"] = "ok"
    except Exception:
        _LOGGER.exception("store is not reachable")
        checks["store"] = "unavailable"
    forwarders = request.app[CONFIGURED].forwarders
    results = await asyncio.gather(*(_probe(f) for f in forwarders.values()))
    for name, ok in zip(forwarders, results, strict=True):
        checks[f"catalog:{name}"] = "ok" if ok else "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
