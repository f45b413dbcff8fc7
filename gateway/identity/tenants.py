"""Tenants: created, listed and deleted by ``Root``. The ``default`` tenant always exists, and
a tenant that still has service users or users cannot be deleted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from ..errors import AlreadyExists, Conflicting, InvalidInput, NoSuchThing
from ..settings import NAME_RE
from ..store import DEFAULT_TENANT, AuditRecord, ClientInfo, Store, UniqueViolation
from .models import Tenant

__all__ = ("TENANT_NAME_PATTERN", "TENANT_NAME_RULE", "TenantDirectory")

# Tenants are named like catalogs (settings.NAME_RE); anchored for JSON Schema, which searches.
TENANT_NAME_PATTERN: Final = f"^{NAME_RE.pattern}$"
TENANT_NAME_RULE: Final = "1 to 63 characters: lowercase letters, digits, '-' or '_'"


class TenantDirectory:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def _record(
        self, actor: str, action: str, tenant_id: str | None, client: ClientInfo | None
    ) -> AuditRecord:
        return AuditRecord.success(
            at=self._clock(), actor=actor, action=action, target_type="tenant",
            target_id=tenant_id, tenant_id=tenant_id, client=client,
        )  # fmt: skip

    async def create(self, name: str, *, actor: str, client: ClientInfo | None = None) -> Tenant:
        if not NAME_RE.fullmatch(name):
            raise InvalidInput("name", TENANT_NAME_RULE)
        try:
            return await self._store.insert_tenant(
                name, self._record(actor, "tenant.create", None, client)
            )
        except UniqueViolation:
            raise AlreadyExists("name: a tenant with this name already exists") from None

    async def list(self) -> list[Tenant]:
        return await self._store.list_tenants()

    async def get(self, id_or_name: str) -> Tenant:
        tenant = await self._store.tenant(id_or_name) or await self._store.tenant_by_name(
            id_or_name
        )
        if tenant is None:
            raise NoSuchThing("tenant")
        return tenant

    async def delete(
        self, id_or_name: str, *, actor: str, client: ClientInfo | None = None
    ) -> Tenant:
        """Refused (``Conflicting``) while the tenant has identities, and for ``default``."""
        tenant = await self.get(id_or_name)
        if tenant.name == DEFAULT_TENANT:
            raise Conflicting("Cannot delete the tenant: the default tenant is always there")
        await self._store.delete_tenant(
            tenant.id, self._record(actor, "tenant.delete", tenant.id, client)
        )
        return tenant
