"""The embedded store: SQLite through aiosqlite, in WAL mode.

Two connections: one for reads (cache misses on the hot path never wait behind a write) and
one for writes, serialized by a lock, each write in one ``BEGIN IMMEDIATE`` transaction. The
tables' SQL is shared with the PostgreSQL store (``tables``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from .base import MissingReference, StoreError, UniqueViolation
from .core import DEFAULT_TENANT, StoreCore, Tx, schema_refusal
from .migrations import MIGRATIONS
from .tables import StoreTables

__all__ = ("DEFAULT_TENANT", "SqliteStore")


def _integrity(exc: sqlite3.IntegrityError) -> StoreError:
    """What a broken constraint means: a unique one, a duplicate; a foreign key, a row the
    change refers to that someone deleted meanwhile; a CHECK, a bug."""
    if "FOREIGN KEY" in str(exc):
        return MissingReference(str(exc))
    if "UNIQUE" in str(exc):
        return UniqueViolation(str(exc))
    return StoreError(str(exc))  # a CHECK: a programming error, the domain checks first


class _SqliteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        self.identity_changed = False

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            cur = await self._conn.execute(sql, tuple(params))
        except sqlite3.IntegrityError as exc:
            raise _integrity(exc) from None
        return int(cur.rowcount)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            await self._conn.executemany(sql, [tuple(row) for row in rows])
        except sqlite3.IntegrityError as exc:
            raise _integrity(exc) from None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._conn.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())


class SqliteEngine(StoreCore):
    """Connections, transactions and migrations of one SQLite file."""

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self._reader: aiosqlite.Connection | None = None
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def open(self, *, migrate: bool = True) -> None:
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
            await self._migrate(apply=migrate)
            self._reader = await self._connect()
            await self._ensure_default_tenant()
        except BaseException:
            # A refused open (newer schema, say) must not leave a connection and its thread
            # behind: callers such as ``async with`` never reach close() when open() raises.
            await self.close()
            raise

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        try:
            await conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an admin change that was acknowledged survives a power cut too.
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            # Several workers or CLI processes share the file; wait instead of failing on a
            # lock.
            await conn.execute("PRAGMA busy_timeout = 10000")
        except BaseException:
            await conn.close()  # not a database, say: its thread must not outlive the refusal
            raise
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    async def _migrate(self, *, apply: bool) -> None:
        conn = self._w
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = self.found_version = int(row[0]) if row else 0
        if refusal := schema_refusal(str(self.path), version, len(MIGRATIONS), migrate=apply):
            raise StoreError(refusal)
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.executescript(
                f"BEGIN IMMEDIATE;\n{migration.sqlite}\nPRAGMA user_version = {number};\nCOMMIT;"
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
    async def _transaction(self) -> AsyncIterator[Tx]:
        async with self._write_lock:
            conn = self._w
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield _SqliteTx(conn)
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

    @asynccontextmanager
    async def setup_lock(self) -> AsyncIterator[None]:
        # An flock on the database file itself: SQLite locks with fcntl, which is independent
        # of flock on Linux, so this never blocks the store's own reads and writes. Waited for
        # in a thread, so the event loop goes on meanwhile.
        with open(self.path, "rb") as held:
            await asyncio.to_thread(fcntl.flock, held.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(held.fileno(), fcntl.LOCK_UN)

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        async with self._r.execute(sql, tuple(params)) as cur:
            return await cur.fetchone()

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._r.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())


class SqliteStore(StoreTables, SqliteEngine):
    """The only mutator of persistent state, in one SQLite file."""
