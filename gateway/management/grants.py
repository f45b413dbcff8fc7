"""``/api/v1/grants`` and ``/api/v1/roles``: least privilege for TenantUser service users.

A TenantAdmin manages the grants and roles of its own tenant only (others' answer 404, as if
they did not exist); Root manages every tenant's. A grant's catalog must be one configured
for the subject's tenant (or ``*``, all of them): a grant on a catalog nobody can reach would
only mislead. Every change is audited in its own transaction and enforced on the next
request (``identity.grant_admin``).
"""

from __future__ import annotations

from aiohttp import web

from ..audit.events import client_details
from ..errors import BadRequest
from ..identity.grants import ANY_CATALOG, AccessRole
from ..identity.models import Principal, ServiceUser
from ..state import CONFIGURED, GRANTS, SERVICE_USERS
from .access import check_target, check_visible, manager, new_in_tenant, target, tenant_scope
from .operations import Operation
from .parsing import read_body, read_query
from .schemas import (
    CreateGrant,
    CreateRole,
    GrantList,
    GrantQuery,
    GrantSpec,
    GrantView,
    RoleList,
    RoleQuery,
    RoleView,
    ServiceUserAccess,
)
from .trail import audited

__all__ = ("OPERATIONS", "check_catalog", "scoped_role")


def check_catalog(request: web.Request, spec: GrantSpec, tenant: str) -> None:
    """A grant's catalog must be ``*`` or configured for ``tenant`` (400 otherwise)."""
    catalog = request.app[CONFIGURED].settings.catalogs.get(spec.catalog)
    if spec.catalog != ANY_CATALOG and (catalog is None or catalog.tenant != tenant):
        raise BadRequest(f"catalog: no catalog {spec.catalog!r} belongs to tenant {tenant!r}")


async def _service_user(request: web.Request, caller: Principal, id_: str) -> ServiceUser:
    user = await request.app[SERVICE_USERS].get(id_)
    check_target(caller, user.tenant_id, user.role, "service user")
    return user


async def scoped_role(request: web.Request, caller: Principal, id_: str) -> AccessRole:
    """The role ``id_``, if ``caller`` may see it: another tenant's is "not found" for a
    TenantAdmin, as its identities are (``access.target``). Also used by the UI."""
    role = await request.app[GRANTS].role(id_)
    check_visible(caller, role.tenant_id, "role")
    return role


async def _role_view(request: web.Request, role: AccessRole) -> RoleView:
    access = request.app[GRANTS]
    return RoleView.of(role, await access.members(role.id), await access.grants(role_id=role.id))


# -- grants ----------------------------------------------------------------------------------


@audited("grant.create", "grant")
async def create_grant(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, CreateGrant)
    if (body.service_user is None) == (body.role is None):
        raise BadRequest("service_user: give either service_user or role (an id), not both")
    subject: ServiceUser | AccessRole
    if body.service_user is not None:
        subject = await _service_user(request, caller, body.service_user)
    else:
        assert body.role is not None
        subject = await scoped_role(request, caller, body.role)
    check_catalog(request, body, subject.tenant_name)
    grant = await request.app[GRANTS].grant(
        subject, catalog=body.catalog, resource=body.resource, action=body.action,
        actor=caller.id, client=client_details(request),
    )  # fmt: skip
    return web.json_response(GrantView.of(grant).model_dump(mode="json"), status=201)


async def list_grants(request: web.Request) -> web.Response:
    caller = manager(request)
    query = read_query(request, GrantQuery)
    grants = await request.app[GRANTS].grants(
        tenant_id=tenant_scope(caller), service_user_id=query.service_user, role_id=query.role,
        catalog=query.catalog,
    )  # fmt: skip
    answer = GrantList(items=[GrantView.of(g) for g in grants], total=len(grants))
    return web.json_response(answer.model_dump(mode="json"))


