"""Authorization decisions: pure functions of the principal and what it asks for.

A principal may use the catalogs of its own tenant, and ``Root`` every catalog. Within a
catalog, ``Root`` and ``TenantAdmin`` may do everything. A ``TenantUser`` may do what the
catalog's ``default_access`` allows ("write": everything, today's behaviour; "read": the read
action; "none": nothing) plus what its grants (its own and its roles') allow. Grants are read
from the principal's in-memory index (``identity.grants``): no store access here.
"""

from __future__ import annotations

from typing import Literal

from ..identity.models import Principal, Role
from ..routing import Action
from ..settings import CatalogSettings

__all__ = ("access_level", "allows", "grants_decide", "may_use_catalog", "sees")


def may_use_catalog(principal: Principal, catalog: CatalogSettings) -> bool:
    return principal.role is Role.ROOT or principal.tenant_name == catalog.tenant


def grants_decide(principal: Principal, catalog: CatalogSettings) -> bool:
    """Whether anything short of full access applies: a TenantUser in a catalog whose
    ``default_access`` is not "write". Otherwise every action is allowed, and nothing about a
    request (its body, its answer) needs to be judged beyond what the URL says."""
    return principal.role is Role.TENANT_USER and catalog.default_access != "write"


def access_level(principal: Principal, catalog: CatalogSettings) -> Literal["full", "read", "none"]:
    """What ``principal`` may do in ``catalog`` without a grant: "full", "read" or "none"."""
    if not grants_decide(principal, catalog):
        return "full"
    return "read" if catalog.default_access == "read" else "none"


def allows(
    principal: Principal,
    name: str,
    catalog: CatalogSettings,
    resource: tuple[str, ...],
    action: Action,
) -> bool:
    """Whether ``principal`` may do ``action`` on ``resource`` of catalog ``name`` (one it
    may use: ``may_use_catalog``)."""
    if not grants_decide(principal, catalog):
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
    if not grants_decide(principal, catalog) or catalog.default_access == "read":
        return True
    return principal.grants.visible(name, resource)
