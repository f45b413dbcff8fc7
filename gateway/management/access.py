"""Who may manage whom. Pure rules, used by every management handler.

- ``Root`` manages everything, in every tenant.
- ``TenantAdmin`` manages identities of its own tenant only, and never one ranked above
  itself; it can never create or raise anyone above its own role.
- ``TenantUser`` manages nothing (it may still ask who it is).

An identity in another tenant answers 404, exactly like one that does not exist, so a
TenantAdmin cannot even learn that a UUID exists elsewhere (Pangolin leaked and even rotated
other tenants' service users by UUID).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import web

from ..auth.caller import require_principal
from ..errors import Forbidden, NotFound
from ..identity.models import Principal, Role

__all__ = (
    "check_role_given",
    "check_target",
    "check_visible",
    "manager",
    "new_in_tenant",
    "principal",
    "role_and_tenant",
    "root",
    "target",
    "tenant_scope",
)


def principal(request: web.Request) -> Principal:
    return require_principal(request, "api", None)


def manager(request: web.Request) -> Principal:
    """The caller, who must be allowed to manage identities (403 otherwise)."""
    caller = principal(request)
    if caller.role is Role.TENANT_USER:
        raise Forbidden("Forbidden: managing identities needs the TenantAdmin or Root role")
    return caller


def root(request: web.Request) -> Principal:
    """The caller, who must hold the Root role (403 otherwise): tenants are Root's alone."""
    caller = principal(request)
    if caller.role is not Role.ROOT:
        raise Forbidden("Forbidden: managing tenants needs the Root role")
    return caller


def tenant_scope(caller: Principal) -> str | None:
    """The tenant id the caller is confined to; None for Root (all tenants)."""
    return None if caller.role is Role.ROOT else caller.tenant_id


def check_visible(caller: Principal, tenant_id: str, what: str) -> None:
    """Another tenant's ``what`` does not exist for a TenantAdmin (404, as an unknown id)."""
    if tenant_scope(caller) not in (None, tenant_id):
        raise NotFound(f"No such {what}")


def new_in_tenant(caller: Principal, tenant: str | None) -> str:
    """The tenant (name) something new goes in: the caller's own unless given; another than
    its own only for Root (404 otherwise, as if it did not exist)."""
    tenant = caller.tenant_name if tenant is None else tenant
    if tenant_scope(caller) is not None and tenant != caller.tenant_name:
        raise NotFound("tenant: no such tenant")
    return tenant


def check_target(caller: Principal, tenant_id: str, role: Role, what: str) -> None:
    """May ``caller`` act on an identity of ``tenant_id`` holding ``role``?"""
    check_visible(caller, tenant_id, what)
    if role.rank > caller.role.rank:
        raise Forbidden(f"Forbidden: cannot manage a {what} with a role above your own")


class _Identity(Protocol):
    @property
    def tenant_id(self) -> str: ...
    @property
    def role(self) -> Role: ...


_I = TypeVar("_I", bound=_Identity)


async def target(
    request: web.Request, load: Callable[[str], Awaitable[_I]], what: str, *, mutate: bool
) -> _I:
    """The identity named by the path's ``id``, if the caller may see it (and, with
    ``mutate``, manage it); 404 for unknown ids and other tenants' alike."""
    caller = manager(request)
    found = await load(request.match_info["id"])  # NoSuchThing (404) when there is none
    if mutate:
        check_target(caller, found.tenant_id, found.role, what)
    else:
        check_visible(caller, found.tenant_id, what)
    return found


def role_and_tenant(
    caller: Principal, role: Role | None, tenant: str | None, default: Role
) -> tuple[Role, str]:
    """The role and tenant (name) a new identity gets (``default`` and the caller's own tenant
    when not given), if ``caller`` may grant them: never a role above its own, never another
    tenant (404, as if it did not exist)."""
    role = role or default
    check_role_given(caller, role)
    return role, new_in_tenant(caller, tenant)


def check_role_given(caller: Principal, role: Role) -> None:
    """May ``caller`` give someone ``role``?"""
    if role.rank > caller.role.rank:
        raise Forbidden("Forbidden: cannot grant a role above your own")
