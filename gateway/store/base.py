"""Store records, errors and the Protocol a store implements.

``SqliteStore`` is the embedded default; the Protocol leaves room for a server database when
replicas on several hosts must share state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from ..errors import Conflicting, GatewayError
from ..identity.grants import AccessRole, Grant
from ..identity.models import Role, ServiceUser, Session, Tenant, User

_T = TypeVar("_T")

__all__ = (
    "AuditQuery",
    "AuditRecord",
    "ClientInfo",
    "InUse",
    "LastRoot",
    "MissingReference",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "UniqueViolation",
    "uninterrupted",
)


LAST_ROOT = (
    "Refused: at least one active Root identity without an expiry must remain "
    "(create another Root first)"
)


class StoreError(Exception):
    """The store cannot do what was asked (not open, newer schema, ...)."""


class StoreUnavailable(StoreError, GatewayError):
    """The database cannot be reached (down, restarting, the network): answered 503 with
    the Iceberg error JSON, to catalog and management requests alike."""

    status = 503
    type = "ServiceUnavailableException"
    message = "The identity store is unavailable; try again shortly"


class UniqueViolation(StoreError):
    """A unique constraint (a service-user name in its tenant, say) would be broken."""


class MissingReference(StoreError):
    """A row the change refers to (a tenant, service user or role) is gone: deleted by
    someone else between the caller's read and this write."""


class InUse(Conflicting, StoreError):
    """The record is still referenced (a tenant that has identities, say)."""


