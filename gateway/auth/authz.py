"""Authorization decisions: pure functions of the principal and what it asks for.

A principal may use the catalogs of its own tenant, and ``Root`` every catalog. Within a
catalog, ``Root`` and ``TenantAdmin`` may do everything. A ``TenantUser`` may do what the
catalog's ``default_access`` allows ("write": everything, today's behaviour; "read": the read
action; "none": nothing) plus what its grants (its own and its roles') allow. Grants are read
from the principal's in-memory index (``identity.grants``): no store access here.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Literal

from ..identity.models import Principal, Role
from ..routing import Action
from ..settings import CatalogSettings

__all__ = (
    "AccessLevel",
    "access_level",
    "allows",
    "catalog_access",
    "is_confined",
    "may_use_catalog",
    "sees",
)

# What a caller may do in a catalog without a grant: "full" (Root, TenantAdmin), or the
# catalog's default_access for a TenantUser ("write" is every action).
AccessLevel = Literal["full", "write", "read", "none"]


def may_use_catalog(principal: Principal, catalog: CatalogSettings) -> bool:
    return principal.role is Role.ROOT or principal.tenant_name == catalog.tenant


def is_confined(principal: Principal, catalog: CatalogSettings) -> bool:
    """Whether anything short of full access applies: a TenantUser in a catalog whose
    ``default_access`` is not "write". Otherwise every action is allowed, and nothing about a
    request (its body, its answer) needs to be judged beyond what the URL says."""
    return principal.role is Role.TENANT_USER and catalog.default_access != "write"


def access_level(principal: Principal, catalog: CatalogSettings) -> AccessLevel:
    """What ``principal`` may do in ``catalog`` (one it may use) without a grant."""
    if principal.role is not Role.TENANT_USER:
        return "full"
    return typing.cast("AccessLevel", catalog.default_access)  # validated by settings


def catalog_access(
    principal: Principal, catalogs: Mapping[str, CatalogSettings]
) -> dict[str, AccessLevel]:
    """Each catalog ``principal`` may use, by name, with its access level there."""
    return {
        name: access_level(principal, catalog)
        for name, catalog in sorted(catalogs.items())
        if may_use_catalog(principal, catalog)
    }


def allows(
    principal: Principal,
    name: str,
    catalog: CatalogSettings,
    resource: tuple[str, ...],
    action: Action,
) -> bool:
    """Whether ``principal`` may do ``action`` on ``resource`` of catalog ``name`` (one it
    may use: ``may_use_catalog``)."""
    if not is_confined(principal, catalog):
        return True
    if action == "read" and catalog.default_access == "read":
        return True
    return principal.grants.allows(name, resource, action)


def sees(
    principal: Principal, name: str, catalog: CatalogSettings, resource: tuple[str, ...]
) -> bool:
    """Whether ``resource`` is visible to ``principal``: listable, HEAD-able, kept in list
    answers. With a default access, everything is; with "none", what lies on, above or below
    one of its grants."""
    if not is_confined(principal, catalog) or catalog.default_access == "read":
        return True
    return principal.grants.visible(name, resource)
