"""The gateway's middleware: four layers, outermost first: request id, metrics, errors,
authentication (annotates, never rejects), folded into one aiohttp middleware.

The request id is outermost so that every answer carries it, error answers included. Metrics
sit outside the error handling so that they count the answer the client actually got."""

from __future__ import annotations

import logging
import re
import time
from os import urandom
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import CIMultiDictProxy

from .auth.authenticator import ANONYMOUS
from .auth.caller import check_anonymous_rate
from .errors import (
    BadRequest,
    ClientClosedRequest,
    DomainError,
    GatewayError,
    LoginFailed,
    MethodNotAllowed,
    Unauthenticated,
    UnsupportedMediaType,
    error_response,
    iceberg_error,
)
from .observability.metrics import NO_CATALOG, GatewayMetrics
from .routing import ICEBERG_METHODS
from .settings import Settings
from .state import AUTH, AUTHENTICATOR, BACKOFF, CATALOG, CLIENTS, METRICS, REQUEST_ID, ROUTE

__all__ = ("error_answer", "gateway_middleware")

_LOGGER = logging.getLogger(__name__)
_SAFE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Every method any route of the gateway takes (PUT: the management API); any other (CONNECT,
# PATCH, TRACE, WebDAV's ...) is 405 wherever it is sent.
_SERVED_METHODS: Final = frozenset({*ICEBERG_METHODS, "PUT"})
_HTTP_TYPES: Final = {
    400: "BadRequestException",
    404: "NotFoundException",
    405: "MethodNotAllowedException",
    413: "BadRequestException",
    415: "UnsupportedMediaTypeException",
}


def _failure_reason(request: web.Request, exc: Unauthenticated) -> str:
    # A refused password login carried no credential to have a reason of its own.
    if isinstance(exc, LoginFailed):
        return "password"
    outcome = request.get(AUTH)
    return (outcome.reason if outcome is not None else None) or "missing"


def gateway_middleware(metrics: GatewayMetrics, settings: Settings) -> Middleware:
    """The four layers in one: request id, metrics, errors, authentication (in that order,
    outermost first). One coroutine per request instead of four: each aiohttp middleware
    layer costs a call and a coroutine on every request."""
    clock = time.perf_counter
    anonymous_limit = settings.limits.anonymous_per_second > 0

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = clock()
        # Request id. Keep a caller's id when it is harmless, so one id follows a request
        # through proxies.
        inbound = request.headers.get("X-Request-Id", "")
        # 128 random bits as 32 hex digits (what uuid4().hex gave, at a quarter of the cost).
        request_id = inbound if _SAFE_REQUEST_ID.fullmatch(inbound) else urandom(16).hex()
        request[REQUEST_ID] = request_id
        # Metrics defaults; catalog routes replace them with what they found in the path.
        request[CATALOG] = NO_CATALOG
        request[ROUTE] = "management" if request.raw_path.startswith("/api/") else "other"
        try:
            try:
                # What the router refused (no such path, a method no route takes: TRACE,
                # PROPFIND ...) is answered before any authentication cost.
                refused = request.match_info.http_exception
                if request.method not in _SERVED_METHODS and (
                    refused is None or refused.status != 405
                ):
                    raise MethodNotAllowed(allow=ICEBERG_METHODS)  # CONNECT finds no route
                if refused is not None:
                    raise refused
                headers = request.headers
                _check_body_framing(headers)
                # Authentication attaches who the caller is (or why not); handlers decide
                # whether that is enough. While the backoff holds any address (rarely: its
                # map is empty otherwise), a held client's credential costs no store read.
                backoff = request.app[BACKOFF]
                may_read = not backoff.held or backoff.may_read(
                    request.app[CLIENTS].address(request)
                )
                outcome = await request.app[AUTHENTICATOR].authenticate(headers, may_read=may_read)
                request[AUTH] = outcome
                if outcome is ANONYMOUS and anonymous_limit:
                    check_anonymous_rate(request)
                response = await handler(request)
            except Exception as exc:
                # Errors: inside metrics, so metrics count the answer the client got.
                response = error_answer(request, _client_gone(request, exc))
        except web.HTTPException as exc:  # what the error handling lets through (3xx)
            metrics.request_done(request[CATALOG], request[ROUTE], exc.status, clock() - start)
            raise
        metrics.request_done(request[CATALOG], request[ROUTE], response.status, clock() - start)
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    return middleware


def _check_body_framing(headers: CIMultiDictProxy[str]) -> None:
    """Request bodies reach the upstream only as the bytes the client framed plainly: the
    gateway never decodes them (see server.handler_args), so an encoded one is refused rather
    than forwarded with a framing that is not the gateway's own."""
    encoding = headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() != "identity":
        raise UnsupportedMediaType(
            "Content-Encoding is not supported on requests; send the body unencoded"
        )
    framing = headers.getall("Transfer-Encoding", ())
    if framing and [value.strip().lower() for value in framing] != ["chunked"]:
        raise BadRequest("Malformed request: only chunked transfer coding is accepted")


def _client_gone(request: web.Request, exc: Exception) -> Exception:
    """A read of the request that failed because the client went away is the client's abort
    (499, as nginx logs it), not a server error."""
    if isinstance(exc, ConnectionResetError) or (
        isinstance(exc, ConnectionError) and request.transport is None
    ):
        return ClientClosedRequest()
    return exc


def error_answer(request: web.Request, exc: Exception) -> web.StreamResponse:
    """Every error leaves as JSON; nothing internal (exception text, stack) reaches the client.
    A 3xx ``HTTPException`` is re-raised for aiohttp to send."""
    if isinstance(exc, GatewayError | DomainError):
        if isinstance(exc, Unauthenticated):
            request.app[METRICS].auth_failed(_failure_reason(request, exc))
        return error_response(exc)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        type_ = _HTTP_TYPES.get(exc.status, "RESTException")
        response = iceberg_error(exc.status, type_, exc.reason)
        for name in ("Allow", "WWW-Authenticate"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    _LOGGER.error("unhandled error (request %s)", request.get(REQUEST_ID, "-"), exc_info=exc)
    return iceberg_error(500, "InternalServerError", "Internal gateway error")
