"""Catalog routes: everything under ``/v1/``, and the catalog list at ``/api/v1/catalogs``.

Mounts: ``/v1/{name}/v1/...`` is catalog ``name`` (the seed's ``uri = .../v1/default/`` form,
after which clients append ``v1/...``); every other ``/v1/...`` path belongs to the default
catalog. Routing works on the raw path, because namespaces carry ``%1F`` and prefixes ``%2F``.

Order of checks: the token endpoint is answered here and never forwarded; then the path must
be safe, the caller authenticated (401), the catalog known (404) and allowed (403).
"""

from __future__ import annotations

import functools
from urllib.parse import unquote

from aiohttp import web

from .auditing import record_auth_failure
from .authn import ANONYMOUS
from .authz import may_use_catalog
from .errors import BadRequest, Forbidden, NotFound, Unauthenticated
from .identity import Principal, Role
from .keys import AUTH, CATALOG, FORWARDERS, REQUEST_ID, ROUTE, SETTINGS
from .metrics import route_class
from .oauth import token_endpoint
from .proxy import ForwardRequest
from .settings import RESERVED_CATALOG_NAMES

__all__ = ("catalog_request", "list_catalogs", "public_base_url", "split_catalog_path")


def split_catalog_path(rest: str) -> tuple[str | None, str]:
    """``rest`` is the raw path after ``/v1/``: (mount name or None for default, tail)."""
    name, sep, after = rest.partition("/")
    # "/v1/namespaces/v1/..." is namespace "v1" of the default catalog, not a mount.
    if sep and name not in RESERVED_CATALOG_NAMES and (after == "v1" or after.startswith("v1/")):
        return name, after[3:]
    return None, rest


def _lenient(tail: str) -> str:
    """``tail`` as the most lenient upstream may read it: decoded (repeatedly: ``%252F``),
    cut at a NUL, ``\\`` as ``/``, without ``;parameters`` (servlet containers drop them:
    ``..;`` is ``..`` and ``oauth;x/tokens`` is ``oauth/tokens``) and with ``//`` merged, as
    Tomcat and Spring do: the classic ways around a proxy's path checks."""
    decoded = tail
    for _ in range(3):
        once = unquote(decoded)
        if once == decoded:
            break
        decoded = once
    decoded = decoded.partition("\x00")[0].replace("\\", "/")
    segments = (segment.partition(";")[0] for segment in decoded.split("/"))
    return "/".join(segment for segment in segments if segment)


def _is_token_path(lenient: str) -> bool:
    # Judged on the lenient form: an upstream that decodes %2F, drops ;params or merges //
    # would otherwise be reachable at its own token endpoint through a disguised path.
    return lenient.lower() == "oauth/tokens"


def _unsafe(tail: str, lenient: str) -> str | None:
    """Why the path is refused (400), or None."""
    for segment in lenient.split("/"):
        if segment in (".", ".."):
            return "Malformed request: dot segments are not allowed in paths"
    if any(ord(ch) < 32 for ch in tail):
        return "Malformed request: control characters in path"
    return None


@functools.lru_cache(maxsize=4096)
def _classify(tail: str) -> tuple[bool, str | None, str]:
    """(is it the token endpoint, why it is refused or None, route class) for a raw tail.

    A pure function of the path, cached: clients ask for the same few paths over and over,
    and a flood of distinct paths only cycles a bounded cache."""
    lenient = _lenient(tail)  # computed once: both checks judge the same form
    if _is_token_path(lenient):
        return True, None, "token"
    return False, _unsafe(tail, lenient), route_class(tail)


def _principal(request: web.Request, catalog: str | None) -> Principal:
    principal = request[AUTH].principal
    if principal is None:
        record_auth_failure(request, "catalog", catalog)
        raise Unauthenticated()
    return principal


@functools.cache
def _bench_principal(tenant: str) -> Principal:
    """BENCH-ONLY caller for a catalog with ``require_auth = false`` (which settings refuse
    unless PANGOLIN_BENCH=1): a fixed identity, never a real one from the store."""
    return Principal(
        id="bench-anonymous", name="bench-anonymous", type="bench", role=Role.TENANT_USER,
        tenant_id="bench", tenant_name=tenant, key_generation=0,
    )  # fmt: skip


async def catalog_request(request: web.Request) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    rest = raw_path[len("/v1/") :]
    mount, tail = split_catalog_path(rest)
    is_token, unsafe, route = _classify(tail)
    request[ROUTE] = route
    if is_token:
        return await token_endpoint(request)
    if unsafe is not None:
        raise BadRequest(unsafe)
    settings = request.app[SETTINGS]
    name = mount if mount is not None else settings.default_catalog
    catalog = settings.catalogs.get(name) if name else None
    if catalog is not None and name:
        request[CATALOG] = name  # only a configured name: a label, never the client's text
    if catalog is not None and not catalog.require_auth and request[AUTH] is ANONYMOUS:
        principal = _bench_principal(catalog.tenant)  # bench only; a bad credential still 401s
    else:
        principal = _principal(request, name)
    if catalog is None:
        raise NotFound(f"No such catalog: {name}" if mount is not None else "No default catalog")
    if not may_use_catalog(principal, catalog):
        raise Forbidden()
    forwarder = request.app[FORWARDERS][name]
    return await forwarder.forward(
        ForwardRequest(request, tail, query, principal, request[REQUEST_ID])
    )


def public_base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS].server.public_url
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


async def list_catalogs(request: web.Request) -> web.Response:
    """The catalogs the caller may use, with the settings to give a client."""
    principal = _principal(request, None)
    settings = request.app[SETTINGS]
    base = public_base_url(request)
    catalogs = [
        {
            "name": name,
            "tenant": catalog.tenant,
            "default": name == settings.default_catalog,
            "uri": f"{base}/v1/{name}/",
            "oauth2-server-uri": f"{base}/v1/{name}/v1/oauth/tokens",
        }
        for name, catalog in sorted(settings.catalogs.items())
        if may_use_catalog(principal, catalog)
    ]
    return web.json_response({"catalogs": catalogs})
