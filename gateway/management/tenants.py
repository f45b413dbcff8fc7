"""``/api/v1/tenants``: Root creates, lists and deletes tenants; others see their own."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..audit.events import client_details
from ..errors import Forbidden
from ..identity.models import Principal, Role
from ..state import TENANTS
from .access import principal
from .schemas import Field, read_body, tenant_json
from .trail import audited

__all__ = ("routes",)

_CREATE: Final = {"name": Field(str, required=True)}


def _root(request: web.Request) -> Principal:
    caller = principal(request)
    if caller.role is not Role.ROOT:
        raise Forbidden("Forbidden: managing tenants needs the Root role")
    return caller


@audited("tenant.create", "tenant")
async def create(request: web.Request) -> web.Response:
    caller = _root(request)
    body = await read_body(request, _CREATE)
    tenant = await request.app[TENANTS].create(
        body["name"], actor=caller.id, client=client_details(request)
    )
    return web.json_response(tenant_json(tenant), status=201)


async def list_(request: web.Request) -> web.Response:
    caller = principal(request)
    tenants = await request.app[TENANTS].list()
    if caller.role is not Role.ROOT:
        tenants = [t for t in tenants if t.id == caller.tenant_id]
    return web.json_response({"items": [tenant_json(t) for t in tenants], "total": len(tenants)})


@audited("tenant.delete", "tenant")
async def delete(request: web.Request) -> web.Response:
    caller = _root(request)
    await request.app[TENANTS].delete(
        request.match_info["id"], actor=caller.id, client=client_details(request)
    )
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/tenants", create),
        web.get("/api/v1/tenants", list_),
        web.delete("/api/v1/tenants/{id}", delete),
    ]