@audited("grant.delete", "grant")
async def delete_grant(request: web.Request) -> web.Response:
    caller = manager(request)
    access = request.app[GRANTS]
    grant = await access.get_grant(request.match_info["id"])
    check_visible(caller, grant.tenant_id, "grant")
    await access.revoke(grant.id, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


async def service_user_access(request: web.Request) -> web.Response:
    user = await target(request, request.app[SERVICE_USERS].get, "service user", mutate=False)
    access = request.app[GRANTS]
    answer = ServiceUserAccess(
        grants=[GrantView.of(g) for g in await access.grants(service_user_id=user.id)],
        roles=[await _role_view(request, role) for role in await access.roles_of(user.id)],
        effective=[GrantView.of(g) for g in await access.effective(user.id)],
    )
    return web.json_response(answer.model_dump(mode="json"))


# -- roles -----------------------------------------------------------------------------------


@audited("role.create", "role")
async def create_role(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, CreateRole)
    tenant = new_in_tenant(caller, body.tenant)
    role = await request.app[GRANTS].create_role(
        name=body.name, tenant=tenant, description=body.description, actor=caller.id,
        client=client_details(request),
    )  # fmt: skip
    return web.json_response(RoleView.of(role, [], []).model_dump(mode="json"), status=201)


async def list_roles(request: web.Request) -> web.Response:
    caller = manager(request)
    query = read_query(request, RoleQuery)
    roles = await request.app[GRANTS].roles(tenant_id=tenant_scope(caller))
    if query.tenant is not None:
        roles = [role for role in roles if role.tenant_name == query.tenant]
    items = [await _role_view(request, role) for role in roles]
    return web.json_response(RoleList(items=items, total=len(items)).model_dump(mode="json"))


async def get_role(request: web.Request) -> web.Response:
    role = await scoped_role(request, manager(request), request.match_info["id"])
    return web.json_response((await _role_view(request, role)).model_dump(mode="json"))


@audited("role.delete", "role")
async def delete_role(request: web.Request) -> web.Response:
    caller = manager(request)
    role = await scoped_role(request, caller, request.match_info["id"])
    await request.app[GRANTS].delete_role(role.id, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


@audited("role.assign", "role")
async def assign_role(request: web.Request) -> web.Response:
    caller = manager(request)
    role = await scoped_role(request, caller, request.match_info["id"])
    user = await _service_user(request, caller, request.match_info["service_user_id"])
    await request.app[GRANTS].assign(role, user, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


@audited("role.unassign", "role")
async def unassign_role(request: web.Request) -> web.Response:
    caller = manager(request)
    role = await scoped_role(request, caller, request.match_info["id"])
    user = await _service_user(request, caller, request.match_info["service_user_id"])
    await request.app[GRANTS].unassign(role, user, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


_CHANGES = (400, 401, 403, 404, 409)
_MEMBER = "/api/v1/roles/{id}/members/{service_user_id}"
OPERATIONS = (
    Operation("POST", "/api/v1/grants", create_grant,
              "Grant a service user or a role one action on a catalog resource", 201, GrantView,
              body=CreateGrant, errors=_CHANGES),
    Operation("GET", "/api/v1/grants", list_grants,
              "List grants (of a service user, a role or a catalog)", 200, GrantList,
              query=GrantQuery),
    Operation("DELETE", "/api/v1/grants/{id}", delete_grant, "Revoke a grant", 204, None),
    Operation("GET", "/api/v1/service-users/{id}/access", service_user_access,
              "A service user's grants, roles and everything it holds", 200, ServiceUserAccess),
    Operation("POST", "/api/v1/roles", create_role, "Create a role (a named set of grants)",
              201, RoleView, body=CreateRole, errors=_CHANGES),
    Operation("GET", "/api/v1/roles", list_roles, "List roles with their members and grants",
              200, RoleList, query=RoleQuery),
    Operation("GET", "/api/v1/roles/{id}", get_role, "Get a role", 200, RoleView),
    Operation("DELETE", "/api/v1/roles/{id}", delete_role,
              "Delete a role, its grants and its memberships", 204, None),
    Operation("PUT", _MEMBER, assign_role, "Give the role to a service user", 204, None,
              errors=_CHANGES),
    Operation("DELETE", _MEMBER, unassign_role, "Take the role from a service user", 204,
              None),
)  # fmt: skip
