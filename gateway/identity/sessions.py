"""Sessions of human administrators: started by a login, kept in the store, ended by logout,
by a new password, a deactivation or a deletion, and by two timeouts.

A session token is ``pgs_`` and 256 bits from :mod:`secrets`, opaque (no claims, no
signature): it means nothing but "the session row whose key is my digest". Only the SHA-256
digest is stored. As with API keys, a plain digest is enough for a secret of that entropy,
and looking the row up *by* digest is constant-time-safe by construction: what the lookup's
timing could reveal is about the digest, which tells an attacker nothing about any token.

Revocation is immediate everywhere: nothing about a session is cached, every use reads its row
(management routes are not the hot path), so a deleted row is refused by every process on the
very next request. Ending sessions with a change (password, deactivation, deletion) happens in
that change's own transaction (``store.update_user``, ``delete_user``), so no window exists in
which the change is committed and a session survives it.

Timeouts: ``tokens.session_lifetime_seconds`` bounds a session absolutely from its login;
``tokens.session_idle_seconds`` ends one that has not been used for that long. To avoid a
store write per request, ``last_seen_at`` is refreshed at most once per ``TOUCH_SECONDS``, so
the idle timeout is honoured to within that step (a session may end up to a minute early,
never late).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from typing import Final

from ..store import AuditRecord, ClientInfo, Store
from .models import Session, User

__all__ = ("SESSION_PREFIX", "TOUCH_SECONDS", "SessionAdmin", "digest_token")

SESSION_PREFIX: Final = "pgs_"
_TOKEN_BYTES: Final = 32  # 256 bits
_TOKEN_RE: Final = re.compile(r"pgs_[A-Za-z0-9_-]{43}")
TOUCH_SECONDS: Final = 60.0

Clock = Callable[[], float]


def digest_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


class SessionAdmin:
    def __init__(
        self,
        store: Store,
        *,
        lifetime_seconds: float,
        idle_seconds: float,
        clock: Clock = time.time,
    ) -> None:
        self._store = store
        self._lifetime = lifetime_seconds
        self._idle = idle_seconds
        self._clock = clock

    def _record(
        self, action: str, user_id: str, tenant_id: str, client: ClientInfo | None, actor: str
    ) -> AuditRecord:
        return AuditRecord.success(
            at=self._clock(), actor=actor, action=action, target_type="user",
            target_id=user_id, tenant_id=tenant_id, client=client,
        )  # fmt: skip

    async def start(self, user: User, client: ClientInfo) -> tuple[str, Session] | None:
        """A new session for ``user`` (whose password was just checked): the token, which
        exists only in the answer to this call, and the stored session. Audited as the
        ``login``, in the same transaction, with the user's last_login_at. None if the user
        was deleted, deactivated or given a new password while the login was being checked:
        then that login fails."""
        token = SESSION_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
        now = self._clock()
        session = Session(
            digest=digest_token(token), user_id=user.id, created_at=now, last_seen_at=now,
            expires_at=now + self._lifetime, client_addr=client.addr,
            # Already cut and made printable by whoever built ``client`` (audit.events).
            user_agent=client.user_agent,
        )  # fmt: skip
        record = self._record("login", user.id, user.tenant_id, client, actor=user.id)
        if not await self._store.insert_session(
            session, record, stale_before=now - self._idle, password_hash=user.password_hash
        ):
            return None
        return token, session

    async def resolve(self, token: str) -> tuple[Session, User] | None:
        """The live session this token names and its user, or None (see ``check``)."""
        found = await self.check(token)
        return None if isinstance(found, str) else found

    async def check(self, token: str) -> tuple[Session, User] | str:
        """The live session this token names and its user, or why it is refused: ``malformed``,
        ``unknown_session`` (never issued, logged out, or ended by a password change or the
        user's deletion), ``expired`` (absolute lifetime), ``idle`` or ``inactive``. A
        refusal changes nothing in the store."""
        if _TOKEN_RE.fullmatch(token) is None:
            return "malformed"  # no store read for what we never issue
        found = await self._store.session(digest_token(token))
        if found is None:
            return "unknown_session"
        session, user = found
        now = self._clock()
        if now >= session.expires_at:
            return "expired"
        if now - session.last_seen_at >= self._idle:
            return "idle"
        if not user.active:
            return "inactive"
        if now - session.last_seen_at >= TOUCH_SECONDS:
            await self._store.touch_session(session.digest, now)
        return session, user

    async def end(self, token: str, *, client: ClientInfo | None = None) -> bool:
        """Log out: end the session this token names, audited as ``logout``. False if there
        was none (already ended, or never issued): nothing is recorded then."""
        digest = digest_token(token) if _TOKEN_RE.fullmatch(token) else None
        found = await self._store.session(digest) if digest is not None else None
        if found is None:
            return False
        session, user = found
        record = self._record("logout", user.id, user.tenant_id, client, actor=user.id)
        return await self._store.delete_session(session.digest, record)
