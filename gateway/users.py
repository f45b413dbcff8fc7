"""Human administrators: create, list, delete, change password, and log in.

Passwords are hashed with argon2 (``passwords``). A login returns a session token, the same
kind of JWT the token endpoint issues, for a principal of type ``user``; its generation is the
user's session generation, which a password change or deletion bumps, so every session of
that user dies at once (the same mechanism as key rotation for service users).

Failed logins are counted (per user in the store, per client address and username in memory)
and slowed down: after a failure, each further attempt within the window waits twice as long
before its password is even checked, up to a few seconds, which turns online password
guessing into a very slow business.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Final

from .audit import AuditQueue, ClientInfo
from .identity import Role, User
from .passwords import MAX_PASSWORD, MIN_PASSWORD, hash_password, verify_password
from .service_users import NotFound, ValidationError
from .store import AuditRecord, Store

__all__ = ("LoginThrottle", "UserAdmin")

_USERNAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")

Clock = Callable[[], float]


def _check_username(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        raise ValidationError(
            "username", "1 to 64 characters: letters, digits, '.', '_', '@' or '-'"
        )
    return username


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValidationError("password", f"must be at most {MAX_PASSWORD} characters")
    return password


class LoginThrottle:
    """Counts recent failed logins per key (client address, username) and says how long to
    make the next attempt wait. The wait comes before the password is checked, so guesses sent
    in parallel are slowed as much as guesses sent one after another."""

    WINDOW: Final = 900.0
    BASE_DELAY: Final = 0.25
    MAX_DELAY: Final = 4.0
    MAX_KEYS: Final = 100_000

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, tuple[int, float]] = {}

    def _count(self, key: str, now: float) -> int:
        count, last = self._failures.get(key, (0, now))
        return 0 if now - last >= self.WINDOW else count

    def delay(self, *keys: str) -> float:
        """How long an attempt for ``keys`` waits now: nothing before the first failure, then
        doubling with each recent failure, up to MAX_DELAY."""
        now = self._clock()
        worst = max((self._count(key, now) for key in keys), default=0)
        if worst == 0:
            return 0.0
        return float(min(self.BASE_DELAY * 2.0 ** (worst - 1), self.MAX_DELAY))

    def failed(self, *keys: str) -> None:
        now = self._clock()
        if len(self._failures) >= self.MAX_KEYS:
            self._failures = {k: v for k, v in self._failures.items() if now - v[1] < self.WINDOW}
            if len(self._failures) >= self.MAX_KEYS:
                self._failures.clear()
        for key in keys:
            self._failures[key] = (self._count(key, now) + 1, now)

    def succeeded(self, key: str) -> None:
        # Only the username's count: clearing the address's would let anyone holding one valid
        # account reset the throttle between guesses at others.
        self._failures.pop(key, None)


class UserAdmin:
    def __init__(self, store: Store, audit: AuditQueue, *, clock: Clock = time.time) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self.throttle = LoginThrottle()

    def _record(
        self,
        actor: str,
        action: str,
        user: User,
        client: ClientInfo | None,
        outcome: str = "success",
    ) -> AuditRecord:
        client = client or ClientInfo()
        return AuditRecord(
            at=self._clock(), actor=actor, action=action, target_type="user",
            target_id=user.id, tenant_id=user.tenant_id, outcome=outcome,
            client_addr=client.addr, user_agent=client.user_agent,
        )  # fmt: skip

    async def create(
        self,
        *,
        username: str,
        password: str,
        role: Role,
        tenant: str,
        actor: str,
        client: ClientInfo | None = None,
    ) -> User:
        _check_username(username)
        _check_password(password)
        found = await self._store.tenant_by_name(tenant)
        if found is None:
            raise NotFound(f"tenant {tenant!r}")
        now = self._clock()
        user = User(
            id=str(uuid.uuid4()), tenant_id=found.id, tenant_name=found.name, username=username,
            role=role, password_hash=await hash_password(password), created_at=now,
            created_by=actor, active=True, last_login_at=None, failed_logins=0,
            password_changed_at=now, session_generation=1,
        )  # fmt: skip
        await self._store.insert_user(user, self._record(actor, "user.create", user, client))
        return user

    async def get(self, id_: str) -> User:
        user = await self._store.user(id_)
        if user is None:
            raise NotFound(f"user {id_!r}")
        return user

    async def list(
        self, *, tenant_id: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        return await self._store.list_users(tenant_id=tenant_id, limit=limit, offset=offset)

    async def delete(self, id_: str, *, actor: str, client: ClientInfo | None = None) -> None:
        user = await self.get(id_)
        if not await self._store.delete_user(id_, self._record(actor, "user.delete", user, client)):
            raise NotFound(f"user {id_!r}")

    async def change_password(
        self, id_: str, password: str, *, actor: str, client: ClientInfo | None = None
    ) -> User:
        """New password; every existing session of the user ends."""
        _check_password(password)
        user = await self.get(id_)
        changes = {
            "password_hash": await hash_password(password),
            "password_changed_at": self._clock(),
            "session_generation": user.session_generation + 1,
        }
        record = self._record(actor, "user.change_password", user, client)
        if not await self._store.update_user(id_, changes, record):
            raise NotFound(f"user {id_!r}")
        return await self.get(id_)

    async def verify_current_password(self, user: User, password: str) -> bool:
        return await verify_password(password, user.password_hash)

    async def login(self, username: str, password: str, client: ClientInfo) -> User | None:
        """The user if the password is right and the user active; otherwise None, after the
        throttle's delay. Unknown usernames cost the same as wrong passwords."""
        keys = (f"user:{username.lower()}", f"addr:{client.addr}")
        await asyncio.sleep(self.throttle.delay(*keys))
        user = await self._store.user_by_username(username) if len(username) <= 64 else None
        ok = await verify_password(password, user.password_hash if user else None)
        now = self._clock()
        if ok and user is not None and user.active:
            self.throttle.succeeded(keys[0])
            await self._store.record_login(user.id, success=True, at=now)
            self._audit.record(self._record(user.id, "login", user, client))
            return user
        if user is not None:
            await self._store.record_login(user.id, success=False, at=now)
        self._audit.record(
            AuditRecord(
                at=now, actor=user.id if user else "anonymous", action="login",
                target_type="user", target_id=user.id if user else None,
                tenant_id=user.tenant_id if user else None, outcome="failure",
                client_addr=client.addr, user_agent=client.user_agent,
                detail=None if user else "unknown username",
            )
        )  # fmt: skip
        self.throttle.failed(*keys)
        return None
