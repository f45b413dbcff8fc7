"""The store on PostgreSQL, through asyncpg: for replicas on several hosts sharing one state.

The tables' SQL is the SQLite store's (``tables``), written with ``?`` placeholders; here they
become ``$1, $2 ...`` (asyncpg prepares and caches each statement on its connection), and
SQLite's ``BINARY`` collation, which lists order their names by, becomes ``"C"``: both order
by the bytes of the UTF-8, so a list comes in the same order whatever the database's
collation. Reads go to the pool; every write transaction first takes one transaction-scoped
advisory lock, so writes are serialized across every replica as SQLite serializes them within
a host: the rules that count before they change (the last Root, the grants of a tenant) read
a state no other writer is changing, under PostgreSQL's default isolation.

Migrations: the same list as SQLite's (``migrations``), each in its own transaction under a
second advisory lock, with the version in ``schema_version``; replicas starting at once wait
for each other, and the second finds the work done.

Across replicas: a transaction that changes identities also sends ``NOTIFY pangolin_identity``
(delivered at its commit), and every open store with change listeners listens on a
connection of its own and tells them at once. Notifications sent while that connection was
down are lost, so the identity-version poll (``store.change_poll_seconds``) stays the
guarantee, and the listeners are told again whenever the listening connection comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final

import asyncpg

from .base import MissingReference, StoreError, StoreUnavailable, UniqueViolation
from .core import StoreCore, Tx, schema_refusal
from .migrations import MIGRATIONS
from .tables import StoreTables

__all__ = ("PgConnection", "PostgresStore")

# pg_advisory_xact_lock keys (64-bit): "pangolin" in ASCII, and one more for migrations.
_WRITE_LOCK: Final = 0x70616E676F6C696E
_MIGRATE_LOCK: Final = _WRITE_LOCK + 1
_SETUP_LOCK: Final = _WRITE_LOCK + 2
_PLACEHOLDER: Final = re.compile(r"\?")
_BINARY: Final = re.compile(r"\bCOLLATE BINARY\b")
_CHANNEL: Final = "pangolin_identity"
_LOGGER = logging.getLogger(__name__)
# What a database that cannot be reached raises: answered as StoreUnavailable (503).
_DOWN: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, pg_terminate_backend
    asyncpg.TooManyConnectionsError,
    asyncpg.ReadOnlySQLTransactionError,  # a standby, during a failover
    asyncpg.LockNotAvailableError,  # the write lock not had within _HOLD_LIMIT
)
# How long a request waits for a new connection to the database (or for a pooled one) before
# it is 503, and for one statement: a database that is blackholed rather than down must not
# hold requests for a minute.
_CONNECT_TIMEOUT: Final = 5.0
_STATEMENT_TIMEOUT: Final = 10.0
# The longest a transaction may sit idle holding the write lock, or wait for it.
_HOLD_LIMIT: Final = 10.0
# Notifications arriving together become one invalidation (a burst of 200 changes is one
# cache wipe, not 200), at most this much later.
_COALESCE_SECONDS: Final = 0.05
# How often the listening connection proves it is alive: asyncpg notices a dead server only
# at the next statement (MagicStack/asyncpg#519).
_LISTEN_CHECK_SECONDS: Final = 5.0
# A pooled connection (what the pool lends) or a plain one: the same API.
PgConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@functools.lru_cache(maxsize=1024)
def _postgres_sql(sql: str) -> str:
    """The store's SQL as PostgreSQL spells it: ``?`` placeholders as ``$n`` (the store's SQL
    has no literal ``?``), ``COLLATE BINARY`` (SQLite's byte order) as ``COLLATE "C"``."""
    count = 0

    def number(_: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, _BINARY.sub('COLLATE "C"', sql))


def _translated(exc: asyncpg.PostgresError) -> StoreError:
    if isinstance(exc, asyncpg.UniqueViolationError):
        return UniqueViolation(str(exc))
    if isinstance(exc, asyncpg.ForeignKeyViolationError):
        return MissingReference(str(exc))
    return StoreError(str(exc))


class _PostgresTx:
    def __init__(self, conn: PgConnection) -> None:
        self._conn = conn
        self.identity_changed = False

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            status: str = await self._conn.execute(_postgres_sql(sql), *params)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise _translated(exc) from None
        except _DOWN:
            raise StoreUnavailable() from None
        # "UPDATE 2", "DELETE 0", "INSERT 0 1": the last word is the row count.
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        if not batch:
            return
        try:
            await self._conn.executemany(_postgres_sql(sql), batch)
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise _translated(exc) from None
        except _DOWN:
            raise StoreUnavailable() from None

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return await self._conn.fetchrow(_postgres_sql(sql), *params)
        except _DOWN:
            raise StoreUnavailable() from None

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return list(await self._conn.fetch(_postgres_sql(sql), *params))
        except _DOWN:
            raise StoreUnavailable() from None


class PostgresEngine(StoreCore):
    """A connection pool on one PostgreSQL database, its migrations and transactions."""

    def __init__(self, url: str, *, password: str = "", pool_size: int = 10) -> None:
        super().__init__()
        self.url = url
        # Given apart from the URL (a secret file), it wins over one in the URL. None leaves
        # asyncpg to the URL, PGPASSWORD and ~/.pgpass, as libpq would.
        self._password = password or None
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._listening: asyncio.Task[None] | None = None
        self._backoff = 0.5
        # Sent with this store's notifications, so its own come back ignored: its listeners
        # were told already, at the commit (core.StoreCore.transaction).
        self._origin = secrets.token_hex(8)
        self.listening = asyncio.Event()  # set while the listening connection is up
        # One writer per process waits for the write lock at a time: the others wait here,
        # without taking a pooled connection that reads (cache misses, polls) need.
        self._write_gate = asyncio.Lock()
        self._invalidation: asyncio.TimerHandle | None = None
        self._listened_before = False

    def __repr__(self) -> str:
        return "PostgresStore(<url redacted>)"  # the URL may carry a password

    async def open(self, *, migrate: bool = True) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url, password=self._password, min_size=1, max_size=self._pool_size,
                command_timeout=_STATEMENT_TIMEOUT, timeout=_CONNECT_TIMEOUT,
                server_settings={
                    # A writer that hangs (a frozen host, a partition) while holding the
                    # write lock is cut off by the server, not waited for by every replica.
                    "idle_in_transaction_session_timeout": f"{int(_HOLD_LIMIT * 1000)}",
                    "lock_timeout": f"{int(_HOLD_LIMIT * 1000)}",
                },
            )  # fmt: skip
        except (OSError, asyncpg.PostgresError) as exc:
            # The class and message only: asyncpg's text names host and user, never the
            # password; the URL itself is never printed.
            raise StoreError(f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}") from None
        except asyncpg.ClientConfigurationError as exc:
            # asyncpg's own words (a bad sslmode, a root certificate it cannot find, no user):
            # they quote no part of the URL before the host, where a password would be.
            raise StoreError(f"store.url cannot be used: {exc}") from None
        except (ValueError, OverflowError) as exc:
            # A malformed URL (a port that is no number): the text may quote parts of the
            # URL, so only the kind is said.
            raise StoreError(
                f"store.url is not a usable PostgreSQL URL ({type(exc).__name__})"
            ) from None
        try:
            await self._migrate(apply=migrate)
            await self._ensure_default_tenant()
        except asyncpg.PostgresError as exc:  # no CREATE privilege, say: one line, no traceback
            await self.close()
            raise StoreError(f"cannot prepare the database: {type(exc).__name__}: {exc}") from None
        except BaseException:
            await self.close()
            raise
        if self._change_listeners:
            self._start_listening()

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        super().add_change_listener(listener)
        if self._pool is not None:
            self._start_listening()

    def _start_listening(self) -> None:
        # Only a store somebody listens to (a serving gateway's caches) keeps a connection
        # listening: a CLI command opens the pool, does its work and goes, and would
        # otherwise hold one more connection and a reconnecting task for nothing.
        if self._listening is None:
            self._listening = asyncio.create_task(self._listen(), name="pangolin-store-listen")

    async def close(self) -> None:
        if self._listening is not None:
            task, self._listening = self._listening, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._invalidation is not None:
            self._invalidation.cancel()
            self._invalidation = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), _STATEMENT_TIMEOUT)
            except TimeoutError:
                pool.terminate()  # a blackholed database must not hold the shutdown

    def _notified(self, *_: object) -> None:
        for listener in self._change_listeners:
            listener()

    def _notification(self, _conn: PgConnection, _pid: int, _channel: str, origin: object) -> None:
        if origin == self._origin or self._invalidation is not None:
            return  # its own (told at the commit), or one already on its way
        loop = asyncio.get_running_loop()
        self._invalidation = loop.call_later(_COALESCE_SECONDS, self._coalesced)

    def _coalesced(self) -> None:
        self._invalidation = None
        self._notified()

    async def _listen(self) -> None:
        """Keep a connection listening for other replicas' identity changes, reconnecting
        with backoff (from half a second, doubling to 30 s, back to the start once one
        connects)."""
        self._backoff = 0.5
        self._listened_before = False
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the poll still bounds staleness meanwhile
                _LOGGER.warning("store change listener lost (%s); reconnecting", type(exc).__name__)
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, 30.0)

    async def _listen_once(self) -> None:
        """One listening connection, until it dies. On connecting the listeners are told:
        whatever was sent while nobody listened is lost."""
        conn = await asyncpg.connect(self.url, password=self._password, timeout=_CONNECT_TIMEOUT)
        closed = asyncio.Event()
        conn.add_termination_listener(lambda _: closed.set())
        try:
            await conn.add_listener(_CHANNEL, self._notification)
            if self._listened_before:
                self._notified()  # what was sent while nobody listened is lost
            self._listened_before = True
            self.listening.set()
            self._backoff = 0.5
            while not closed.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closed.wait(), _LISTEN_CHECK_SECONDS)
                if not closed.is_set():
                    await conn.execute("SELECT 1", timeout=_LISTEN_CHECK_SECONDS)
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await conn.close(timeout=1)

    @property
    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def _migrate(self, *, apply: bool) -> None:
        async with self._p.acquire() as conn:
            for number, migration in enumerate(MIGRATIONS, start=1):
                async with conn.transaction():
                    # Everything under the lock, the version table's creation too: two
                    # replicas creating it at once would collide in the catalog.
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATE_LOCK)
                    version = await self._version(conn, create=apply)
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
    async def _version(conn: PgConnection, *, create: bool) -> int:
        """The schema version (0 for an empty database); with ``create``, the version table
        is made if missing (without, nothing is written)."""
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            if not create:
                return 0
            await conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        version = await conn.fetchval("SELECT version FROM schema_version")
        if version is None:
            if not create:
                return 0
            await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            return 0
        return int(version)

    async def schema_version(self) -> int:
        return int(await self._p.fetchval("SELECT version FROM schema_version"))

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Tx]:
        try:
            async with (
                self._write_gate,
                self._p.acquire(timeout=_CONNECT_TIMEOUT) as conn,
                conn.transaction(),
            ):
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
                tx = _PostgresTx(conn)
                yield tx
                if tx.identity_changed:  # delivered to every listener when this commits
                    await conn.execute("SELECT pg_notify($1, $2)", _CHANNEL, self._origin)
        except _DOWN:
            # Lost before COMMIT: rolled back. Lost during COMMIT: unknown until the database
            # answers again; either way the caller is told 503, never that it happened.
            raise StoreUnavailable() from None

    @asynccontextmanager
    async def raw_transaction(self) -> AsyncIterator[PgConnection]:
        """A write transaction on a plain asyncpg connection, for bulk work (``copy``): under
        the write lock like every write, and announced to the replicas as an identity change
        when it commits."""
        async with self._p.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _WRITE_LOCK)
            yield conn
            await conn.execute("SELECT pg_notify($1, $2)", _CHANNEL, self._origin)

    @asynccontextmanager
    async def setup_lock(self) -> AsyncIterator[None]:
        # A session lock on a connection of its own, held across the set-up's transactions
        # (which take other connections); ending the connection, a crash included, frees it.
        async with self._p.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _SETUP_LOCK)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _SETUP_LOCK)

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any:
        try:
            return await self._p.fetchrow(_postgres_sql(sql), *params)
        except _DOWN:
            raise StoreUnavailable() from None

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        try:
            return list(await self._p.fetch(_postgres_sql(sql), *params))
        except _DOWN:
            raise StoreUnavailable() from None


class PostgresStore(StoreTables, PostgresEngine):
    """The only mutator of persistent state, in a PostgreSQL database shared by replicas."""
