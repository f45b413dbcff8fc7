"""``/api/v1/tenants``: Root creates, lists and deletes tenants; others see their own."""

from __future__ import annotations

from aiohttp import web

from ..audit.events import client_details
from ..identity.models import Role
from ..state import TENANTS
from .access import principal, root
from .operations import Operation
from .parsing import read_body
from .schemas import CreateTenant, TenantList, TenantView
from .trail import audited

__all__ = ("OPERATIONS",)


@audited("tenant.create", "tenant")
async def create(request: web.Request) -> web.Response:
    caller = root(request)
    body = await read_body(request, CreateTenant)
    tenant = await request.app[TENANTS].create(
        body.name, actor=caller.id, client=client_details(request)
    )
    return web.json_response(TenantView.of(tenant).model_dump(mode="json"), status=201)


async def list_(request: web.Request) -> web.Response:
    caller = principal(request)
    tenants = await request.app[TENANTS].list()
    if caller.role is not Role.ROOT:
        tenants = [t for t in tenants if t.id == caller.tenant_id]
    answer = TenantList(items=[TenantView.of(t) for t in tenants], total=len(tenants))
    return web.json_response(answer.model_dump(mode="json"))


@audited("tenant.delete", "tenant")
async def delete(request: web.Request) -> web.Response:
    caller = root(request)
    await request.app[TENANTS].delete(
        request.match_info["id"], actor=caller.id, client=client_details(request)
    )
    return web.Response(status=204)


OPERATIONS = (
    Operation("POST", "/api/v1/tenants", create, "Create a tenant (Root)", 201, TenantView,
              body=CreateTenant, errors=(400, 401, 403, 409)),
    Operation("GET", "/api/v1/tenants", list_, "List tenants", 200, TenantList,
              errors=(401,)),
    Operation("DELETE", "/api/v1/tenants/{id}", delete, "Delete an empty tenant (Root)", 204,
              None, errors=(401, 403, 404, 409)),
)  # fmt: skip
