"""Authorization decisions: pure functions of the principal and what it asks for.

In this release a principal may use the catalogs of its own tenant, and ``Root`` every
catalog. Fine-grained grants (per namespace or table, read versus write) come later.
"""

from __future__ import annotations

from ..identity.models import Principal, Role
from ..settings import CatalogSettings

__all__ = ("may_use_catalog",)


def may_use_catalog(principal: Principal, catalog: CatalogSettings) -> bool:
    return principal.role is Role.ROOT or principal.tenant_name == catalog.tenant
