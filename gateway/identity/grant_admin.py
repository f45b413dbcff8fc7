"""The service-level API for least privilege: named roles, who holds them, and grants.

Used by the management API (which also checks that a grant's catalog is configured for the
subject's tenant) and the tests. Every change is one store transaction with its audit record
and an identity-version bump, so it is enforced on the next request by every process.

Grants and roles are for TenantUser service users: Root and TenantAdmin already have full
access in their scope, and a grant that changes nothing would mislead whoever reads it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import AlreadyExists, Conflicting, InvalidInput, NoSuchThing
from ..identifiers import NAME_RULE, name_refusal
from ..routing import ACTIONS
from ..settings import NAME_RE
from ..store import AuditRecord, ClientInfo, MissingReference, Store, UniqueViolation
from .grants import ANY_CATALOG, AccessRole, Grant, SubjectType
from .models import Role, ServiceUser

__all__ = (
    "MAX_GRANTS_PER_TENANT",
    "MAX_LEVEL_NAME",
    "MAX_LEVELS",
    "GrantAdmin",
    "check_holder",
    "check_room",
    "new_grant",
)

MAX_LEVELS: Final = 32
# A tenant's grants (its service users' and its roles'): the most one grant index can hold,
# which bounds what one TenantAdmin can make every worker load and keep in memory.
MAX_GRANTS_PER_TENANT: Final = 10_000
MAX_LEVEL_NAME: Final = 255
_MAX_DESCRIPTION: Final = 1024  # as a service user's

Clock = Callable[[], float]


def check_holder(role: Role) -> None:
    """Grants and roles are for TenantUser service users only."""
    if role is not Role.TENANT_USER:
        raise InvalidInput(
            "service_user",
            f"is a {role.value}, which has full access in its scope; "
            "grants and roles are for TenantUser service users",
        )


def new_grant(
    subject: ServiceUser | AccessRole,
    *,
    catalog: str,
    resource: Sequence[str],
    action: str,
    actor: str,
    at: float,
) -> Grant:
    """A grant of ``action`` on ``resource`` of ``catalog`` to ``subject``, by the rules: a
    known action, a catalog name or ``*``, names by the identifier rule (no globs, no quotes,
    no control characters: a grant must name one thing), a TenantUser holder."""
    if action not in ACTIONS:
        raise InvalidInput("action", f"must be one of {', '.join(ACTIONS)}")
    if catalog != ANY_CATALOG and not NAME_RE.fullmatch(catalog):
        raise InvalidInput("catalog", "must be a catalog name, or * for every catalog")
    if len(resource) > MAX_LEVELS:
        raise InvalidInput("resource", f"must have at most {MAX_LEVELS} levels")
    for level in resource:
        if not level or len(level) > MAX_LEVEL_NAME:
            raise InvalidInput("resource", f"names must have 1 to {MAX_LEVEL_NAME} characters")
        if name_refusal("namespace", level) is not None:
            raise InvalidInput("resource", NAME_RULE)
    subject_type: SubjectType = "role"
    if isinstance(subject, ServiceUser):
        check_holder(subject.role)
        subject_type = "service_user"
    return Grant(
        id=str(uuid.uuid4()), tenant_id=subject.tenant_id, subject_type=subject_type,
        subject_id=subject.id, catalog=catalog, resource=tuple(resource),
        action=action,  # type: ignore[arg-type]  # one of ACTIONS, checked above
        created_at=at, created_by=actor,
    )  # fmt: skip


async def check_room(store: Store, tenant_id: str, more: int) -> None:
    """Refuse (409) ``more`` grants that would take the tenant past its limit."""
    if more and await store.count_grants(tenant_id) + more > MAX_GRANTS_PER_TENANT:
        raise Conflicting(
            f"The tenant holds the most grants allowed ({MAX_GRANTS_PER_TENANT}): "
            "revoke some, or give the same rights through a role"
        )


class GrantAdmin:
    def __init__(self, store: Store, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock

    # Grant and membership changes are recorded against their subject (the service user or
    # role), so its trail shows how its access came to be; the grant's id is in the detail.
    def _record(
        self,
        actor: str,
        action: str,
        target_type: str,
        target_id: str,
        tenant_id: str,
        client: ClientInfo | None,
        detail: str | None,
    ) -> AuditRecord:
        return AuditRecord.success(
            at=self._clock(), actor=actor, action=action, target_type=target_type,
            target_id=target_id, tenant_id=tenant_id, client=client, detail=detail,
        )  # fmt: skip

    # -- roles -------------------------------------------------------------------------------

    async def create_role(
        self,
        *,
        name: str,
        tenant: str,
        description: str = "",
        actor: str,
        client: ClientInfo | None = None,
    ) -> AccessRole:
        if not NAME_RE.fullmatch(name):
            raise InvalidInput("name", "must be lowercase letters, digits, '-' or '_'")
        if len(description) > _MAX_DESCRIPTION or not description.isprintable():
            raise InvalidInput("description", "must be printable, at most 1024 characters")
        found = await self._store.tenant_by_name(tenant)
        if found is None:
            raise NoSuchThing("tenant", field="tenant")
        role = AccessRole(
            id=str(uuid.uuid4()), tenant_id=found.id, tenant_name=found.name, name=name,
            description=description, created_at=self._clock(), created_by=actor,
        )  # fmt: skip
        record = self._record(actor, "role.create", "role", role.id, found.id, client, name)
        try:
            await self._store.insert_access_role(role, record)
        except UniqueViolation:
            raise AlreadyExists(
                "name: a role with this name already exists in the tenant"
            ) from None
        except MissingReference:
            raise NoSuchThing("tenant", field="tenant") from None  # deleted meanwhile
        return role

    async def role(self, id_: str) -> AccessRole:
        role = await self._store.access_role(id_)
        if role is None:
            raise NoSuchThing("role")
        return role

    async def role_by_name(self, tenant_id: str, name: str) -> AccessRole:
        role = await self._store.access_role_by_name(tenant_id, name)
        if role is None:
            raise NoSuchThing("role")
        return role

    async def roles(self, *, tenant_id: str | None) -> list[AccessRole]:
        return await self._store.list_access_roles(tenant_id=tenant_id)

    async def roles_of(self, service_user_id: str) -> list[AccessRole]:
        return await self._store.roles_of(service_user_id)

    async def members(self, role_id: str) -> list[str]:
        return await self._store.role_members(role_id)

    async def delete_role(self, id_: str, *, actor: str, client: ClientInfo | None = None) -> None:
        """Delete the role; its grants and memberships go with it."""
        role = await self.role(id_)
        record = self._record(actor, "role.delete", "role", id_, role.tenant_id, client, role.name)
        if not await self._store.delete_access_role(id_, record):
            raise NoSuchThing("role")

    async def assign(
        self, role: AccessRole, user: ServiceUser, *, actor: str, client: ClientInfo | None = None
    ) -> bool:
        """Give ``role`` to ``user`` (of its tenant); False if it already held it."""
        self._same_tenant(role, user)
        check_holder(user.role)
        record = self._record(
            actor, "role.assign", "service_user", user.id, role.tenant_id, client,
            f"role {role.name} ({role.id}) given",
        )  # fmt: skip
        try:
            return await self._store.add_role_member(role.id, user.id, record)
        except MissingReference:
            raise NoSuchThing("role or service user") from None  # deleted meanwhile

    async def unassign(
        self, role: AccessRole, user: ServiceUser, *, actor: str, client: ClientInfo | None = None
    ) -> None:
        """Take ``role`` from ``user`` (NoSuchThing if it did not hold it)."""
        self._same_tenant(role, user)
        record = self._record(
            actor, "role.unassign", "service_user", user.id, role.tenant_id, client,
            f"role {role.name} ({role.id}) taken away",
        )  # fmt: skip
        if not await self._store.remove_role_member(role.id, user.id, record):
            raise NoSuchThing("role held by the service user")

    @staticmethod
    def _same_tenant(role: AccessRole, user: ServiceUser) -> None:
        if role.tenant_id != user.tenant_id:
            raise InvalidInput("role", "must belong to the service user's tenant")

    # -- grants ------------------------------------------------------------------------------

    async def grant(
        self,
        subject: ServiceUser | AccessRole,
        *,
        catalog: str,
        resource: Sequence[str],
        action: str,
        actor: str,
        client: ClientInfo | None = None,
    ) -> Grant:
        """Give ``subject`` ``action`` on ``resource`` of ``catalog`` (the caller has checked
        that the catalog is one of the subject's tenant)."""
        grant = new_grant(
            subject, catalog=catalog, resource=resource, action=action, actor=actor,
            at=self._clock(),
        )  # fmt: skip
        await check_room(self._store, subject.tenant_id, 1)
        record = self._record(
            actor, "grant.create", grant.subject_type, grant.subject_id, grant.tenant_id,
            client, f"{grant.describe()} (grant {grant.id})",
        )  # fmt: skip
        try:
            await self._store.insert_grant(grant, record)
        except UniqueViolation:
            raise AlreadyExists("The subject already holds this grant") from None
        except MissingReference:
            what = "service user" if grant.subject_type == "service_user" else "role"
            raise NoSuchThing(what) from None  # deleted meanwhile
        return grant

    async def get_grant(self, id_: str) -> Grant:
        grant = await self._store.grant(id_)
        if grant is None:
            raise NoSuchThing("grant")
        return grant

    async def revoke(self, id_: str, *, actor: str, client: ClientInfo | None = None) -> Grant:
        grant = await self.get_grant(id_)
        record = self._record(
            actor, "grant.delete", grant.subject_type, grant.subject_id, grant.tenant_id,
            client, f"{grant.describe()} (grant {grant.id})",
        )  # fmt: skip
        if not await self._store.delete_grant(id_, record):
            raise NoSuchThing("grant")
        return grant

    async def grants(
        self,
        *,
        tenant_id: str | None = None,
        service_user_id: str | None = None,
        role_id: str | None = None,
        catalog: str | None = None,
    ) -> list[Grant]:
        return await self._store.list_grants(
            tenant_id=tenant_id, service_user_id=service_user_id, role_id=role_id,
            catalog=catalog,
        )  # fmt: skip

    async def effective(self, service_user_id: str) -> list[Grant]:
        """What the service user holds: its own grants and its roles'."""
        return await self._store.grants_of_service_user(service_user_id)
