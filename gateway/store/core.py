"""What every store engine shares: the transaction seam (``Tx``) and the rules written once
in SQL both engines read.

The table modules speak only to ``Tx`` and to ``_fetchone``/``_fetchall``, with ``?``
placeholders and SQL that SQLite and PostgreSQL read alike; an engine (``sqlite``,
``postgres``) supplies the connections, the transactions, the placeholder spelling and the
translation of its constraint errors into the store's own (``UniqueViolation``,
``MissingReference``). Every mutation runs in one transaction together with its audit record
and the identity-version bump, so a crash at any moment leaves either all of it or none of it.
"""

from __future__ import annotations

import abc
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, Protocol, Self

from .base import AuditRecord, LastRoot

__all__ = ("DEFAULT_TENANT", "StoreCore", "Tx", "schema_refusal")

DEFAULT_TENANT: Final = "default"


def schema_refusal(where: str, version: int, current: int, *, migrate: bool) -> str | None:
    """Why a store of schema ``version`` may not be used by this gateway (of ``current``)."""
    if version > current:
        return (
            f"{where} has schema version {version}, newer than this gateway understands "
            f"({current}); upgrade the gateway"
        )
    if version < current and not migrate:
        return (
            f"{where} has schema version {version}, older than this gateway's ({current}); "
            "run `pangolin-gateway migrate --config FILE` first"
        )
    return None


class Tx(Protocol):
    """One open write transaction. Constraint failures arrive as ``UniqueViolation``,
    ``MissingReference`` or ``StoreError``, whatever the engine. ``identity_changed``: the
    transaction bumped the identity version (its listeners are told after the commit)."""

    identity_changed: bool

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...


