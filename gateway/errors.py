"""Error responses in the Iceberg REST shape: ``{"error": {"message", "type", "code"}}``.

Clients read ``code`` and ``type`` from the body (the Java client maps them to exceptions), so
``code`` always equals the HTTP status. Messages are fixed strings: never a key, a token,
``repr(exc)`` or a stack trace. The token endpoint uses RFC 6749 errors instead (``oauth``).

Tree of what the gateway raises on catalog routes::

    GatewayError
    ├── Unauthenticated      401  NotAuthorizedException   (adds WWW-Authenticate: Bearer)
    ├── Forbidden            403  ForbiddenException
    ├── BadRequest           400  BadRequestException
    ├── NotFound             404  NoSuchCatalogException / NotFoundException
    ├── MethodNotAllowed     405  MethodNotAllowedException  (adds Allow)
    ├── Conflict             409  AlreadyExistsException
    ├── PayloadTooLarge      413  BadRequestException
    ├── UnsupportedMediaType 415  UnsupportedMediaTypeException
    ├── ClientClosedRequest  499  (nginx's code: the client went away; nothing can be sent)
    ├── UpstreamUnavailable  503  ServiceUnavailableException
    ├── UpstreamTimeout      504  GatewayTimeoutException
    └── UpstreamError        502  BadGatewayException
"""

from __future__ import annotations

import json
from typing import ClassVar

from aiohttp import web

__all__ = (
    "BadRequest",
    "ClientClosedRequest",
    "Conflict",
    "Forbidden",
    "GatewayError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "UnsupportedMediaType",
    "UpstreamUnavailable",
    "iceberg_error",
)

UNAUTHENTICATED_MESSAGE = "Not authorized: a valid API key or access token is required"


def iceberg_error(
    status: int, type_: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = json.dumps({"error": {"message": message, "type": type_, "code": status}})
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


class GatewayError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "InternalServerError"
    message: ClassVar[str] = "Internal gateway error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)
        self.detail = message or self.message

    def headers(self) -> dict[str, str] | None:
        return None

    def response(self) -> web.Response:
        return iceberg_error(self.status, self.type, self.detail, self.headers())


class Unauthenticated(GatewayError):
    status = 401
    type = "NotAuthorizedException"
    message = UNAUTHENTICATED_MESSAGE

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="pangolin"'}


class Forbidden(GatewayError):
    status = 403
    type = "ForbiddenException"
    message = "Forbidden: this principal may not use this catalog"


class BadRequest(GatewayError):
    status = 400
    type = "BadRequestException"
    message = "Malformed request"


class NotFound(GatewayError):
    status = 404
    type = "NotFoundException"
    message = "Not found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "MethodNotAllowedException"
    message = "Method not allowed"

    def __init__(self, message: str | None = None, *, allow: tuple[str, ...]) -> None:
        super().__init__(message or f"Method not allowed here; use {', '.join(allow)}")
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allow)}


class Conflict(GatewayError):
    status = 409
    type = "AlreadyExistsException"
    message = "Already exists"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "BadRequestException"
    message = "Request body too large"


class UnsupportedMediaType(GatewayError):
    status = 415
    type = "UnsupportedMediaTypeException"
    message = "Unsupported media type"


class ClientClosedRequest(GatewayError):
    """The client disconnected before its request was read: counted and logged as 499."""

    status = 499
    type = "ClientClosedRequest"
    message = "Client closed request"


class UpstreamUnavailable(GatewayError):
    status = 503
    type = "ServiceUnavailableException"
    message = "The catalog is unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "GatewayTimeoutException"
    message = "The catalog did not answer in time"


class UpstreamError(GatewayError):
    status = 502
    type = "BadGatewayException"
    message = "The catalog connection failed"
