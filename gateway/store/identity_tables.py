"""Tenants, service users (with their daily request counts) and signing keys; human users,
their sessions, grants and the audit log have modules of their own. SQL both engines read."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from ..identity.grants import Grant
from ..identity.models import Role, ServiceUser, Tenant
from .base import AuditRecord, InUse
from .core import StoreCore, Tx
from .grants_table import insert_grant_row, insert_members

__all__ = ("IdentityTables",)

_SU_COLUMNS: Final = """
    su.id, su.tenant_id, t.name, su.name, su.description, su.role, su.key_id, su.key_digest,
    su.created_at, su.created_by, su.expires_at, su.active, su.last_used_at, su.key_rotated_at,
    su.key_generation, su.previous_key_id, su.previous_key_digest, su.previous_key_until,
    su.allowed_networks, su.rate_limit, su.rate_burst
"""
_WHAT: Final = {"service_users": "service users", "users": "users", "access_roles": "roles"}
_SU_FROM: Final = "FROM service_users su JOIN tenants t ON t.id = su.tenant_id"


def networks_column(networks: Sequence[str]) -> str | None:
    """An allowlist as stored: a JSON list, or NULL for "from anywhere"."""
    return json.dumps(list(networks)) if networks else None


def _service_user(row: Iterable[Any]) -> ServiceUser:
    (
        id_,
        tenant_id,
        tenant_name,
        name,
        description,
        role,
        key_id,
        key_digest,
        created_at,
        created_by,
        expires_at,
        active,
        last_used_at,
        key_rotated_at,
        key_generation,
        previous_key_id,
        previous_key_digest,
        previous_key_until,
        allowed_networks,
        rate_limit,
        rate_burst,
    ) = row
    return ServiceUser(
        id=id_, tenant_id=tenant_id, tenant_name=tenant_name, name=name,
        description=description, role=Role(role), key_id=key_id, key_digest=bytes(key_digest),
        created_at=created_at, created_by=created_by, expires_at=expires_at,
        active=bool(active), last_used_at=last_used_at, key_rotated_at=key_rotated_at,
        key_generation=key_generation, previous_key_id=previous_key_id,
        previous_key_digest=None if previous_key_digest is None else bytes(previous_key_digest),
        previous_key_until=previous_key_until,
        allowed_networks=tuple(json.loads(allowed_networks)) if allowed_networks else (),
        rate_limit=rate_limit, rate_burst=rate_burst,
    )  # fmt: skip


class IdentityTables(StoreCore):
    async def tenant_by_name(self, name: str) -> Tenant | None:
        row = await self._fetchone(
            "SELECT id, name, created_at FROM tenants WHERE name = ?", (name,)
        )
        return Tenant(*row) if row else None

    async def tenant(self, id_: str) -> Tenant | None:
        row = await self._fetchone("SELECT id, name, created_at FROM tenants WHERE id = ?", (id_,))
        return Tenant(*row) if row else None

    async def list_tenants(self) -> list[Tenant]:
        # Byte order (SQLite's, and PostgreSQL's "C"), whatever the database's collation.
        rows = await self._fetchall(
            "SELECT id, name, created_at FROM tenants ORDER BY name COLLATE BINARY"
        )
        return [Tenant(*row) for row in rows]

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
    ) -> tuple[list[ServiceUser], int]:
        """One page, ordered by tenant and name, and the total matching count.
        ``unused_before``: not used since then (last used before it, or never used and made
        before it); ``expires_from``/``expires_before``: an expiry in that span."""
        condition, params = self._where(
            (
                ("su.tenant_id = ?", tenant_id),
                ("t.name = ?", tenant_name),
                ("su.active = ?", None if active is None else int(active)),
                ("su.role = ?", None if role is None else role.value),
                ("coalesce(su.last_used_at, su.created_at) < ?", unused_before),
                ("su.expires_at >= ?", expires_from),
                ("su.expires_at < ?", expires_before),
            )
        )
        total = (await self._fetchone(f"SELECT count(*) {_SU_FROM}{condition}", params))[0]
        rows = await self._fetchall(
            f"SELECT {_SU_COLUMNS} {_SU_FROM}{condition}"
            " ORDER BY t.name COLLATE BINARY, su.name COLLATE BINARY LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [_service_user(row) for row in rows], int(total)

    async def service_user(self, id_: str) -> ServiceUser | None:
        row = await self._fetchone(f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.id = ?", (id_,))
        return _service_user(row) if row else None

    async def service_user_by_key_id(self, key_id: str) -> ServiceUser | None:
        # The current key's id or, during an overlap, the previous key's.
        row = await self._fetchone(
            f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.key_id = ? OR su.previous_key_id = ?",
            (key_id, key_id),
        )
        return _service_user(row) if row else None

    async def service_user_by_name(self, tenant_id: str, name: str) -> ServiceUser | None:
        row = await self._fetchone(
            f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.tenant_id = ? AND su.name = ?",
            (tenant_id, name),
        )
        return _service_user(row) if row else None

    async def count_old_keys(self, past: float, near: float) -> tuple[int, int]:
        """Active service users whose key was issued (made or last rotated) before ``past``,
        and those issued from ``past`` but before ``near``."""
        issued = "coalesce(key_rotated_at, created_at)"
        row = await self._fetchone(
            f"SELECT coalesce(sum(CASE WHEN {issued} < ? THEN 1 ELSE 0 END), 0),"
            f" coalesce(sum(CASE WHEN {issued} >= ? AND {issued} < ? THEN 1 ELSE 0 END), 0)"
            " FROM service_users WHERE active = 1",
            (past, past, near),
        )
        return int(row[0]), int(row[1])

    async def count_service_users(self) -> int:
        row = await self._fetchone("SELECT count(*) FROM service_users")
        return int(row[0])

    async def signing_keys(self) -> list[tuple[str, str]]:
        """(kid, private JWK JSON), newest first."""
        rows = await self._fetchall(
            "SELECT kid, private_jwk FROM signing_keys ORDER BY created_at DESC"
        )
        return [(kid, jwk) for kid, jwk in rows]

    # -- writes ------------------------------------------------------------------------------

    async def insert_service_user(
        self,
        user: ServiceUser,
        audit: AuditRecord,
        *,
        grants: Sequence[Grant] = (),
        role_ids: Sequence[str] = (),
    ) -> None:
        """Insert the service user with its first ``grants`` and roles, in one transaction."""
        async with self.transaction() as tx:
            # UniqueViolation: the name is taken; MissingReference: the tenant (or a role) is
            # gone since the caller looked.
            await tx.execute(
                "INSERT INTO service_users (id, tenant_id, name, description, role, key_id,"
                " key_digest, created_at, created_by, expires_at, active, last_used_at,"
                " key_rotated_at, key_generation, allowed_networks, rate_limit, rate_burst)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (user.id, user.tenant_id, user.name, user.description, user.role.value,
                 user.key_id, user.key_digest, user.created_at, user.created_by,
                 user.expires_at, int(user.active), user.last_used_at, user.key_rotated_at,
                 user.key_generation, networks_column(user.allowed_networks),
                 user.rate_limit, user.rate_burst),
            )  # fmt: skip
            for grant in grants:
                await insert_grant_row(tx, grant)
            await insert_members(tx, user.id, role_ids, audit.at)
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)

    async def update_service_user(
        self, id_: str, changes: Mapping[str, Any], audit: AuditRecord
    ) -> bool:
        """Apply column ``changes`` to one service user; False if it does not exist."""
        allowed = {
            "description", "role", "key_id", "key_digest", "expires_at", "active",
            "key_rotated_at", "key_generation", "previous_key_id", "previous_key_digest",
            "previous_key_until", "allowed_networks", "rate_limit", "rate_burst",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown or not changes:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'}")
        if "allowed_networks" in changes:  # a sequence of CIDRs, stored as JSON
            changes = {**changes, "allowed_networks": networks_column(changes["allowed_networks"])}
        # A rotation computes the next generation from a read made before this write, so two
        # concurrent rotations would both write N + 1 and tokens minted from the first new key
        # would survive the second rotation. The generation must strictly grow (the greater
        # of the two, in SQL both engines read).
        assignments = ", ".join(
            "key_generation = CASE WHEN key_generation + 1 > ? THEN key_generation + 1 ELSE ? END"
            if column == "key_generation" else f"{column} = ?"
            for column in changes
        )  # fmt: skip
        values = [
            v for column, value in changes.items()
            for v in ((value, value) if column == "key_generation" else (value,))
        ]  # fmt: skip
        also: list[tuple[str, tuple[Any, ...]]] = []
        if changes.get("role", Role.TENANT_USER.value) != Role.TENANT_USER.value:
            # Root and TenantAdmin hold no grants: those of a promoted TenantUser go, rather
            # than wait, unseen, to come back with a demotion.
            also = [(f"DELETE FROM {table} WHERE service_user_id = ?", (id_,))
                    for table in ("grants", "role_members")]  # fmt: skip
        return await self._change_identity(
            f"UPDATE service_users SET {assignments} WHERE id = ?",
            (*values, id_),
            table="service_users", id_=id_, audit=audit, also=also,
        )  # fmt: skip

    async def delete_service_user(self, id_: str, audit: AuditRecord) -> bool:
        return await self._change_identity(
            "DELETE FROM service_users WHERE id = ?", (id_,),
            table="service_users", id_=id_, audit=audit,
        )  # fmt: skip

    async def insert_tenant(self, name: str, audit: AuditRecord) -> Tenant:
        tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=audit.at)
        async with self.transaction() as tx:
            await tx.execute(  # UniqueViolation: the name is taken
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                (tenant.id, tenant.name, tenant.created_at),
            )
            await self._audit(
                tx, dataclasses.replace(audit, target_id=tenant.id, tenant_id=tenant.id)
            )
            await self._bump_identity_version(tx)
        return tenant

    async def delete_tenant(self, id_: str, audit: AuditRecord) -> bool:
        """Delete an empty tenant; raises InUse while identities still belong to it."""
        async with self.transaction() as tx:
            for table in ("service_users", "users", "access_roles"):
                row = await tx.fetchone(f"SELECT count(*) FROM {table} WHERE tenant_id = ?", (id_,))
                if row is not None and row[0]:
                    raise InUse(f"Cannot delete the tenant: it still has {row[0]} {_WHAT[table]}")
            if await tx.execute("DELETE FROM tenants WHERE id = ?", (id_,)) == 0:
                return False
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)
        return True

    async def insert_signing_key(self, kid: str, private_jwk: str) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO signing_keys (kid, private_jwk, created_at) VALUES (?, ?, ?)",
                (kid, private_jwk, time.time()),
            )

    async def record_last_used(
        self,
        last_used: Mapping[str, float],
        *,
        requests: Mapping[tuple[str, str], int] | None = None,
        prune_before: str | None = None,
    ) -> None:
        """Write a batch of last-use times (never moving a time backwards) and of request
        counts per (service user id, UTC day ``YYYY-MM-DD``), in one transaction. Counts are
        added to the stored ones, so the batches of several processes add up. With
        ``prune_before``, days before it are removed."""
        if not last_used and not requests:
            return
        async with self.transaction() as tx:
            await tx.executemany(
                "UPDATE service_users SET last_used_at = ?"
                " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                [(at, id_, at) for id_, at in last_used.items()],
            )
            if requests:
                # Only for service users that still exist: a count for one deleted since it
                # was made would break the foreign key and fail the whole batch, every time.
                # (Writes are serialized in both engines, so none is deleted in between.)
                living = await self._living(tx, {id_ for id_, _ in requests})
                await tx.executemany(
                    "INSERT INTO usage_daily (service_user_id, day, requests) VALUES (?, ?, ?)"
                    " ON CONFLICT (service_user_id, day)"
                    " DO UPDATE SET requests = usage_daily.requests + excluded.requests",
                    [(id_, day, n) for (id_, day), n in requests.items() if id_ in living],
                )
            if prune_before is not None:
                await tx.execute("DELETE FROM usage_daily WHERE day < ?", (prune_before,))

    @staticmethod
    async def _living(tx: Tx, ids: set[str]) -> set[str]:
        """Those of ``ids`` that still exist, a few hundred per statement (one round trip
        each, however many service users a flush names)."""
        found: set[str] = set()
        wanted = sorted(ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = await tx.fetchall(f"SELECT id FROM service_users WHERE id IN ({marks})", chunk)
            found.update(row[0] for row in rows)
        return found

    async def usage_of(self, service_user_id: str, since: str) -> dict[str, int]:
        """Stored request counts of one service user by UTC day, from ``since`` on."""
        rows = await self._fetchall(
            "SELECT day, requests FROM usage_daily WHERE service_user_id = ? AND day >= ?",
            (service_user_id, since),
        )
        return {day: int(requests) for day, requests in rows}
