"""Least privilege in the admin UI: the Access section of a service user's page (what it may do
in each catalog of its tenant without a grant, the roles it holds, its own grants and what its
roles give it) and Identity → Roles (a tenant's roles, and the form that makes one).

Changes go through ``GrantAdmin`` (which records each success with its audit record) under
the management API's rules and input models: a new grant is read by ``GrantSpec`` and its
catalog checked by the API's ``check_catalog``; a TenantAdmin sees and changes its own tenant
only, anything else is "not found"; grants and roles are for TenantUser service users, Root
and TenantAdmin have full access in their scope already.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from ..audit.events import client_details
from ..auth.authz import AccessLevel, catalog_access
from ..errors import DomainError, GatewayError, describe
from ..identity.grants import ANY_CATALOG, AccessRole, Grant
from ..identity.models import Principal, Role, ServiceUser
from ..management.access import manager, new_in_tenant, tenant_scope
from ..management.parsing import read_fields
from ..management.schemas import CreateRole, GrantSpec
from ..management.trail import audited, record_refusal
from ..routing import ACTIONS
from ..state import CONFIGURED, GRANTS
from .guard import guarded, redirect
from .views import form_text, render, tenant_choices

__all__ = (
    "ACCESS_NOTICES",
    "AccessSection",
    "CatalogAccess",
    "RoleGrant",
    "access_section",
    "grant_form",
    "read_grant",
    "routes",
)

GRANT_FIELDS: Final = ("catalog", "resource", "action")
# What the service user's page says after a change to its access (``?done=``).
ACCESS_NOTICES: Final = {
    "granted": "Grant added.",
    "revoked": "Grant revoked.",
    "role-added": "Role given.",
    "role-removed": "Role taken away.",
}


@dataclass(frozen=True, slots=True)
class CatalogAccess:
    """A catalog of the service user's tenant, and what it may do there without a grant."""

    name: str
    level: AccessLevel


@dataclass(frozen=True, slots=True)
class RoleGrant:
    """A grant the service user holds through one of its roles."""

    role: str
    grant: Grant


@dataclass(frozen=True, slots=True)
class AccessSection:
    """The Access section of a service user's page. ``holder``: a TenantUser, whose access
    grants and roles shape; for Root and TenantAdmin the rest stays empty."""

    holder: bool
    error: str | None = None
    catalogs: list[CatalogAccess] = field(default_factory=list)
    grants: list[Grant] = field(default_factory=list)
    roles: list[AccessRole] = field(default_factory=list)
    from_roles: list[RoleGrant] = field(default_factory=list)
    addable: list[AccessRole] = field(default_factory=list)  # its tenant's roles it lacks
    catalog_choices: list[str] = field(default_factory=list)  # "*" and the tenant's catalogs
    actions: tuple[str, ...] = tuple(ACTIONS)
    values: Mapping[str, str] = field(default_factory=dict)  # the add-grant form's


async def access_section(
    request: web.Request,
    user: ServiceUser,
    *,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
) -> AccessSection:
    """What the service user may do, for its page; ``values`` and ``error``: an add-grant
    form that was refused, shown again as it was typed."""
    if user.role is not Role.TENANT_USER:
        return AccessSection(holder=False, error=error)
    access = request.app[GRANTS]
    principal = user.principal()
    catalogs = [
        CatalogAccess(name, level)
        for name, level in catalog_access(
            principal, request.app[CONFIGURED].settings.catalogs
        ).items()
    ]
    roles = await access.roles_of(user.id)
    held = {role.id: role.name for role in roles}
    from_roles = sorted(
        (RoleGrant(held[g.subject_id], g) for g in await access.effective(user.id)
         if g.subject_type == "role" and g.subject_id in held),
        key=lambda rg: (rg.role, rg.grant.catalog, rg.grant.resource, rg.grant.action),
    )  # fmt: skip
    first = catalogs[0].name if catalogs else ANY_CATALOG
    return AccessSection(
        holder=True, error=error, catalogs=catalogs,
        grants=await access.grants(service_user_id=user.id), roles=roles,
        from_roles=from_roles,
        addable=[r for r in await access.roles(tenant_id=user.tenant_id) if r.id not in held],
        catalog_choices=[ANY_CATALOG, *(c.name for c in catalogs)],
        values=values or {"catalog": first, "resource": "", "action": "read"},
    )  # fmt: skip


def grant_form(form: Any) -> dict[str, str]:
    """The add-grant form's fields, as typed (to be shown again should it be refused)."""
    return {name: form_text(form, name) for name in GRANT_FIELDS}


def read_grant(values: Mapping[str, str]) -> GrantSpec:
    """The add-grant form as the API's ``GrantSpec``: the resource's levels are separated by
    dots (``sales.orders``), and a blank resource is the whole catalog."""
    resource = values["resource"].strip()
    return read_fields(GrantSpec, {
        "catalog": values["catalog"], "resource": resource.split(".") if resource else [],
        "action": values["action"],
    })  # fmt: skip


# -- Identity → Roles ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleRow:
    role: AccessRole
    members: int
    grants: list[Grant]


async def roles_page(
    request: web.Request,
    caller: Principal,
    values: Mapping[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    access = request.app[GRANTS]
    rows = [
        RoleRow(role, len(await access.members(role.id)), await access.grants(role_id=role.id))
        for role in await access.roles(tenant_id=tenant_scope(caller))
    ]
    return render(request, "roles.html", {
        "rows": rows, "error": error, "tenants": await tenant_choices(request, caller),
        "values": values or {"tenant": caller.tenant_name},
        "done": request.query.get("done", ""),
    }, status=status, caller=caller)  # fmt: skip


async def list_roles(request: web.Request) -> web.Response:
    return await roles_page(request, manager(request))


@audited("role.create", "role")
async def create_role(request: web.Request) -> web.Response:
    caller = manager(request)
    form = await request.post()
    values = {name: form_text(form, name) for name in ("name", "description", "tenant")}
    try:
        fields = {"name": values["name"], "description": values["description"]}
        if values["tenant"]:  # left out: the caller's own tenant
            fields["tenant"] = values["tenant"]
        body = read_fields(CreateRole, fields)
        tenant = new_in_tenant(caller, body.tenant)  # the API's rule
        await request.app[GRANTS].create_role(
            name=body.name, tenant=tenant, description=body.description, actor=caller.id,
            client=client_details(request),
        )  # fmt: skip
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 409):
            raise
        record_refusal(request, "role.create", "role", exc)
        return await roles_page(request, caller, values, message, status)
    return redirect("/ui/roles?done=created")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ui/roles", guarded(list_roles)),
        web.post("/ui/roles", guarded(create_role)),
    ]