class LastRoot(Conflicting, StoreError):
    """The change would remove, deactivate, expire or demote the last usable Root, or give
    the last Root without an expiry one."""

    def __init__(self, message: str = LAST_ROOT) -> None:
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Where a request came from, as recorded in the audit log."""

    addr: str | None = None
    user_agent: str | None = None


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

    @classmethod
    def success(
        cls,
        *,
        at: float,
        actor: str,
        action: str,
        target_type: str,
        target_id: str | None,
        tenant_id: str | None,
        client: ClientInfo | None,
        detail: str | None = None,
    ) -> AuditRecord:
        """The record of a change that is made (in the change's own transaction)."""
        client = client or ClientInfo()
        return cls(
            at=at, actor=actor, action=action, target_type=target_type, target_id=target_id,
            tenant_id=tenant_id, outcome="success", client_addr=client.addr,
            user_agent=client.user_agent, detail=detail,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the audit log; None means "any"."""

    tenant_id: str | None = None
    actor: str | None = None
    action: str | None = None
    target: str | None = None
    target_type: str | None = None
    outcome: str | None = None
    since: float | None = None


class Store(Protocol):
    async def open(self, *, migrate: bool = True) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def identity_version(self) -> int: ...
    def add_change_listener(self, listener: Callable[[], None]) -> None: ...
    def setup_lock(self) -> AbstractAsyncContextManager[None]: ...
    # tenants
    async def tenant(self, id_: str) -> Tenant | None: ...
    async def tenant_by_name(self, name: str) -> Tenant | None: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def insert_tenant(self, name: str, audit: AuditRecord) -> Tenant: ...
    async def delete_tenant(self, id_: str, audit: AuditRecord) -> bool: ...
    # service users
    async def service_user(self, id_: str) -> ServiceUser | None: ...
    async def service_user_by_key_id(self, key_id: str) -> ServiceUser | None: ...
    async def service_user_by_name(self, tenant_id: str, name: str) -> ServiceUser | None: ...
    async def count_service_users(self) -> int: ...
    async def count_old_keys(self, past: float, near: float) -> tuple[int, int]: ...
    async def list_service_users(
        self,
        *,
        tenant_id: str | None = None,
        tenant_name: str | None = None,
        active: bool | None = None,
        role: Role | None = None,
        unused_before: float | None = None,
        expires_from: float | None = None,
        expires_before: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[ServiceUser], int]: ...
    async def insert_service_user(
        self,
        user: ServiceUser,
        audit: AuditRecord,
        *,
        grants: Sequence[Grant] = (),
        role_ids: Sequence[str] = (),
    ) -> None: ...
    async def update_service_user(
        self, id_: str, changes: Mapping[str, Any], audit: AuditRecord
    ) -> bool: ...
    async def delete_service_user(self, id_: str, audit: AuditRecord) -> bool: ...
    async def record_last_used(
        self,
        last_used: Mapping[str, float],
        *,
        requests: Mapping[tuple[str, str], int] | None = None,
        prune_before: str | None = None,
    ) -> None: ...
    async def usage_of(self, service_user_id: str, since: str) -> dict[str, int]: ...
    # human users
    async def user(self, id_: str) -> User | None: ...
    async def user_by_username(self, username: str) -> User | None: ...
    async def list_users(
        self, *, tenant_id: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]: ...
    async def insert_user(self, user: User, audit: AuditRecord) -> None: ...
    async def update_user(
        self, id_: str, changes: Mapping[str, Any], audit: AuditRecord
    ) -> bool: ...
    async def delete_user(self, id_: str, audit: AuditRecord) -> bool: ...
    async def record_failed_login(self, id_: str) -> None: ...
    # failures every process counts together (counts_table)
    async def failure_counts(self, keys: Sequence[bytes], since: float) -> dict[bytes, int]: ...
    async def add_failures(
        self, counts: Mapping[bytes, int], at: float, since: float
    ) -> dict[bytes, int]: ...
    async def clear_failures(self, keys: Sequence[bytes]) -> None: ...
    # what each instance let through under a rate limit (counts_table)
    async def add_request_costs(
        self, costs: Mapping[bytes, float], instance: str, at: float, since: float
    ) -> None: ...
    async def request_costs_elsewhere(self, instance: str) -> dict[bytes, float]: ...
    # sessions of human users (a new password, a deactivation or a deletion ends them too)
    async def session(self, digest: bytes) -> tuple[Session, User] | None: ...
    async def insert_session(
        self, session: Session, audit: AuditRecord, *, stale_before: float, password_hash: str
    ) -> bool: ...
    async def touch_session(self, digest: bytes, at: float) -> None: ...
    async def delete_session(self, digest: bytes, audit: AuditRecord) -> bool: ...
    # named roles, their members and grants (grants_table)
    async def access_role(self, id_: str) -> AccessRole | None: ...
    async def access_role_by_name(self, tenant_id: str, name: str) -> AccessRole | None: ...
    async def list_access_roles(self, *, tenant_id: str | None) -> list[AccessRole]: ...
    async def roles_of(self, service_user_id: str) -> list[AccessRole]: ...
    async def role_members(self, role_id: str) -> list[str]: ...
    async def insert_access_role(self, role: AccessRole, audit: AuditRecord) -> None: ...
    async def delete_access_role(self, id_: str, audit: AuditRecord) -> bool: ...
    async def add_role_member(
        self, role_id: str, service_user_id: str, audit: AuditRecord
    ) -> bool: ...
    async def remove_role_member(
        self, role_id: str, service_user_id: str, audit: AuditRecord
    ) -> bool: ...
    async def grant(self, id_: str) -> Grant | None: ...
    async def list_grants(
        self,
        *,
        tenant_id: str | None = None,
        service_user_id: str | None = None,
        role_id: str | None = None,
        catalog: str | None = None,
    ) -> list[Grant]: ...
    async def count_grants(self, tenant_id: str) -> int: ...
    async def grants_of_service_user(self, service_user_id: str) -> list[Grant]: ...
    async def insert_grant(self, grant: Grant, audit: AuditRecord) -> None: ...
    async def delete_grant(self, id_: str, audit: AuditRecord) -> bool: ...
    # signing keys
    async def signing_keys(self) -> list[tuple[str, str]]: ...
    async def insert_signing_key(self, kid: str, private_jwk: str) -> None: ...
    # audit
    async def audit_records(self, *, target_id: str | None = None) -> list[AuditRecord]: ...
    async def insert_audit_records(
        self, records: Sequence[AuditRecord], *, batch: str | None = None
    ) -> bool: ...
    async def query_audit(
        self, query: AuditQuery, *, limit: int, offset: int
    ) -> tuple[list[AuditRecord], int]: ...


async def uninterrupted(write: Coroutine[Any, Any, _T]) -> _T:
    """Await a store ``write`` that a cancellation (the app's shutdown cancelling a
    background task) must not cut off: it waits for the write to finish, then the
    cancellation goes on. Cut off mid-transaction, the write's data was lost and its
    connection handed back still busy (SQLite: inside BEGIN; PostgreSQL: "another operation
    is in progress"), so the shutdown's own last writes failed."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
