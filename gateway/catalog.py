"""Catalog routes: everything under ``/v1/``.

What a path is (mount, token endpoint, Iceberg route, refusals) is decided by ``routing``
alone. Order of checks: a path the grammar refuses is 400 (malformed, or a name that breaks
the identifier rule); the token endpoint is answered here and never forwarded; a method the
route does not take is 405; a ``parent`` query that breaks the identifier rule is 400; then
the caller must be authenticated (401), the catalog known (404) and usable by the caller's
tenant (403). A body that names what it creates, renames or commits is read whole (within
``forwarder.MAX_JUDGED_BODY``, 1 MiB) and its names judged (400); so is the body of any
body-aware operation when grants decide for the caller (``authz.is_confined``). Then every
need of the request (``requirements``) must be allowed, or it is 403 before anything is
forwarded. What goes upstream is the bytes the client sent.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from .auth.authz import access_level, allows, is_confined, may_use_catalog, sees
from .auth.caller import require_principal
from .auth.requirements import Need, needs
from .auth.token_endpoint import token_endpoint
from .errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from .identifiers import NAMED_IN_BODY, NOT_A_JSON_OBJECT, json_object, names_refusal
from .identity.models import Principal
from .proxy import Forwarder, ForwardRequest
from .proxy.rewrite import filter_list
from .routing import CatalogPath, Decision, decide, parse_request_path, query_refusal
from .settings import CatalogSettings
from .state import CATALOG, CONFIGURED, REQUEST_ID, ROUTE

__all__ = ("Admitted", "admit", "catalog_request", "confine")


async def catalog_request(request: web.Request) -> web.StreamResponse:
    raw_path, _, query = request.raw_path.partition("?")
    path = parse_request_path(raw_path)
    request[ROUTE] = path.route.klass
    if path.refusal is not None:
        raise BadRequest(path.refusal)
    if path.is_token_endpoint:
        return await token_endpoint(request)
    admitted = admit(request, request.method, path, query)
    forwarder = admitted.forwarder
    # From here to the end of the answer: a reload meanwhile must not close its transport.
    with forwarder.in_flight:
        body = None
        doc = None
        if request.body_exists and admitted.reads_body:
            body = await forwarder.read_body(request)
            doc = json_object(body)
            if doc is None:
                raise BadRequest(NOT_A_JSON_OBJECT)
            operation = path.route.operations[request.method]
            if operation in NAMED_IN_BODY and (refusal := names_refusal(operation, doc)):
                raise BadRequest(refusal)
        fwd = ForwardRequest(
            request, request.method, path, query, admitted.principal, request[REQUEST_ID], body
        )
        if admitted.confined:
            confine(fwd, admitted, doc)
        return await forwarder.forward(fwd)


@dataclass(slots=True)  # not frozen: built once per request, and frozen builds slower
class Admitted:
    """A catalog request whose caller may use the catalog, before its body and needs are
    judged."""

    name: str
    catalog: CatalogSettings
    forwarder: Forwarder
    principal: Principal
    confined: bool  # grants decide for this caller (authz.is_confined)
    # The body must be read whole and judged: it names what it creates, renames or commits,
    # or grants decide and what it does depends on it.
    reads_body: bool
    body_aware: bool


def admit(request: web.Request, method: str, path: CatalogPath, query: str) -> Admitted:
    """Everything decided before a body is read, for the gateway's proxy and forward-auth
    alike: 405, a bad ``parent`` query (400), the caller (401), the catalog (404) and whether
    the caller's tenant may use it (403). ``path`` is neither refused nor the token endpoint."""
    if method not in path.route.operations:
        raise MethodNotAllowed(allow=path.route.methods)
    if (refusal := query_refusal(path, method, query)) is not None:
        raise BadRequest(refusal)
    # Both at once: a reload replaces them together (proxy.configured).
    configured = request.app[CONFIGURED]
    settings, forwarders = configured.settings, configured.forwarders
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
    confined = is_confined(principal, catalog)
    privilege = path.route.privileges[method]
    body_aware = confined and privilege is not None and privilege.body_aware
    return Admitted(
        name, catalog, forwarders[name], principal, confined,
        reads_body=path.route.operations[method] in NAMED_IN_BODY or body_aware,
        body_aware=body_aware,
    )  # fmt: skip


