"""Forward-auth: the gateway decides, a proxy the team already runs moves the bytes.

One decision, three dialects: nginx ``auth_request`` (``GET /forward-auth/nginx`` with the
original method and URI in ``X-Original-Method`` / ``X-Original-URI``), Traefik ForwardAuth
(``/forward-auth/traefik`` with ``X-Forwarded-Method`` / ``X-Forwarded-Uri``) and Envoy
``ext_authz`` in HTTP mode (the original method on ``/forward-auth/envoy`` + the original path,
``path_prefix``). The decision is the proxy's own (``catalog.admit``, ``catalog.confine``): the
path grammar, the method rules, authentication with its backoff, rate limits, allowlists and
key-age policy, the catalog and the caller's grants. Allowed: 200 with the role headers and
the upstream credential (``Authorization``) the proxy must send instead of the client's.
Refused: the Iceberg error JSON with its status and ``WWW-Authenticate``; nginx passes only
401 and 403 on (anything else would be its 500), so under nginx every other refusal is a 403,
and the JSON, which nginx drops, also travels in ``X-Pangolin-Error`` for its ``error_page``.

Fail closed: what forward-auth cannot see (a body, the upstream's answer) is never allowed
through it. A request whose body the gateway judges, whose answer it filters (``/v1/config``,
table and view answers, a confined caller's lists, held-back credentials), which it would send
upstream under another path (a mounted catalog, the warehouse fence), or the token endpoint,
is refused with 403 "send this request to the gateway's own proxy": the shipped proxy
configurations route those to the gateway, and a proxy that does not is refused, never let
through. The endpoints exist only when ``forward_auth.secret`` is set, and answer only a
request carrying it (``X-Pangolin-Forward-Auth``, compared in constant time): their answers
hold the gateway's upstream credential."""

from __future__ import annotations

import hmac
import json
import math
from typing import Final

from aiohttp import web

from .auth.assertions import ASSERTION_HEADER
from .catalog import admit, confine
from .errors import BadRequest, Forbidden, MethodNotAllowed, ProxyRequired
from .middleware import error_answer
from .proxy import ForwardRequest
from .routing import ICEBERG_METHODS, parse_request_path
from .state import CONFIGURED, DECIDED, REQUEST_ID, ROUTE

__all__ = ("ENVOY_PREFIX", "SECRET_HEADER", "envoy", "nginx", "traefik")

SECRET_HEADER: Final = "X-Pangolin-Forward-Auth"
ENVOY_PREFIX: Final = "/forward-auth/envoy"
# Headers the client sent that never reach the upstream through the proxy, for Envoy, which
# otherwise keeps whatever the decision does not replace: its credentials, and an identity
# assertion of its own when the catalog asks for none.
_CREDENTIALS: Final = ("x-api-key", "authorization", ASSERTION_HEADER.lower())
# Every header a decision reads a credential from (catalog.admit): a cached decision must
# vary with each of them, all copies in order.
DECISION_VARY: Final = "X-API-Key, Authorization"


async def nginx(request: web.Request) -> web.StreamResponse:
    headers = request.headers
    try:
        return await _decide(
            request, "nginx", headers.get("X-Original-Method"), headers.get("X-Original-URI")
        )
    except Exception as exc:
        answer = error_answer(request, exc)
    if answer.status not in (401, 403):
        answer.set_status(403)
    if isinstance(answer, web.Response) and answer.body is not None:
        # For the error_page location, which cannot read the body nginx drops: the gateway's
        # own JSON (ASCII, no line breaks: json.dumps escapes them), with the status nginx
        # can pass on.
        doc = json.loads(bytes(answer.body))  # type: ignore[arg-type]  # bytes: web.Response
        doc["error"]["code"] = answer.status
        answer.headers["X-Pangolin-Error"] = json.dumps(doc, ensure_ascii=True)
    return answer


async def traefik(request: web.Request) -> web.StreamResponse:
    headers = request.headers
    method, uri = headers.get("X-Forwarded-Method"), headers.get("X-Forwarded-Uri")
    return await _decide(request, "traefik", method, uri)


async def envoy(request: web.Request) -> web.StreamResponse:
    uri = request.raw_path[len(ENVOY_PREFIX) :]
    answer = await _decide(request, "envoy", request.method, uri)
    # Envoy keeps the client's headers the decision does not replace: its credentials must
    # go, except the Authorization the decision itself carries for the upstream.
    remove = [h for h in _CREDENTIALS if h not in answer.headers]
    answer.headers["X-Envoy-Auth-Headers-To-Remove"] = ",".join(remove)
    return answer


async def _decide(
    request: web.Request, dialect: str, method: str | None, uri: str | None
) -> web.Response:
    request[ROUTE] = "forward_auth"
    settings = request.app[CONFIGURED].settings.forward_auth
    given = request.headers.get(SECRET_HEADER, "")
    # Before anything else: only the proxy may ask. Constant time, on bytes (compare_digest
    # refuses non-ASCII text, which a header may hold).
    if not hmac.compare_digest(given.encode(), settings.secret.encode()):
        raise Forbidden("Forbidden: forward-auth answers only the proxy holding its secret")
    if not method or not uri or not uri.startswith("/"):
        raise BadRequest("Malformed forward-auth request: the original method and URI are missing")
    raw_path, _, query = uri.partition("?")
    # Only after the secret: nobody else puts text of theirs into the access log this way.
    # A method Iceberg does not use is logged as "-", never as the text the proxy passed on.
    request[DECIDED] = (dialect, method if method in ICEBERG_METHODS else "-", raw_path)
    if method not in ICEBERG_METHODS:
        raise MethodNotAllowed(allow=ICEBERG_METHODS)
    path = parse_request_path(raw_path)
    if path.refusal is not None:
        raise BadRequest(path.refusal)
    if path.is_token_endpoint:
        raise ProxyRequired("the token endpoint is the gateway's own")
    admitted = admit(request, method, path, query)
    if admitted.reads_body:
        raise ProxyRequired("the gateway judges its body")
    fwd = ForwardRequest(request, method, path, query, admitted.principal, request[REQUEST_ID])
    if admitted.confined:
        confine(fwd, admitted, None)
    headers, valid = await admitted.forwarder.decision(fwd, uri)
    answer = web.Response(status=200, headers=headers)
    cache = settings.cache_seconds
    if valid < cache + 1:
        # A cached decision hands its identity assertion and upstream token on for as long
        # as it is kept: never past their expiry. nginx counts whole seconds and keeps an
        # entry up to a second past its X-Accel-Expires, hence the second less.
        cache = max(0, math.floor(valid) - 1)
    if cache:
        # For nginx's proxy_cache, which obeys this over Cache-Control's "private" only when
        # it comes first: the decision cache's TTL is the gateway's to say (the setting,
        # shortened to what the decision carries).
        answer.headers["X-Accel-Expires"] = str(cache)
    answer.headers["Cache-Control"] = f"private, max-age={cache}" if cache else "no-store"
    # The decision is the credentials'. nginx's decision cache keys on the request alone and
    # tells callers apart by this Vary: it keeps an MD5 of these headers' values per cached
    # decision, never the values (a cache key it would write into its files in clear).
    answer.headers["Vary"] = DECISION_VARY
    return answer
