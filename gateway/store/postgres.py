"""The store on PostgreSQL, through asyncpg: for replicas on several hosts sharing one state.

The tables' SQL is the SQLite store's (``tables``), written with ``?`` placeholders; here they
become ``$1, $2 ...`` (asyncpg prepares and caches each statement on its connection). Reads go
to the pool; every write transaction first takes one transaction-scoped advisory lock, so
writes are serialized across every replica as SQLite serializes them within a host: the rules
that count before they change (the last Root, the grants of a tenant) read a state no other
writer is changing, under PostgreSQL's default isolation.

Migrations: the same list as SQLite's (``migrations``), each in its own transaction under a
second advisory lock, with the version in ``schema_version``; replicas starting at once wait
for each other, and the second finds the work done.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

from .base import MissingReference, StoreError, UniqueViolation
from .core import StoreCore, Tx, schema_refusal
from .migrations import MIGRATIONS
from .tables import StoreTables

__all__ = ("PostgresStore",)

# pg_advisory_xact_lock keys (64-bit): "pangolin" in ASCII, and one more for migrations.
_WRITE_LOCK: Final = 0x70616E676F6C696E
_MIGRATE_LOCK: Final = _WRITE_LOCK + 1
_PLACEHOLDER: Final = re.compile(r"\?")
# A pooled connection (what the pool lends) or a plain one: the same API.
_Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@functools.lru_cache(maxsize=1024)
def _dollar(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$n`` (the store's SQL has no literal ``?``)."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def _translated(exc: asyncpg.PostgresError) -> StoreError:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return MissingReference(str(exc))
    return StoreError(str(exc))


class _PostgresTx:
    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self.identity_changed = False

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            status: str = await self._conn.execute(_dollar(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise _translated(exc) from None
        # "UPDATE 2", "DELETE 0", "INSERT 0 1": the last word is the row count.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        if not batch:
            return
        try:
            await self._conn.executemany(_dollar(sql), batch)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise _translated(exc) from None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return await self._conn.fetchrow(_dollar(sql), *params)


class PostgresEngine(StoreCore):
    """A connection pool on one PostgreSQL database, its migrations and transactions."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        super().__init__()
        self.url = url
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return "PostgresStore(<url redacted>)"  # the URL may carry a password

    async def open(self, *, migrate: bool = True) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=1, max_size=self._pool_size, command_timeout=30
            )
        except (OSError, asyncpg.PostgresError) as exc:
            # The class and message only: asyncpg's text names host and user, never the
            # password; the URL itself is never printed.
            raise StoreError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        try:
            await self._migrate(apply=migrate)
            await self._ensure_default_tenant()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def _migrate(self, *, apply: bool) -> None:
        async with self._p.acquire() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            for number, migration in enumerate(MIGRATIONS, start=1):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                    version = await self._version(conn)
                    if number == 1:
                        self.found_version = version
                    current = len(MIGRATIONS)
                    refusal = schema_refusal("the database", version, current, migrate=apply)
                    if refusal is not None:
                        raise StoreError(refusal)
                    if version >= number:
                        continue  # applied before, or by another replica meanwhile
                    await conn.execute(migration.postgres)
                    await conn.execute("UPDATE schema_version SET version = $1", number)

    @staticmethod
    async def _version(conn: _Connection) -> int:
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            return 0
        return int(version)

    async def schema_version(self) -> int:
        return int(await self._p.fetchval("SELECT version FROM schema_version"))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Tx]:
        async with self._p.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
            yield _PostgresTx(conn)

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return await self._p.fetchrow(_dollar(sql), *params)

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        return list(await self._p.fetch(_dollar(sql), *params))


class PostgresStore(StoreTables, PostgresEngine):
    """The only mutator of persistent state, in a PostgreSQL database shared by replicas."""