def _refusal(need: Need) -> str:
    if need.visibility:
        return "Forbidden: none of your grants is on, above or below this resource"
    where = "the catalog" if not need.resource else "this resource or one above it"
    return f"Forbidden: this request needs the {need.action} grant on {where}"


# Operations whose answers may carry storage credentials (LoadTableResult, LoadCredentials,
# since spec 1.10 the scan-planning results, a view's config, /v1/config's defaults and
# overrides) and that take the delegation header. (registerTable's answer too, but it needs
# manage, which brings write.)
_VENDING = frozenset(
    {"getConfig", "loadTable", "loadCredentials", "createTable", "planTableScan",
     "fetchPlanningResult", "fetchScanTasks", "loadView", "createView"}
)  # fmt: skip
_LISTS = frozenset({"listNamespaces", "listTables", "listViews"})


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What a confined caller's request may do, and what the forwarder must hold back."""

    refusal: str | None  # 403 with this message, before anything is forwarded
    read_only: bool
    no_storage_writes: bool
    answer_filter: Callable[[bytes], bytes | None] | None


MEMO_SIZE: Final = 4096  # verdicts remembered per grant index (then forgotten at once)


def confine(fwd: ForwardRequest, admitted: Admitted, doc: dict[str, Any] | None) -> None:
    """Judge a confined caller's request and tell the forwarder the outcome. Without a body
    to judge, the verdict depends only on the caller's grant index, the catalog's default
    and the request line: remembered on the index, so a repeated request costs one lookup."""
    method = fwd.method
    name, catalog = admitted.name, admitted.catalog
    memo = fwd.principal.grants.memo
    key = None if admitted.body_aware else (name, catalog.default_access, fwd.path, method,
                                              fwd.query)  # fmt: skip
    verdict = memo.get(key) if key is not None else None
    if verdict is None:
        decision = decide(fwd.path, method, fwd.query)
        assert decision is not None  # a routed method of a path the grammar accepted
        verdict = _judge(fwd.principal, name, catalog, decision, doc, fwd.query)
        if key is not None:
            if len(memo) >= MEMO_SIZE:
                memo.clear()
            memo[key] = verdict
    if verdict.refusal is not None:
        # The upstream was never asked: the refusal says nothing about what exists. It names
        # the action and the kind of resource, never the client's names.
        raise Forbidden(verdict.refusal)
    fwd.read_only = verdict.read_only
    fwd.no_storage_writes = verdict.no_storage_writes
    fwd.answer_filter = verdict.answer_filter


def _judge(
    principal: Principal,
    name: str,
    catalog: CatalogSettings,
    decision: Decision,
    doc: dict[str, Any] | None,
    query: str,
) -> _Verdict:
    found = needs(decision, doc, query)
    for need in found:
        if need.visibility:
            ok = sees(principal, name, catalog, need.resource)
        else:
            ok = allows(principal, name, catalog, need.resource, need.action)
        if not ok:
            return _Verdict(_refusal(need), False, False, None)
    answer_filter = None
    if decision.operation in _LISTS and access_level(principal, catalog) == "none":
        # (with "read", everything is visible: nothing to filter)
        visible = functools.partial(principal.grants.visible, name)
        answer_filter = functools.partial(filter_list, visible=visible)
    read_only = all(
        need.action == "read" and not allows(principal, name, catalog, need.resource, "write")
        for need in found
    )
    no_storage_writes = False
    if decision.operation in _VENDING:
        table = decision.resource
        if decision.operation in ("createTable", "createView"):  # the new one's
            table = (*table, str((doc or {}).get("name", "")))
        no_storage_writes = not allows(principal, name, catalog, table, "write")
    return _Verdict(None, read_only, no_storage_writes, answer_filter)
