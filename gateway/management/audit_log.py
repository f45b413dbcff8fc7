"""``/api/v1/audit`` (filtered, paginated) and ``/api/v1/me`` (who the caller is, and what it
may do in each catalog)."""

from __future__ import annotations

from aiohttp import web

from ..auth.authz import catalog_access
from ..state import AUDIT, CONFIGURED, STORE
from ..store import AuditQuery as StoreAuditQuery
from .access import manager, principal, tenant_scope
from .operations import Operation
from .parsing import read_query
from .schemas import AuditPage, AuditQuery, AuditRecordView, GrantView, Me

__all__ = ("OPERATIONS",)


async def me(request: web.Request) -> web.Response:
    caller = principal(request)
    answer = Me(
        id=caller.id,
        name=caller.name,
        type=caller.type,
        role=caller.role,
        tenant=caller.tenant_name,
        access=catalog_access(caller, request.app[CONFIGURED].settings.catalogs),
        # The grants the caller's requests are judged by (its principal's index): what is
        # enforced now, not a second reading of the store.
        grants=[GrantView.of(grant) for grant in caller.grants.grants],
    )
    return web.json_response(answer.model_dump(mode="json"))


async def audit(request: web.Request) -> web.Response:
    caller = manager(request)
    query = read_query(request, AuditQuery)
    # Recent refusals may still be queued in memory: write them first so they can be found.
    await request.app[AUDIT].flush()
    records, total = await request.app[STORE].query_audit(
        StoreAuditQuery(
            tenant_id=tenant_scope(caller),
            actor=query.actor,
            action=query.action,
            target=query.target,
            outcome=query.outcome,
            since=query.since,
        ),
        limit=query.limit,
        offset=query.offset,
    )
    items = [AuditRecordView.of(r) for r in records]
    page = AuditPage(items=items, total=total, limit=query.limit, offset=query.offset)
    return web.json_response(page.model_dump(mode="json"))


OPERATIONS = (
    Operation("GET", "/api/v1/me", me, "Who the caller is", 200, Me, errors=(401,)),
    Operation("GET", "/api/v1/audit", audit, "Audit records, newest first", 200, AuditPage,
              query=AuditQuery),
)  # fmt: skip
