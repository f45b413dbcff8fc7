"""The sessions table: logins of human administrators, keyed by the SHA-256 digest of their
opaque token (never the token: a copy of the store file logs nobody in).

Sessions are not cached anywhere: each management request reads its row by digest (one
indexed fetch on the read connection), so deleting the row ends the session at once in every
process sharing the file. Starting and ending a session are changes with an audit record in
the same transaction, like every other store change; refreshing ``last_seen_at`` is
bookkeeping, like ``last_used_at``, and is not audited.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from ..identity.models import Session, User
from .base import AuditRecord
from .users_table import USER_COLUMNS, UserTables, user_from_row

__all__ = ("SessionTables",)

_SESSION_COLUMNS: Final = (
    "s.digest, s.user_id, s.created_at, s.last_seen_at, s.expires_at, s.client_addr, s.user_agent"
)
_JOINED: Final = (
    f"SELECT {_SESSION_COLUMNS}, {USER_COLUMNS} FROM sessions s"
    " JOIN users u ON u.id = s.user_id JOIN tenants t ON t.id = u.tenant_id"
)
_WIDTH: Final = 7  # columns of a session in a joined row


def _session(row: Iterable[Any]) -> Session:
    digest, user_id, created_at, last_seen_at, expires_at, client_addr, user_agent = row
    return Session(
        digest=bytes(digest), user_id=user_id, created_at=created_at, last_seen_at=last_seen_at,
        expires_at=expires_at, client_addr=client_addr, user_agent=user_agent,
    )  # fmt: skip


class SessionTables(UserTables):
    async def session(self, digest: bytes) -> tuple[Session, User] | None:
        """The session with this token digest and its user, or None."""
        row = await self._fetchone(f"{_JOINED} WHERE s.digest = ?", (digest,))
        if row is None:
            return None
        return _session(row[:_WIDTH]), user_from_row(row[_WIDTH:])

    async def insert_session(
        self, session: Session, audit: AuditRecord, *, stale_before: float, password_hash: str
    ) -> bool:
        """Store a new session and note the user's successful login (last_login_at, failed
        logins back to zero), with the login's audit record, in one transaction. Sessions
        past their absolute expiry or idle since before ``stale_before`` are removed on the
        way (logins are rare; no timer is needed for it). False, and nothing stored, unless
        the user still exists, is active and still has ``password_hash`` (the one the login
        checked): a password reset or a deactivation that commits while a login is being
        checked must not let that login's session outlive it."""
        try:
            await self._insert_session(session, audit, stale_before, password_hash)
        except _UserGone:
            return False
        return True

    async def _insert_session(
        self, session: Session, audit: AuditRecord, stale_before: float, password_hash: str
    ) -> None:
        async with self.transaction() as tx:
            await tx.execute(
                "DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at < ?",
                (session.created_at, stale_before),
            )
            # Writes are serialized in both engines: nothing changes the user between this
            # check and the insert.
            alive = await tx.fetchone(
                "SELECT 1 FROM users WHERE id = ? AND active = 1 AND password_hash = ?",
                (session.user_id, password_hash),
            )
            if not alive:  # deleted, deactivated or given a new password meanwhile
                raise _UserGone()
            await tx.execute(
                "INSERT INTO sessions (digest, user_id, created_at, last_seen_at, expires_at,"
                " client_addr, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (session.digest, session.user_id, session.created_at, session.last_seen_at,
                 session.expires_at, session.client_addr, session.user_agent),
            )  # fmt: skip
            await tx.execute(
                "UPDATE users SET last_login_at = ?, failed_logins = 0 WHERE id = ?",
                (session.created_at, session.user_id),
            )
            await self._audit(tx, audit)

    async def touch_session(self, digest: bytes, at: float) -> None:
        """Note activity (never moves last_seen_at backwards)."""
        async with self.transaction() as tx:
            await tx.execute(
                "UPDATE sessions SET last_seen_at = ? WHERE digest = ? AND last_seen_at < ?",
                (at, digest, at),
            )

    async def delete_session(self, digest: bytes, audit: AuditRecord) -> bool:
        """End one session (logout) with its audit record; False if it had already ended."""
        async with self.transaction() as tx:
            if await tx.execute("DELETE FROM sessions WHERE digest = ?", (digest,)) == 0:
                return False
            await self._audit(tx, audit)
        return True


class _UserGone(Exception):
    pass
