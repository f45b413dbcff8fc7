"""Tenants (Root), Audit and Catalogs: the admin UI's smaller pages."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..audit.events import client_details
from ..auth.authz import may_use_catalog
from ..errors import DomainError, GatewayError, describe
from ..management.access import manager, principal, root, tenant_scope
from ..management.catalogs import public_base_url
from ..management.parsing import read_fields, read_parameters
from ..management.schemas import AuditQuery, CreateTenant
from ..management.trail import audited, record_refusal
from ..state import AUDIT, CONFIGURED, STORE, TENANTS
from ..store import AuditQuery as StoreAuditQuery
from .guard import guarded, redirect
from .snippets import snippets
from .views import ago, exact, form_text, now, render

__all__ = ("routes",)

AUDIT_PAGE: Final = 50


async def tenants_page(
    request: web.Request, error: str | None = None, status: int = 200
) -> web.Response:
    caller = root(request)
    return render(request, "tenants.html", {
        "tenants": await request.app[TENANTS].list(), "error": error, "ago": ago,
        "exact": exact, "now": now(request),
    }, status=status, caller=caller)  # fmt: skip


@audited("tenant.create", "tenant")
async def create_tenant(request: web.Request) -> web.StreamResponse:
    caller = root(request)
    form = await request.post()
    try:
        body = read_fields(CreateTenant, {"name": form_text(form, "name")})
        await request.app[TENANTS].create(
            body.name, actor=caller.id, client=client_details(request)
        )
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 409):
            raise
        record_refusal(request, "tenant.create", "tenant", exc)
        return await tenants_page(request, message, status)
    return redirect("/ui/tenants")


@audited("tenant.delete", "tenant")
async def delete_tenant(request: web.Request) -> web.StreamResponse:
    caller = root(request)
    await request.app[TENANTS].delete(
        request.match_info["id"], actor=caller.id, client=client_details(request)
    )
    return redirect("/ui/tenants")


async def audit_page(request: web.Request) -> web.Response:
    caller = manager(request)
    # The API's query model (the same filters, rules and messages); a filter form leaves
    # the fields it does not use empty.
    raw = {k: v for k, v in request.query.items() if v != ""}
    query = read_parameters(AuditQuery, {**raw, "limit": str(AUDIT_PAGE)})
    await request.app[AUDIT].flush()  # recent refusals may still be queued in memory
    records, total = await request.app[STORE].query_audit(
        StoreAuditQuery(
            tenant_id=tenant_scope(caller), actor=query.actor, action=query.action,
            target=query.target, outcome=query.outcome, since=query.since,
        ),
        limit=query.limit, offset=query.offset,
    )  # fmt: skip
    filters = {k: v for k, v in raw.items() if k not in ("limit", "offset")}
    return render(request, "audit.html", {
        "records": records, "total": total, "filters": filters, "offset": query.offset,
        "limit": query.limit, "exact": exact,
    }, caller=caller)  # fmt: skip


async def catalogs_page(request: web.Request) -> web.Response:
    caller = principal(request)
    settings = request.app[CONFIGURED].settings
    base = public_base_url(request)
    usable = [
        (name, catalog.tenant, snippets(base, name, "<service-user-id>", "<api-key>"))
        for name, catalog in sorted(settings.catalogs.items())
        if may_use_catalog(caller, catalog)
    ]
    return render(request, "catalogs.html", {
        "catalogs": usable, "default": settings.default_catalog, "base": base,
    }, caller=caller)  # fmt: skip


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ui/tenants", guarded(tenants_page)),
        web.post("/ui/tenants", guarded(create_tenant)),
        web.post("/ui/tenants/{id}/delete", guarded(delete_tenant)),
        web.get("/ui/audit", guarded(audit_page)),
        web.get("/ui/catalogs", guarded(catalogs_page)),
    ]
