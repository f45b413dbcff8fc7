"""``pangolin-gateway copy-store``: an existing SQLite deployment into an empty PostgreSQL
database, every row and column as stored (ids, key digests, password hashes, sessions,
signing keys, audit ids), so keys, tokens and sessions keep working on the new store.

The source is read in one read transaction on a read-only connection of its own (one
consistent snapshot); stop the gateways that write the file first: a change made while the
copy runs is not in the copy, so a copy that sees the source's identity version move is
refused. The target is written
in one transaction under the store's write lock, so a failure anywhere leaves it as empty as
it was. Rows go in with ``COPY``, table by table in foreign-key order.

Refused, before anything is written: a source whose schema is not this gateway's (migrate it
first), a target that already holds anything beyond what a freshly migrated database has (its
default tenant and meta rows), and any table or column the two sides do not share, so a
future migration's column cannot be silently dropped.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import aiosqlite
import asyncpg

from .base import StoreError
from .core import DEFAULT_TENANT
from .migrations import MIGRATIONS
from .postgres import PgConnection, PostgresStore
from .sqlite import SqliteStore

__all__ = ("TABLES", "copy_file", "copy_store")

# Every table but meta, parents before the tables whose foreign keys name them.
TABLES: Final = (
    "tenants",
    "service_users",
    "users",
    "sessions",
    "usage_daily",
    "signing_keys",
    "access_roles",
    "role_members",
    "grants",
    "audit_log",
    "audit_batches",  # which audit batches are stored: a queue's retry must find its own
    "failure_counts",  # the login throttle's and auth backoff's: a copy keeps the brakes on
    "request_counts",  # replicas' shared rate limits: a minute's worth, harmless to carry
)
_META: Final = "meta"
# The target's own bookkeeping (SQLite keeps its version in PRAGMA user_version).
_TARGET_ONLY: Final = frozenset({"schema_version"})
_BATCH: Final = 5000
# A large audit log may take longer than the store's statement timeout (30 s) to COPY.
_COPY_TIMEOUT: Final = 3600.0
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"
_MAX_AUDIT_ID: Final = "SELECT coalesce(max(id), 0) FROM audit_log"


async def copy_store(source: SqliteStore, target: PostgresStore) -> dict[str, int]:
    """Copy every row of the open ``source`` into the open, empty ``target``; the number of
    rows copied per table (``meta`` included). StoreError, with the target unchanged, if it
    is refused or fails."""
    async with _snapshot(source.path) as reader:
        version = int((await _one(reader, "PRAGMA user_version"))[0])
        if version != len(MIGRATIONS):
            raise StoreError(
                f"the SQLite store has schema version {version}, not this gateway's "
                f"({len(MIGRATIONS)}); run `pangolin-gateway migrate --config FILE` on it "
                "(with this gateway) first"
            )
        source_columns = await _sqlite_columns(reader)
        # Under the store's write lock: no gateway, and no second copy, writes meanwhile; any
        # listening replica re-reads when it commits.
        async with target.raw_transaction() as conn:
            _same_columns(source_columns, await _postgres_columns(conn))
            await _refuse_unless_empty(conn)
            # A migrated database's default tenant, replaced by the source's tenants.
            await conn.execute("DELETE FROM tenants")
            counts = {
                table: await _copy_table(reader, conn, table, source_columns[table])
                for table in TABLES
            }
            counts[_META] = await _copy_meta(reader, conn)
            # Audit ids continue after the highest the source ever gave (SQLite's
            # AUTOINCREMENT never reuses one, even of a deleted record).
            seq = await _one(reader, "SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'")
            last = max(int(seq[0]) if seq else 0, await conn.fetchval(_MAX_AUDIT_ID))
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence('audit_log', 'id'), $1, false)", last + 1
            )
            await _refuse_if_changed(source, await _changes(reader))
    return counts


_CHANGES: Final = (
    "SELECT (SELECT value FROM meta WHERE key = 'identity_version'),"
    " (SELECT coalesce(max(id), 0) FROM audit_log)"
)


async def _changes(reader: aiosqlite.Connection) -> tuple[Any, ...]:
    return tuple(await _one(reader, _CHANGES))


async def _refuse_if_changed(source: SqliteStore, seen: tuple[Any, ...]) -> None:
    """Before the copy commits: refused (rolled back) if a gateway changed the source since
    the snapshot, since that change is not in the copy."""
    async with _snapshot(source.path) as now:
        if await _changes(now) != seen:
            raise StoreError(
                "the SQLite store changed while it was being copied (a gateway is still "
                "using it): nothing was copied; stop the gateways and copy again"
            )


async def copy_file(path: Path, url: str) -> dict[str, int]:
    """``copy_store`` from the SQLite file ``path`` (which must exist, at this gateway's
    schema: it is never migrated here) into the PostgreSQL database ``url`` (migrated when
    empty). Every failure is a StoreError whose message never holds the URL's password."""
    try:
        if not path.is_file():
            raise StoreError(f"no SQLite store at {path}")
        with path.open("rb") as file:
            if file.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                # Checked here: SQLite itself would say so only once the store had opened
                # a connection (whose thread a failed open leaves running).
                raise StoreError(f"{path}: not a usable SQLite store (not an SQLite file)")
        async with contextlib.AsyncExitStack() as stack:
            source = SqliteStore(path)
            try:
                await source.open(migrate=False)
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: not a usable SQLite store: {exc}") from None
            stack.push_async_callback(source.close)
            target = PostgresStore(url, pool_size=2)
            try:
                await target.open()
            except (ValueError, asyncpg.InterfaceError) as exc:  # a malformed URL
                raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None
            stack.push_async_callback(target.close)
            return await copy_store(source, target)
    except StoreError as exc:
        raise StoreError(_redacted(str(exc), url)) from None
    except (asyncpg.PostgresError, OSError) as exc:  # a migration the database refused, say
        raise StoreError(_redacted(f"{type(exc).__name__}: {exc}", url)) from None


