"""Errors, and their one translation into responses in the Iceberg REST shape:
``{"error": {"message", "type", "code"}}``.

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
    ├── PayloadTooLarge      413  BadRequestException
    ├── UnsupportedMediaType 415  UnsupportedMediaTypeException
    ├── TooManyRequests      429  TooManyRequestsException  (adds Retry-After)
    ├── ClientClosedRequest  499  (nginx's code: the client went away; nothing can be sent)
    ├── UpstreamUnavailable  503  ServiceUnavailableException
    ├── UpstreamTimeout      504  GatewayTimeoutException
    └── UpstreamError        502  BadGatewayException

What the domain refuses (identity lifecycles, the store's rules) is a ``DomainError``, which
knows nothing of HTTP; ``error_response`` is the one place either tree becomes an answer::

    DomainError
    ├── InvalidInput         400  BadRequestException      ("field: what is wrong")
    ├── NoSuchThing          404  NotFoundException
    └── Conflicting          409  ConflictException         (AlreadyExists: AlreadyExistsException;
                                                             the store's InUse and LastRoot)
"""

from __future__ import annotations

import json
from typing import ClassVar, Final

from aiohttp import web

__all__ = (
    "BadRequest",
    "ClientClosedRequest",
    "Forbidden",
    "GatewayError",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "ProxyRequired",
    "TooManyRequests",
    "Unauthenticated",
    "UpstreamError",
    "UpstreamTimeout",
    "UnsupportedMediaType",
    "UpstreamUnavailable",
    "AlreadyExists",
    "Conflicting",
    "DomainError",
    "InvalidInput",
    "LoginFailed",
    "NoSuchThing",
    "describe",
    "error_response",
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


class LoginFailed(Unauthenticated):
    """A refused password login (its own message; counted as a "password" failure)."""

    message = "Invalid username or password"


class Forbidden(GatewayError):
    status = 403
    type = "ForbiddenException"
    message = "Forbidden: this principal may not use this catalog"


class ProxyRequired(Forbidden):
    """Forward-auth: a request only the gateway's own proxy may carry (fail closed: a proxy
    configured to send it elsewhere gets a refusal, never an allow)."""

    def __init__(self, why: str) -> None:
        super().__init__(
            f"Forbidden: send this request to the gateway's own proxy, not through "
            f"forward-auth ({why})"
        )


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


class TooManyRequests(GatewayError):
    """A limit or a backoff: try again after ``retry_after`` seconds (sent as Retry-After)."""

    status = 429
    type = "TooManyRequestsException"
    message = "Too many failed authentications from this address; retry later"

    def __init__(self, retry_after: int, message: str | None = None) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


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


# -- the domain's refusals ----------------------------------------------------------------------


class DomainError(Exception):
    """A refusal of the domain; ``message`` is written for the client (no secret, no repr)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError, ValueError):
    """Bad input for a lifecycle call; ``field`` names what was wrong."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NoSuchThing(DomainError, LookupError):
    """``what`` does not exist (or is not the caller's to see); ``field``: the input naming it."""

    def __init__(self, what: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: no such {what}" if field else f"No such {what}")


class Conflicting(DomainError):
    """The change contradicts the current state."""


class AlreadyExists(Conflicting):
    pass


_DOMAIN_ANSWERS: Final[list[tuple[type[DomainError], int, str]]] = [
    (InvalidInput, 400, "BadRequestException"),
    (NoSuchThing, 404, "NotFoundException"),
    (AlreadyExists, 409, "AlreadyExistsException"),
    (Conflicting, 409, "ConflictException"),
]


def describe(exc: GatewayError | DomainError) -> tuple[int, str, str]:
    """(status, Iceberg error type, client message) of a refusal of either tree."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.type, exc.detail
    for kind, status, type_ in _DOMAIN_ANSWERS:
        if isinstance(exc, kind):
            return status, type_, exc.message
    return 400, "BadRequestException", exc.message


def error_response(exc: GatewayError | DomainError) -> web.Response:
    """The answer to a refusal of either tree: the one place errors become HTTP."""
    if isinstance(exc, GatewayError):
        return exc.response()
    return iceberg_error(*describe(exc))
