"""Liveness (``/healthz``: the process answers, with its pid, so one can tell which worker
did) and readiness (``/readyz``: the store answers and every catalog upstream answers
``/v1/config``)."""

from __future__ import annotations

import asyncio
import logging
import os

import aiohttp
from aiohttp import web

from .state import HTTP_SESSION, SETTINGS, STORE

__all__ = ("healthz", "readyz")

_LOGGER = logging.getLogger(__name__)
_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=2.0)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "pid": os.getpid()})


async def _probe(session: aiohttp.ClientSession, upstream: str) -> bool:
    try:
        async with session.get(
            upstream.rstrip("/") + "/v1/config", timeout=_PROBE_TIMEOUT, allow_redirects=False
        ) as resp:
            # Any HTTP answer below 500 means the catalog is up (it may want credentials).
            return resp.status < 500
    except (aiohttp.ClientError, TimeoutError):
        return False


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        await request.app[STORE].ping()
        checks["store"] = "ok"
    except Exception:
        _LOGGER.exception("store is not reachable")
        checks["store"] = "unavailable"
    catalogs = request.app[SETTINGS].catalogs
    results = await asyncio.gather(
        *(_probe(request.app[HTTP_SESSION], c.upstream) for c in catalogs.values())
    )
    for name, ok in zip(catalogs, results, strict=True):
        checks[f"catalog:{name}"] = "ok" if ok else "unavailable"
    ready = all(value == "ok" for value in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