@contextlib.asynccontextmanager
async def _snapshot(path: Path) -> AsyncIterator[aiosqlite.Connection]:
    uri = path.resolve().as_uri() + "?mode=ro"
    try:
        conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    try:
        await conn.execute("BEGIN")  # one snapshot for every table (WAL: from the first read)
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    finally:
        await conn.close()  # ends the read transaction


async def _one(reader: aiosqlite.Connection, sql: str) -> Any:
    async with reader.execute(sql) as cur:
        return await cur.fetchone()


async def _sqlite_columns(reader: aiosqlite.Connection) -> dict[str, list[str]]:
    async with reader.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ) as cur:
        tables = [name for (name,) in await cur.fetchall()]
    columns = {}
    for table in tables:
        async with reader.execute("SELECT name FROM pragma_table_info(?)", (table,)) as cur:
            columns[table] = [name for (name,) in await cur.fetchall()]
    return columns


async def _postgres_columns(conn: PgConnection) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t"
        " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"
        " ORDER BY c.table_name, c.ordinal_position"
    )
    columns: dict[str, list[str]] = {}
    for table, column in rows:
        if table not in _TARGET_ONLY:
            columns.setdefault(table, []).append(column)
    return columns


def _same_columns(source: dict[str, list[str]], target: dict[str, list[str]]) -> None:
    """Refuse unless both sides have exactly the tables this module copies, with the same
    columns: a table or column only one side has would be lost, or left empty."""
    known = {*TABLES, _META}
    problems = []
    for side, tables in (("the SQLite store", source), ("the PostgreSQL database", target)):
        if missing := sorted(known - set(tables)):
            problems.append(f"{side} lacks table(s) {', '.join(missing)}")
        if unknown := sorted(set(tables) - known):
            problems.append(f"{side} has table(s) copy-store does not know: {', '.join(unknown)}")
    for table in sorted(known & set(source) & set(target)):
        if only := sorted(set(source[table]) - set(target[table])):
            problems.append(f"{table}.{', '.join(only)} only in the SQLite store")
        if only := sorted(set(target[table]) - set(source[table])):
            problems.append(f"{table}.{', '.join(only)} only in the PostgreSQL database")
    if problems:
        raise StoreError("the two schemas differ, nothing was copied: " + "; ".join(problems))


async def _refuse_unless_empty(conn: PgConnection) -> None:
    """What a freshly migrated database holds: its default tenant and the meta rows."""
    held = []
    for table in TABLES:
        condition = " WHERE name <> $1" if table == "tenants" else ""
        params = (DEFAULT_TENANT,) if table == "tenants" else ()
        count = await conn.fetchval(f"SELECT count(*) FROM {table}{condition}", *params)
        if count:
            held.append(f"{count} {table} row(s)")
    if held:
        raise StoreError(
            f"the PostgreSQL database is not empty ({', '.join(held)}); copy-store only "
            "fills a new, empty database, and nothing was copied"
        )


async def _copy_table(
    reader: aiosqlite.Connection, conn: PgConnection, table: str, columns: Sequence[str]
) -> int:
    copied = 0

    async def rows() -> AsyncGenerator[tuple[Any, ...]]:
        nonlocal copied
        names = ", ".join(columns)
        async with reader.execute(f"SELECT {names} FROM {table}") as cur:
            while batch := await cur.fetchmany(_BATCH):
                for row in batch:
                    copied += 1
                    yield tuple(row)

    records = rows()
    try:
        await conn.copy_records_to_table(
            table, records=records, columns=list(columns), timeout=_COPY_TIMEOUT
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError, TypeError) as exc:
        # A value PostgreSQL's column cannot hold (SQLite stores any type in any column).
        raise StoreError(
            f"copying {table} failed, nothing was copied: {type(exc).__name__}: {exc}"
        ) from None
    finally:
        # A COPY that stopped early leaves the generator inside its cursor: close it now,
        # while the connection is open, not whenever the garbage collector gets to it.
        await records.aclose()
    return copied


async def _copy_meta(reader: aiosqlite.Connection, conn: PgConnection) -> int:
    async with reader.execute("SELECT key, value FROM meta") as cur:
        rows = [tuple(row) for row in await cur.fetchall()]
    before = await conn.fetchval("SELECT value FROM meta WHERE key = 'identity_version'")
    await conn.executemany(
        "INSERT INTO meta (key, value) VALUES ($1, $2)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        rows,
    )
    # Past both versions: a replica already polling this database must see a change even if
    # the source's counter happens to equal the one it last read.
    source = int(dict(rows).get("identity_version", 0))
    await conn.execute(
        "UPDATE meta SET value = $1 WHERE key = 'identity_version'",
        str(max(source, int(before or 0)) + 1),
    )
    return len(rows)


_USERINFO_PASSWORD: Final = re.compile(r"://[^/@:]*:([^/@]+)@")


def _redacted(text: str, url: str) -> str:
    """``text`` without the URL's password (as written or percent-decoded), even when the
    URL is too malformed for ``urlsplit``."""
    found = set(_USERINFO_PASSWORD.findall(url))
    with contextlib.suppress(ValueError):
        if password := urlsplit(url).password:
            found.add(password)
    for secret in sorted(found | {unquote(s) for s in found}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