class StoreCore(abc.ABC):
    """Transactions, change listeners and the shared rules; the tables' methods live in the
    classes built on it, the connections in an engine's subclass."""

    def __init__(self) -> None:
        self._change_listeners: list[Callable[[], None]] = []
        # The schema version the store had when this object opened it (before migrating).
        self.found_version = 0

    # -- what an engine supplies -------------------------------------------------------------

    @abc.abstractmethod
    async def open(self, *, migrate: bool = True) -> None:
        """Connect and migrate to the current schema (and make the default tenant). Without
        ``migrate``, a store of an older schema is refused (StoreError naming the command
        that migrates it) and nothing is written; a newer one is refused either way."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One write transaction: commits on success, rolls back on any exception."""

    @abc.abstractmethod
    def setup_lock(self) -> AbstractAsyncContextManager[None]:
        """Held by one process at a time of all those on this store (every replica's), for
        one-time set-up whose steps are transactions of their own (``init``)."""

    @abc.abstractmethod
    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> Any: ...

    @abc.abstractmethod
    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Any]: ...

    # -- shared --------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        return _Notifying(self)

    async def ping(self) -> None:
        await self._fetchone("SELECT 1")

    async def identity_version(self) -> int:
        row = await self._fetchone("SELECT value FROM meta WHERE key = 'identity_version'")
        return int(row[0])

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every committed identity change made through this store
        object, before the call that made it returns (so the very next request sees it)."""
        self._change_listeners.append(listener)

    async def _ensure_default_tenant(self) -> None:
        # Checked on every open rather than inside migration 1, so a store created by a run
        # that died between the two steps still gets its default tenant.
        if await self._fetchone("SELECT 1 FROM tenants WHERE name = ?", (DEFAULT_TENANT,)):
            return
        async with self.transaction() as tx:
            await tx.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (str(uuid.uuid4()), DEFAULT_TENANT, time.time()),
            )

    @staticmethod
    async def _audit(tx: Tx, *records: AuditRecord) -> None:
        """Insert audit records (one statement, batched: a full queue is one round trip)."""
        await tx.executemany(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, tenant_id,"
            " outcome, client_addr, user_agent, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(r.at, r.actor, r.action, r.target_type, r.target_id, r.tenant_id, r.outcome,
              r.client_addr, r.user_agent, r.detail) for r in records],
        )  # fmt: skip

    async def _bump_identity_version(self, tx: Tx) -> None:
        """Mark this transaction as an identity change: other processes see the new version,
        and this process's listeners are told once it commits."""
        await tx.execute(
            "UPDATE meta SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
            " WHERE key = 'identity_version'"
        )
        tx.identity_changed = True

    async def _change(self, sql: str, params: Sequence[Any], audit: AuditRecord) -> bool:
        """One identity statement with its audit record; False (nothing recorded) if it
        changed no row."""
        async with self.transaction() as tx:
            if await tx.execute(sql, params) == 0:
                return False
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)
        return True

    async def _change_identity(
        self,
        sql: str,
        params: Sequence[Any],
        *,
        table: str,
        id_: str,
        audit: AuditRecord,
        also: Iterable[tuple[str, tuple[Any, ...]]] = (),
    ) -> bool:
        """Run one UPDATE or DELETE of identity ``id_`` (and the statements ``also`` names,
        if it matched a row) with its audit record in one transaction; False if there is no
        such row. Refused (LastRoot) if it would retire the last usable Root."""
        async with self.transaction() as tx:
            was_root = await self._is_root(tx, table, id_)
            permanent_before = await self._permanent_roots(tx) if was_root else 0
            if await tx.execute(sql, params) == 0:
                return False
            for statement, values in also:
                await tx.execute(statement, values)
            if was_root:
                await self._refuse_if_rootless(tx, audit.at, permanent_before)
            await self._audit(tx, audit)
            await self._bump_identity_version(tx)
        return True

    @staticmethod
    def _where(filters: Iterable[tuple[str, Any]]) -> tuple[str, list[Any]]:
        """`` WHERE a AND b`` from (clause, value) pairs whose value is not None."""
        chosen = [(clause, value) for clause, value in filters if value is not None]
        if not chosen:
            return "", []
        return " WHERE " + " AND ".join(c for c, _ in chosen), [v for _, v in chosen]

    @staticmethod
    async def _is_root(tx: Tx, table: str, id_: str) -> bool:
        row = await tx.fetchone(f"SELECT role = 'Root' FROM {table} WHERE id = ?", (id_,))
        return bool(row and row[0])

    @staticmethod
    async def _permanent_roots(tx: Tx) -> int:
        """Active Root identities that never expire (human users have no expiry)."""
        row = await tx.fetchone(
            "SELECT (SELECT count(*) FROM service_users WHERE role = 'Root' AND active = 1"
            " AND expires_at IS NULL)"
            " + (SELECT count(*) FROM users WHERE role = 'Root' AND active = 1)"
        )
        return int(row[0]) if row else 0

    @classmethod
    async def _refuse_if_rootless(cls, tx: Tx, now: float, permanent_before: int) -> None:
        """Raise LastRoot (rolling the change back) if the change leaves no usable Root now,
        or takes away the last Root that never expires: with none, nobody could ever manage
        tenants or grant Root again (an expiry retires a Root as surely as a deactivation,
        only later)."""
        row = await tx.fetchone(
            "SELECT (SELECT count(*) FROM service_users WHERE role = 'Root' AND active = 1"
            " AND (expires_at IS NULL OR expires_at > ?))"
            " + (SELECT count(*) FROM users WHERE role = 'Root' AND active = 1)",
            (now,),
        )
        if not row or not row[0]:
            raise LastRoot()
        if permanent_before and not await cls._permanent_roots(tx):
            raise LastRoot()


class _Notifying:
    """The engine's transaction, telling this process's change listeners after an identity
    change commits (and not when it rolls back)."""

    def __init__(self, core: StoreCore) -> None:
        self._core = core
        self._inner: AbstractAsyncContextManager[Tx] | None = None
        self._tx: Tx | None = None

    async def __aenter__(self) -> Tx:
        self._inner = self._core._transaction()
        self._tx = await self._inner.__aenter__()
        return self._tx

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._inner is not None and self._tx is not None
        suppressed = await self._inner.__aexit__(*exc_info)
        if exc_info[0] is None and self._tx.identity_changed:
            for listener in self._core._change_listeners:
                listener()
        return suppressed
