"""The human users table (administrators who log in with a password)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..identity.models import Role, User
from .base import AuditRecord
from .core import StoreCore

__all__ = ("USER_COLUMNS", "UserTables", "user_from_row")

# Also read by ``sessions_table``, which joins a session to its user.
USER_COLUMNS: Final = """
    u.id, u.tenant_id, t.name, u.username, u.role, u.password_hash, u.created_at, u.created_by,
    u.active, u.last_login_at, u.failed_logins, u.password_changed_at
"""
_FROM: Final = "FROM users u JOIN tenants t ON t.id = u.tenant_id"
_UPDATABLE: Final = frozenset({"role", "password_hash", "password_changed_at", "active"})
# Ending every session of the user, in the transaction of a change that must end them.
_END_SESSIONS: Final = "DELETE FROM sessions WHERE user_id = ?"


def user_from_row(row: Iterable[Any]) -> User:
    (
        id_,
        tenant_id,
        tenant_name,
        username,
        role,
        password_hash,
        created_at,
        created_by,
        active,
        last_login_at,
        failed_logins,
        password_changed_at,
    ) = row
    return User(
        id=id_, tenant_id=tenant_id, tenant_name=tenant_name, username=username,
        role=Role(role), password_hash=password_hash, created_at=created_at,
        created_by=created_by, active=bool(active), last_login_at=last_login_at,
        failed_logins=failed_logins, password_changed_at=password_changed_at,
    )  # fmt: skip


class UserTables(StoreCore):
    async def user(self, id_: str) -> User | None:
        row = await self._fetchone(f"SELECT {USER_COLUMNS} {_FROM} WHERE u.id = ?", (id_,))
        return user_from_row(row) if row else None

    async def user_by_username(self, username: str) -> User | None:
        row = await self._fetchone(
            f"SELECT {USER_COLUMNS} {_FROM} WHERE u.username = ?", (username,)
        )
        return user_from_row(row) if row else None

    async def list_users(
        self, *, tenant_id: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        condition, params = ("WHERE u.tenant_id = ?", [tenant_id]) if tenant_id else ("", [])
        total = (await self._fetchone(f"SELECT count(*) {_FROM} {condition}", params))[0]
        rows = await self._fetchall(
            f"SELECT {USER_COLUMNS} {_FROM} {condition}"
            " ORDER BY u.username COLLATE BINARY LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [user_from_row(row) for row in rows], int(total)

    async def insert_user(self, user: User, audit: AuditRecord) -> None:
        async with self.transaction() as tx:
            await tx.execute(  # UniqueViolation: the username is taken
                "INSERT INTO users (id, tenant_id, username, role, password_hash, created_at,"
                " created_by, active, last_login_at, failed_logins, password_changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user.id, user.tenant_id, user.username, user.role.value, user.password_hash,
                 user.created_at, user.created_by, int(user.active), user.last_login_at,
                 user.failed_logins, user.password_changed_at),
            )  # fmt: skip
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)

    async def update_user(self, id_: str, changes: Mapping[str, Any], audit: AuditRecord) -> bool:
        """Apply column ``changes``; a new password or a deactivation also ends every session
        of the user, in the same transaction: no caller can forget it, and no session
        outlives the commit in any process (sessions are read from the store, not cached)."""
        unknown = set(changes) - _UPDATABLE
        if unknown or not changes:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'}")
        assignments = ", ".join(f"{column} = ?" for column in changes)
        ends_sessions = "password_hash" in changes or not changes.get("active", True)
        return await self._change_identity(
            f"UPDATE users SET {assignments} WHERE id = ?", (*changes.values(), id_),
            table="users", id_=id_, audit=audit,
            also=[(_END_SESSIONS, (id_,))] if ends_sessions else (),
        )  # fmt: skip

    async def delete_user(self, id_: str, audit: AuditRecord) -> bool:
        # Its sessions go with it (ON DELETE CASCADE), in the same statement.
        return await self._change_identity(
            "DELETE FROM users WHERE id = ?", (id_,), table="users", id_=id_, audit=audit
        )

    async def record_failed_login(self, id_: str) -> None:
        """Count a failed login (a successful one is noted with its session: insert_session)."""
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = ?", (id_,)
            )
