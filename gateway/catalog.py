"""Catalog routes: everything under ``/v1/``.

What a path is (mount, token endpoint, Iceberg route, refusals) is decided by ``routing``
alone. Order of checks: a path the grammar refuses is 400 (malformed, or a name that breaks
the identifier rule); the token endpoint is answered here and never forwarded; a method the
route does not take is 405; a ``parent`` query that breaks the identifier rule is 400; then
the caller must be authenticated (401), the catalog known (404) and allowed (403). Last, a body
that names what it creates or renames is read whole (within ``forwarder.MAX_JUDGED_BODY``,
1 MiB) and its names judged (400); it goes upstream as the bytes the client sent.
"""

from __future__ import annotations

from aiohttp import web

from .auth.authz import may_use_catalog
from .auth.caller import require_principal
from .auth.token_endpoint import token_endpoint
from .errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from .identifiers import NAMED_IN_BODY, body_refusal
from .proxy import ForwardRequest
from .routing import parse_request_path, query_refusal
from .state import CATALOG, FORWARDERS, REQUEST_ID, ROUTE, SETTINGS

__all__ = ("catalog_request",)


async def catalog_request(request: web.Request) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    path = parse_request_path(raw_path)
    request[ROUTE] = path.route.klass
    if path.refusal is not None:
        raise BadRequest(path.refusal)
    if path.is_token_endpoint:
        return await token_endpoint(request)
    if request.method not in path.route.operations:
        raise MethodNotAllowed(allow=path.route.methods)
    if (refusal := query_refusal(path, request.method, query)) is not None:
        raise BadRequest(refusal)
    settings = request.app[SETTINGS]
    name = path.mount if path.mount is not None else settings.default_catalog
    catalog = settings.catalogs.get(name) if name else None
    if catalog is not None and name:
        request[CATALOG] = name  # only a configured name: a label, never the client's text
    principal = require_principal(request, "catalog", name)
    if principal.type == "user" and not settings.server.allow_sessions_on_catalog_routes:
        raise Forbidden(
            "Forbidden: session tokens are for the management API; "
            "use a service user's key or token for catalog requests"
        )
    if catalog is None:
        raise NotFound(
            f"No such catalog: {name}" if path.mount is not None else "No default catalog"
        )
    if not may_use_catalog(principal, catalog):
        raise Forbidden()
    forwarder = request.app[FORWARDERS][name]
    body = None
    operation = path.route.operations[request.method]
    if operation in NAMED_IN_BODY and request.body_exists:
        body = await forwarder.read_body(request)
        if (refusal := body_refusal(operation, body)) is not None:
            raise BadRequest(refusal)
    return await forwarder.forward(
        ForwardRequest(request, path, query, principal, request[REQUEST_ID], body)
    )
