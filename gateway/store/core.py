"""The SQLite connection layer of the store: opening, migrations, transactions.

Two connections: one for reads (cache misses on the hot path never wait behind a write) and
one for writes, serialized by a lock. Every mutation runs in one ``BEGIN IMMEDIATE``
transaction together with its audit record and the identity-version bump, so a crash at any
moment leaves either all of it or none of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Self

import aiosqlite

from .base import AuditRecord, LastRoot, MissingReference, StoreError, UniqueViolation
from .migrations import MIGRATIONS

__all__ = ("DEFAULT_TENANT", "SqliteCore")

DEFAULT_TENANT: Final = "default"


class SqliteCore:
    """Connections and transactions; the tables' methods live in the classes built on it."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._change_listeners: list[Callable[[], None]] = []
        self._identity_changed = False

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

    async def __aenter__(self) -> Self:
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
            self._identity_changed = False
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                # The connection must never be left inside a transaction, or every later BEGIN
                # on it fails: not when COMMIT failed (disk full, I/O error), and not when this
                # task was cancelled while BEGIN or COMMIT was still running in aiosqlite's
                # thread (it completes anyway). Statements run in order on that thread, so an
                # unconditional ROLLBACK lands after it; shielded, so a second cancellation
                # cannot stop it either.
                with contextlib.suppress(sqlite3.OperationalError):  # nothing was open
                    await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            if self._identity_changed:
                for listener in self._change_listeners:
                    listener()

    @staticmethod
    def _integrity(exc: sqlite3.IntegrityError) -> StoreError:
        """What a broken constraint means: a unique one, a duplicate; a foreign key, a row the
        change refers to that someone deleted meanwhile; a CHECK, a bug."""
        if "FOREIGN KEY" in str(exc):
            return MissingReference(str(exc))
        if "UNIQUE" in str(exc):
            return UniqueViolation(str(exc))
        return StoreError(str(exc))  # a CHECK: a programming error, the domain checks first

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._r.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def ping(self) -> None:
        await self._fetchone("SELECT 1")

    async def identity_version(self) -> int:
        row = await self._fetchone("SELECT value FROM meta WHERE key = 'identity_version'")
        return int(row[0])

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._r.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    @staticmethod
    async def _audit(conn: aiosqlite.Connection, record: AuditRecord) -> None:
        await conn.execute(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, tenant_id,"
            " outcome, client_addr, user_agent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.at, record.actor, record.action, record.target_type, record.target_id,
             record.tenant_id, record.outcome, record.client_addr, record.user_agent,
             record.detail),
        )  # fmt: skip

    async def _bump_identity_version(self, conn: aiosqlite.Connection) -> None:
        """Mark this transaction as an identity change: other processes see the new version,
        and this process's listeners are told once it commits."""
        await conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_version'"
        )
        self._identity_changed = True

    async def _change_identity(
        self,
        sql: str,
        params: Iterable[Any],
        *,
        table: str,
        id_: str,
        audit: AuditRecord,
        also: Iterable[tuple[str, tuple[Any, ...]]] = (),
    ) -> bool:
        """Run one UPDATE or DELETE of identity ``id_`` (and the statements ``also`` names,
        if it matched a row) with its audit record in one transaction; False if there is no
        such row. Refused (LastRoot) if it would retire the last usable Root."""
        async with self.transaction() as conn:
            was_root = await self._is_root(conn, table, id_)
            permanent_before = await self._permanent_roots(conn) if was_root else 0
            cur = await conn.execute(sql, tuple(params))
            if cur.rowcount == 0:
                return False
            for statement, values in also:
                await conn.execute(statement, values)
            if was_root:
                await self._refuse_if_rootless(conn, audit.at, permanent_before)
            await self._audit(conn, audit)
            await self._bump_identity_version(conn)
        return True

    @staticmethod
    def _where(filters: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """`` WHERE a AND b`` from (clause, value) pairs whose value is not None."""
        chosen = [(clause, value) for clause, value in filters if value is not None]
        if not chosen:
            return "", []
        return " WHERE " + " AND ".join(c for c, _ in chosen), [v for _, v in chosen]

    @staticmethod
    async def _is_root(conn: aiosqlite.Connection, table: str, id_: str) -> bool:
        async with conn.execute(f"SELECT role = 'Root' FROM {table} WHERE id = ?", (id_,)) as cur:
            row = await cur.fetchone()
        return bool(row and row[0])

    @staticmethod
    async def _permanent_roots(conn: aiosqlite.Connection) -> int:
        """Active Root identities that never expire (human users have no expiry)."""
        async with conn.execute(
            "SELECT (SELECT count(*) FROM service_users WHERE role = 'Root' AND active = 1"
            " AND expires_at IS NULL)"
            " + (SELECT count(*) FROM users WHERE role = 'Root' AND active = 1)"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @classmethod
    async def _refuse_if_rootless(
        cls, conn: aiosqlite.Connection, now: float, permanent_before: int
    ) -> None:
        """Raise LastRoot (rolling the change back) if the change leaves no usable Root now,
        or takes away the last Root that never expires: with none, nobody could ever manage
        tenants or grant Root again (an expiry retires a Root as surely as a deactivation,
        only later)."""
        async with conn.execute(
            "SELECT (SELECT count(*) FROM service_users WHERE role = 'Root' AND active = 1"
            " AND (expires_at IS NULL OR expires_at > ?))"
            " + (SELECT count(*) FROM users WHERE role = 'Root' AND active = 1)",
            (now,),
        ) as cur:
            row = await cur.fetchone()
        if not row or not row[0]:
            raise LastRoot()
        if permanent_before and not await cls._permanent_roots(conn):
            raise LastRoot()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every committed identity change made through this store
        object, before the call that made it returns (so the very next request sees it)."""
        self._change_listeners.append(listener)
