"""Middlewares, outermost first: request id, errors, authentication (annotates, never rejects).

The request id is outermost so that every answer carries it, error answers included."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from .authn import ANONYMOUS
from .errors import GatewayError, iceberg_error
from .keys import AUTH, AUTHENTICATOR, REQUEST_ID

__all__ = ("authenticate_middleware", "error_middleware", "request_id_middleware")

_LOGGER = logging.getLogger(__name__)
_SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HTTP_TYPES: Final = {
    400: "BadRequestException",
    404: "NotFoundException",
    405: "MethodNotAllowedException",
    413: "BadRequestException",
}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; nothing internal (exception text, stack) reaches the client."""
    try:
        return await handler(request)
    except GatewayError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_ = _HTTP_TYPES.get(exc.status, "RESTException")
        response = iceberg_error(exc.status, type_, exc.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    except Exception:
        _LOGGER.exception("unhandled error (request %s)", request.get(REQUEST_ID, "-"))
        return iceberg_error(500, "InternalServerError", "Internal gateway error")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Keep a caller's id when it is harmless, so one id follows a request through proxies.
    inbound = request.headers.get("X-Request-Id", "")
    request_id = inbound if _SAFE_REQUEST_ID.fullmatch(inbound) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = request_id
    return response


@web.middleware
async def authenticate_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach who the caller is (or why not); handlers decide whether that is enough."""
    if "X-API-Key" in request.headers or "Authorization" in request.headers:
        request[AUTH] = await request.app[AUTHENTICATOR].authenticate(request.headers)
    else:
        request[AUTH] = ANONYMOUS
    return await handler(request)
