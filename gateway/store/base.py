"""Store records, errors and the Protocol a store implements.

``SqliteStore`` is the embedded default; the Protocol leaves room for a server database when
replicas on several hosts must share state.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..identity import ServiceUser, Tenant

__all__ = ("AuditRecord", "Store", "StoreError", "UniqueViolation")


class StoreError(Exception):
    """The store cannot do what was asked (not open, newer schema, ...)."""


class UniqueViolation(StoreError):
    """A unique constraint (a service-user name in its tenant, say) would be broken."""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    at: float
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    tenant_id: str | None
    outcome: str  # "success" | "failure"
    client_addr: str | None = None
    user_agent: str | None = None
    detail: str | None = None


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def identity_version(self) -> int: ...
    async def tenant_by_name(self, name: str) -> Tenant | None: ...
    async def service_user(self, id_: str) -> ServiceUser | None: ...
    async def service_user_by_key_id(self, key_id: str) -> ServiceUser | None: ...
    async def service_user_by_name(self, tenant_id: str, name: str) -> ServiceUser | None: ...
    async def count_service_users(self) -> int: ...
    async def signing_keys(self) -> list[tuple[str, str]]: ...
    async def audit_records(self, *, target_id: str | None = None) -> list[AuditRecord]: ...
    async def insert_service_user(self, user: ServiceUser, audit: AuditRecord) -> None: ...
    async def update_service_user(
        self, id_: str, changes: Mapping[str, Any], audit: AuditRecord
    ) -> bool: ...
    async def delete_service_user(self, id_: str, audit: AuditRecord) -> bool: ...
    async def insert_tenant(self, name: str, audit: AuditRecord) -> Tenant: ...
    async def insert_signing_key(self, kid: str, private_jwk: str) -> None: ...
    async def record_last_used(self, last_used: Mapping[str, float]) -> None: ...
