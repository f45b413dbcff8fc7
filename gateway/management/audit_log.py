"""``/api/v1/audit`` (filtered, paginated) and ``/api/v1/me``."""

from __future__ import annotations

from aiohttp import web

from ..errors import BadRequest
from ..state import AUDIT, STORE
from ..store import AuditQuery
from .access import manager, principal, tenant_scope
from .schemas import iso, page_params, parse_time

__all__ = ("routes",)


async def me(request: web.Request) -> web.Response:
    caller = principal(request)
    return web.json_response(
        {
            "id": caller.id,
            "name": caller.name,
            "type": caller.type,
            "role": caller.role.value,
            "tenant": caller.tenant_name,
        }
    )


async def audit(request: web.Request) -> web.Response:
    caller = manager(request)
    limit, offset = page_params(request)
    outcome = request.query.get("outcome")
    if outcome not in (None, "success", "failure"):
        raise BadRequest("outcome: must be success or failure")
    since = request.query.get("since")
    # Recent refusals may still be queued in memory: write them first so they can be found.
    await request.app[AUDIT].flush()
    records, total = await request.app[STORE].query_audit(
        AuditQuery(
            tenant_id=tenant_scope(caller),
            actor=request.query.get("actor"),
            action=request.query.get("action"),
            target=request.query.get("target"),
            outcome=outcome,
            since=parse_time("since", since) if since is not None else None,
        ),
        limit=limit,
        offset=offset,
    )
    items = [
        {
            "at": iso(r.at),
            "actor": r.actor,
            "action": r.action,
            "target_type": r.target_type,
            "target_id": r.target_id,
            "tenant_id": r.tenant_id,
            "outcome": r.outcome,
            "client_addr": r.client_addr,
            "user_agent": r.user_agent,
            "detail": r.detail,
        }
        for r in records
    ]
    return web.json_response({"items": items, "total": total, "limit": limit, "offset": offset})


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/me", me), web.get("/api/v1/audit", audit)]
