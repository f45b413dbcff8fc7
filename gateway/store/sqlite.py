"""The embedded store: SQLite through aiosqlite, in WAL mode.

Two connections: one for reads (cache misses on the hot path never wait behind a write) and
one for writes, serialized by a lock. Every mutation runs in one ``BEGIN IMMEDIATE``
transaction together with its audit record and the identity-version bump, so a crash at any
moment leaves either all of it or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiosqlite

from ..identity import Role, ServiceUser, Tenant
from .base import AuditRecord, StoreError, UniqueViolation
from .migrations import MIGRATIONS

__all__ = ("DEFAULT_TENANT", "SqliteStore")

DEFAULT_TENANT: Final = "default"

_SU_COLUMNS: Final = """
    su.id, su.tenant_id, t.name, su.name, su.description, su.role, su.key_id, su.key_digest,
    su.created_at, su.created_by, su.expires_at, su.active, su.last_used_at, su.key_rotated_at,
    su.key_generation
"""
_SU_FROM: Final = "FROM service_users su JOIN tenants t ON t.id = su.tenant_id"


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
    ) = row
    return ServiceUser(
        id=id_, tenant_id=tenant_id, tenant_name=tenant_name, name=name,
        description=description, role=Role(role), key_id=key_id, key_digest=bytes(key_digest),
        created_at=created_at, created_by=created_by, expires_at=expires_at,
        active=bool(active), last_used_at=last_used_at, key_rotated_at=key_rotated_at,
        key_generation=key_generation,
    )  # fmt: skip


class SqliteStore:
    """The only mutator of persistent state."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating the file if needed) and migrate to the current schema."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new_file = not self.path.exists()
        if new_file:
            # The store holds key digests and the token-signing key: owner-only. Create the
            # file 0600 before SQLite opens it; letting SQLite create it (0644 under the usual
            # umask) and chmod-ing afterwards leaves a window in which another local user can
            # open it and keep reading through that descriptor after the chmod.
            with contextlib.suppress(FileExistsError):
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            self._writer = await self._connect()
            if new_file:
                os.chmod(self.path, 0o600)  # exactly 0600 whatever the umask
            await self._migrate()
            self._reader = await self._connect()
        except BaseException:
            # A refused open (newer schema, say) must not leave a connection and its thread
            # behind: callers such as ``async with`` never reach close() when open() raises.
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an admin change that was acknowledged survives a power cut too.
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA foreign_keys = ON")
        # Several workers or CLI processes share the file; wait instead of failing on a lock.
        await conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        conn = self._w
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this gateway "
                f"understands ({len(MIGRATIONS)}); upgrade the gateway"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        # Checked on every open rather than inside migration 1, so a store created by a run
        # that died between the two steps still gets its default tenant.
        async with conn.execute("SELECT 1 FROM tenants WHERE name = ?", (DEFAULT_TENANT,)) as cur:
            if await cur.fetchone() is None:
                async with self.transaction() as tx:
                    await tx.execute(
                        "INSERT OR IGNORE INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                        (str(uuid.uuid4()), DEFAULT_TENANT, time.time()),
                    )

    @property
    def _w(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StoreError("store is not open")
        return self._writer

    @property
    def _r(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise StoreError("store is not open")
        return self._reader

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; commits on success, rolls back on any exception."""
        async with self._write_lock:
            conn = self._w
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # Also when COMMIT itself failed (disk full, I/O error): the connection must not
                # be left inside a transaction, or every later BEGIN on it would fail.
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise

    # -- reads -------------------------------------------------------------------------------

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._r.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def ping(self) -> None:
        await self._fetchone("SELECT 1")

    async def identity_version(self) -> int:
        row = await self._fetchone("SELECT value FROM meta WHERE key = 'identity_version'")
        return int(row[0])

    async def tenant_by_name(self, name: str) -> Tenant | None:
        row = await self._fetchone(
            "SELECT id, name, created_at FROM tenants WHERE name = ?", (name,)
        )
        return Tenant(*row) if row else None

    async def service_user(self, id_: str) -> ServiceUser | None:
        row = await self._fetchone(f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.id = ?", (id_,))
        return _service_user(row) if row else None

    async def service_user_by_key_id(self, key_id: str) -> ServiceUser | None:
        row = await self._fetchone(
            f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.key_id = ?", (key_id,)
        )
        return _service_user(row) if row else None

    async def service_user_by_name(self, tenant_id: str, name: str) -> ServiceUser | None:
        row = await self._fetchone(
            f"SELECT {_SU_COLUMNS} {_SU_FROM} WHERE su.tenant_id = ? AND su.name = ?",
            (tenant_id, name),
        )
        return _service_user(row) if row else None

    async def count_service_users(self) -> int:
        row = await self._fetchone("SELECT count(*) FROM service_users")
        return int(row[0])

    async def signing_keys(self) -> list[tuple[str, str]]:
        """(kid, private JWK JSON), newest first."""
        async with self._r.execute(
            "SELECT kid, private_jwk FROM signing_keys ORDER BY created_at DESC"
        ) as cur:
            return [(kid, jwk) for kid, jwk in await cur.fetchall()]

    async def audit_records(self, *, target_id: str | None = None) -> list[AuditRecord]:
        sql = (
            "SELECT at, actor, action, target_type, target_id, tenant_id, outcome, client_addr,"
            " user_agent, detail FROM audit_log"
        )
        params: tuple[Any, ...] = ()
        if target_id is not None:
            sql += " WHERE target_id = ?"
            params = (target_id,)
        async with self._r.execute(sql + " ORDER BY id", params) as cur:
            return [AuditRecord(*row) for row in await cur.fetchall()]

    # -- writes ------------------------------------------------------------------------------

    @staticmethod
    async def _audit(conn: aiosqlite.Connection, record: AuditRecord) -> None:
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, tenant_id,"
            " outcome, client_addr, user_agent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.at, record.actor, record.action, record.target_type, record.target_id,
             record.tenant_id, record.outcome, record.client_addr, record.user_agent,
             record.detail),
        )  # fmt: skip

    @staticmethod
    async def _bump_identity_version(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version'"
        )

    async def insert_service_user(self, user: ServiceUser, audit: AuditRecord) -> None:
        async with self.transaction() as conn:
            try:
                await conn.execute(
                    "INSERT INTO service_users (id, tenant_id, name, description, role, key_id,"
                    " key_digest, created_at, created_by, expires_at, active, last_used_at,"
                    " key_rotated_at, key_generation)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (user.id, user.tenant_id, user.name, user.description, user.role.value,
                     user.key_id, user.key_digest, user.created_at, user.created_by,
                     user.expires_at, int(user.active), user.last_used_at, user.key_rotated_at,
                     user.key_generation),
                )  # fmt: skip
            except aiosqlite.IntegrityError as exc:
                raise UniqueViolation(str(exc)) from None
            await self._audit(conn, audit)
            await self._bump_identity_version(conn)

    async def update_service_user(
        self, id_: str, changes: Mapping[str, Any], audit: AuditRecord
    ) -> bool:
        """Apply column ``changes`` to one service user; False if it does not exist."""
        allowed = {
            "description", "role", "key_id", "key_digest", "expires_at", "active",
            "key_rotated_at", "key_generation",
        }  # fmt: skip
        unknown = set(changes) - allowed
        if unknown or not changes:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'}")
        assignments = ", ".join(
            # A rotation computes the next generation from a read made before this write, so
            # two concurrent rotations would both write N + 1 and tokens minted from the first
            # new key would survive the second rotation. The generation must strictly grow.
            "key_generation = MAX(key_generation + 1, ?)" if column == "key_generation"
            else f"{column} = ?"
            for column in changes
        )  # fmt: skip
        async with self.transaction() as conn:
            cur = await conn.execute(
                f"UPDATE service_users SET {assignments} WHERE id = ?",
                (*changes.values(), id_),
            )
            if cur.rowcount == 0:
                return False
            await self._audit(conn, audit)
            await self._bump_identity_version(conn)
        return True

    async def delete_service_user(self, id_: str, audit: AuditRecord) -> bool:
        async with self.transaction() as conn:
            cur = await conn.execute("DELETE FROM service_users WHERE id = ?", (id_,))
            if cur.rowcount == 0:
                return False
            await self._audit(conn, audit)
            await self._bump_identity_version(conn)
        return True

    async def insert_tenant(self, name: str, audit: AuditRecord) -> Tenant:
        tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=audit.at)
        async with self.transaction() as conn:
            try:
                await conn.execute(
                    "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                    (tenant.id, tenant.name, tenant.created_at),
                )
            except aiosqlite.IntegrityError as exc:
                raise UniqueViolation(str(exc)) from None
            await self._audit(conn, dataclasses.replace(audit, target_id=tenant.id))
            await self._bump_identity_version(conn)
        return tenant

    async def insert_signing_key(self, kid: str, private_jwk: str) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO signing_keys (kid, private_jwk, created_at) VALUES (?, ?, ?)",
                (kid, private_jwk, time.time()),
            )

    async def record_last_used(self, last_used: Mapping[str, float]) -> None:
        """Write a batch of last-use times; never moves a time backwards."""
        if not last_used:
            return
        async with self.transaction() as conn:
            await conn.executemany(
                "UPDATE service_users SET last_used_at = ?"
                " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
                [(at, id_, at) for id_, at in last_used.items()],
            )
