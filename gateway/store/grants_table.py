"""The grants tables: named roles of a tenant, the service users holding them, and grants.

Every change is an identity change: it commits with its audit record and bumps the identity
version, so each process rebuilds the grant index of the service users it caches (this one on
the very next request, the others within ``store.change_poll_seconds``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

from ..identity.grants import AccessRole, Grant
from .base import AuditRecord
from .core import StoreCore, Tx

__all__ = ("GrantTables", "insert_grant_row", "insert_members")

_SEPARATOR: Final = "\x1f"  # never inside a name (identifiers refuses control characters)
_ROLE_COLUMNS: Final = (
    "r.id, r.tenant_id, t.name, r.name, r.description, r.created_at, r.created_by"
)
_ROLES: Final = f"SELECT {_ROLE_COLUMNS} FROM access_roles r JOIN tenants t ON t.id = r.tenant_id"
_GRANT_COLUMNS: Final = (
    "g.id, g.tenant_id, g.service_user_id, g.role_id, g.catalog, g.resource, g.action,"
    " g.created_at, g.created_by"
)


_ADD_MEMBER: Final = (
    "INSERT INTO role_members (role_id, service_user_id, added_at) VALUES (?, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


def _role(row: Iterable[Any]) -> AccessRole:
    return AccessRole(*row)


def _grant(row: Iterable[Any]) -> Grant:
    id_, tenant_id, user_id, role_id, catalog, resource, action, created_at, created_by = row
    return Grant(
        id=id_, tenant_id=tenant_id,
        subject_type="service_user" if user_id is not None else "role",
        subject_id=user_id if user_id is not None else role_id,
        catalog=catalog, resource=tuple(resource.split(_SEPARATOR)) if resource else (),
        action=action, created_at=created_at, created_by=created_by,
    )  # fmt: skip


class GrantTables(StoreCore):
    # -- roles -------------------------------------------------------------------------------

    async def access_role(self, id_: str) -> AccessRole | None:
        row = await self._fetchone(f"{_ROLES} WHERE r.id = ?", (id_,))
        return _role(row) if row else None

    async def access_role_by_name(self, tenant_id: str, name: str) -> AccessRole | None:
        row = await self._fetchone(
            f"{_ROLES} WHERE r.tenant_id = ? AND r.name = ?", (tenant_id, name)
        )
        return _role(row) if row else None

    async def list_access_roles(self, *, tenant_id: str | None) -> list[AccessRole]:
        condition, params = self._where((("r.tenant_id = ?", tenant_id),))
        rows = await self._fetchall(
            f"{_ROLES}{condition} ORDER BY t.name COLLATE BINARY, r.name COLLATE BINARY", params
        )
        return [_role(row) for row in rows]

    async def roles_of(self, service_user_id: str) -> list[AccessRole]:
        rows = await self._fetchall(
            f"{_ROLES} JOIN role_members m ON m.role_id = r.id"
            " WHERE m.service_user_id = ? ORDER BY r.name COLLATE BINARY",
            (service_user_id,),
        )
        return [_role(row) for row in rows]

    async def role_members(self, role_id: str) -> list[str]:
        """The ids of the service users holding the role."""
        rows = await self._fetchall(
            "SELECT service_user_id FROM role_members WHERE role_id = ? ORDER BY added_at",
            (role_id,),
        )
        return [row[0] for row in rows]

    async def insert_access_role(self, role: AccessRole, audit: AuditRecord) -> None:
        async with self.transaction() as tx:
            await tx.execute(  # UniqueViolation: the name is taken; MissingReference: no tenant
                "INSERT INTO access_roles (id, tenant_id, name, description, created_at,"
                " created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (role.id, role.tenant_id, role.name, role.description, role.created_at,
                 role.created_by),
            )  # fmt: skip
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)

    async def delete_access_role(self, id_: str, audit: AuditRecord) -> bool:
        """Delete a role with its grants and memberships; False if there is none."""
        return await self._change("DELETE FROM access_roles WHERE id = ?", (id_,), audit)

    async def add_role_member(self, role_id: str, service_user_id: str, audit: AuditRecord) -> bool:
        """Give the role to the service user; False if it already holds it."""
        return await self._change(_ADD_MEMBER, (role_id, service_user_id, audit.at), audit)

    async def remove_role_member(
        self, role_id: str, service_user_id: str, audit: AuditRecord
    ) -> bool:
        """Take the role from the service user; False if it did not hold it."""
        return await self._change(
            "DELETE FROM role_members WHERE role_id = ? AND service_user_id = ?",
            (role_id, service_user_id),
            audit,
        )

    # -- grants ------------------------------------------------------------------------------

    async def grant(self, id_: str) -> Grant | None:
        row = await self._fetchone(f"SELECT {_GRANT_COLUMNS} FROM grants g WHERE g.id = ?", (id_,))
        return _grant(row) if row else None

    async def list_grants(
        self,
        *,
        tenant_id: str | None = None,
        service_user_id: str | None = None,
        role_id: str | None = None,
        catalog: str | None = None,
    ) -> list[Grant]:
        """Grants given directly to the subjects named (a role's own, not its members')."""
        condition, params = self._where(
            (
                ("g.tenant_id = ?", tenant_id),
                ("g.service_user_id = ?", service_user_id),
                ("g.role_id = ?", role_id),
                ("g.catalog = ?", catalog),
            )
        )
        rows = await self._fetchall(
            f"SELECT {_GRANT_COLUMNS} FROM grants g{condition}"
            " ORDER BY g.catalog COLLATE BINARY, g.resource COLLATE BINARY,"
            " g.action COLLATE BINARY, g.created_at",
            params,
        )
        return [_grant(row) for row in rows]

    async def count_grants(self, tenant_id: str) -> int:
        row = await self._fetchone("SELECT count(*) FROM grants WHERE tenant_id = ?", (tenant_id,))
        return int(row[0])

    async def grants_of_service_user(self, service_user_id: str) -> list[Grant]:
        """What the service user holds: its own grants and those of its roles (one read)."""
        rows = await self._fetchall(
            f"SELECT {_GRANT_COLUMNS} FROM grants g WHERE g.service_user_id = ?"
            f" UNION ALL SELECT {_GRANT_COLUMNS} FROM grants g"
            " JOIN role_members m ON m.role_id = g.role_id WHERE m.service_user_id = ?",
            (service_user_id, service_user_id),
        )
        return [_grant(row) for row in rows]

    async def insert_grant(self, grant: Grant, audit: AuditRecord) -> None:
        async with self.transaction() as tx:
            await insert_grant_row(tx, grant)
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)

    async def delete_grant(self, id_: str, audit: AuditRecord) -> bool:
        return await self._change("DELETE FROM grants WHERE id = ?", (id_,), audit)


async def insert_members(tx: Tx, service_user_id: str, role_ids: Sequence[str], at: float) -> None:
    """Give roles to a service user inside the caller's transaction (MissingReference: a role
    deleted meanwhile)."""
    await tx.executemany(_ADD_MEMBER, [(r, service_user_id, at) for r in role_ids])


async def insert_grant_row(tx: Tx, grant: Grant) -> None:
    """One grant inside the caller's transaction (UniqueViolation: the subject holds it;
    MissingReference: the subject is gone)."""
    user_id = grant.subject_id if grant.subject_type == "service_user" else None
    role_id = grant.subject_id if grant.subject_type == "role" else None
    await tx.execute(
        "INSERT INTO grants (id, tenant_id, service_user_id, role_id, catalog,"
        " resource, action, created_at, created_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (grant.id, grant.tenant_id, user_id, role_id, grant.catalog,
         _SEPARATOR.join(grant.resource), grant.action, grant.created_at, grant.created_by),
    )  # fmt: skip
