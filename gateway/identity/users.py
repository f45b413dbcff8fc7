"""Human administrators: create, list, delete, change password, and log in.

Passwords are hashed with argon2 (``passwords``). A login starts a session (``sessions``): an
opaque token whose digest is a row in the store. A password change or a deletion removes every
session row of that user in its own transaction, so every session dies at once, in every
process.

Failed logins are counted (per user in the store; in memory, per username and address pair,
per address and per username, each with a budget of its own) and slowed down, so online
password guessing becomes very slow while nobody can slow or lock out someone else's correct
login (see ``LoginThrottle``).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ..digests import text_digest
from ..errors import AlreadyExists, InvalidInput, NoSuchThing
from ..store import AuditRecord, ClientInfo, Store, UniqueViolation
from .models import Role, User
from .passwords import MAX_PASSWORD, MIN_PASSWORD, hash_password, verify_password

if TYPE_CHECKING:  # the queue is handed in; identity does not depend on the audit package
    from ..audit.queue import AuditQueue

__all__ = ("USERNAME_PATTERN", "USERNAME_RULE", "LoginThrottle", "UserAdmin")

# Anchored, so that the same text serves as a JSON Schema pattern (which searches).
USERNAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
USERNAME_RULE: Final = "1 to 64 characters: letters, digits, '.', '_', '@' or '-'"
_USERNAME_RE: Final = re.compile(USERNAME_PATTERN)

Clock = Callable[[], float]


def _check_username(username: str) -> str:
    if not _USERNAME_RE.fullmatch(username):
        raise InvalidInput("username", USERNAME_RULE)
    return username


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidInput("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidInput("password", f"must be at most {MAX_PASSWORD} characters")
    return password


class LoginThrottle:
    """Counts recent failed logins and says how long attempts wait.

    Three budgets, so that one kind of guessing cannot be turned against someone else:

    - per username *and* address: after a failure, each further attempt of that pair waits
      twice as long before its password is even checked (so guesses sent in parallel are
      slowed as much as guesses sent one after another), up to ``MAX_DELAY``. Failing with a
      victim's username from elsewhere never slows the victim's own attempts;
    - per address, whatever the usernames: only past ``ADDRESS_FREE`` failures do that
      address's attempts wait (password spraying from one place). Four typos on other
      accounts do not slow a colleague's login from the same office address;
    - per username, whatever the addresses: past ``USERNAME_FREE`` failures, a *failed*
      attempt's answer is held back (guessing one account from many addresses), after the
      check, so a correct login is never slowed by it.

    The address is the client's (behind a trusted proxy, the one it forwarded). The counts
    are the store's (``failure_counts``), so every worker and replica shares them."""

    WINDOW: Final = 900.0
    BASE_DELAY: Final = 0.25
    MAX_DELAY: Final = 4.0
    ADDRESS_FREE: Final = 10
    USERNAME_FREE: Final = 5

    def __init__(self, store: Store, clock: Clock = time.time) -> None:
        # Counted in the store, on the wall clock: every process and replica adds to and
        # reads the same counts, so spreading guesses over replicas gains nothing.
        self._store = store
        self._clock = clock

    @staticmethod
    def _keys(username: str, address: str) -> tuple[bytes, bytes, bytes]:
        """(pair, address, username) keys, as SHA-256 digests: the store keeps no username
        or address of a failed login in clear."""
        name = username.lower()
        return tuple(  # type: ignore[return-value]  # three, as written
            text_digest(text)
            for text in (f"pair:{name}|{address}", f"addr:{address}", f"user:{name}")
        )

    def _delay(self, failures: int) -> float:
        """Nothing before the first failure, then doubling with each, up to MAX_DELAY."""
        if failures <= 0:
            return 0.0
        return float(min(self.BASE_DELAY * 2.0 ** (failures - 1), self.MAX_DELAY))

    async def delay(self, username: str, address: str) -> float:
        """How long an attempt waits before its password is checked."""
        pair, addr, _ = self._keys(username, address)
        counts = await self._store.failure_counts([pair, addr], self._clock() - self.WINDOW)
        return self._delay(max(counts[pair], counts[addr] - self.ADDRESS_FREE))

    async def failure_delay(self, username: str) -> float:
        """How long the answer to a failed attempt for ``username`` is held back."""
        user = self._keys(username, "")[2]
        counts = await self._store.failure_counts([user], self._clock() - self.WINDOW)
        return self._delay(counts[user] - self.USERNAME_FREE)

    async def failed(self, username: str, address: str) -> None:
        now = self._clock()
        counts = dict.fromkeys(self._keys(username, address), 1)
        await self._store.add_failures(counts, now, now - self.WINDOW)

    async def succeeded(self, username: str, address: str) -> None:
        # Not the address's count: clearing it would let anyone holding one valid account
        # reset the spraying budget between guesses at others.
        pair, _, user = self._keys(username, address)
        await self._store.clear_failures([pair, user])


class UserAdmin:
    def __init__(self, store: Store, audit: AuditQueue, *, clock: Clock = time.time) -> None:
        self._store = store
        self._audit = audit
        self._clock = clock
        self.throttle = LoginThrottle(store)

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
            raise NoSuchThing("tenant", field="tenant")
        now = self._clock()
        user = User(
            id=str(uuid.uuid4()), tenant_id=found.id, tenant_name=found.name, username=username,
            role=role, password_hash=await hash_password(password), created_at=now,
            created_by=actor, active=True, last_login_at=None, failed_logins=0,
            password_changed_at=now,
        )  # fmt: skip
        try:
            await self._store.insert_user(user, self._record(actor, "user.create", user, client))
        except UniqueViolation:
            raise AlreadyExists("username: already taken") from None
        return user

    async def get(self, id_: str) -> User:
        user = await self._store.user(id_)
        if user is None:
            raise NoSuchThing("user")
        return user

    async def list(
        self, *, tenant_id: str | None, limit: int, offset: int
    ) -> tuple[list[User], int]:
        return await self._store.list_users(tenant_id=tenant_id, limit=limit, offset=offset)

    async def delete(self, id_: str, *, actor: str, client: ClientInfo | None = None) -> None:
        user = await self.get(id_)
        if not await self._store.delete_user(id_, self._record(actor, "user.delete", user, client)):
            raise NoSuchThing("user")

    async def set_active(
        self, id_: str, active: bool, *, actor: str, client: ClientInfo | None = None
    ) -> User:
        """Deactivate (every session ends, in the same transaction) or activate again."""
        user = await self.get(id_)
        action = "user.activate" if active else "user.deactivate"
        if not await self._store.update_user(
            id_, {"active": active}, self._record(actor, action, user, client)
        ):
            raise NoSuchThing("user")
        return await self.get(id_)

    async def change_password(
        self, id_: str, password: str, *, actor: str, client: ClientInfo | None = None
    ) -> User:
        """New password; every existing session of the user ends (the store deletes them in
        the same transaction)."""
        _check_password(password)
        user = await self.get(id_)
        changes = {
            "password_hash": await hash_password(password),
            "password_changed_at": self._clock(),
        }
        record = self._record(actor, "user.change_password", user, client)
        if not await self._store.update_user(id_, changes, record):
            raise NoSuchThing("user")
        return await self.get(id_)

    async def verify_current_password(self, user: User, password: str) -> bool:
        return await verify_password(password, user.password_hash)

    async def login(self, username: str, password: str, client: ClientInfo) -> User | None:
        """The user if the password is right and the user active; otherwise None, after the
        throttle's delay. Unknown usernames cost the same as wrong passwords.

        A success changes nothing here: the caller starts a session (``SessionAdmin.start``),
        which notes the login and audits it in the session's own transaction. A failure is
        counted and audited through the queue, like every refusal on the request path."""
        address = client.addr or "-"
        await asyncio.sleep(await self.throttle.delay(username, address))
        # Longer, or with a NUL (which PostgreSQL cannot even compare), it names nobody.
        named = len(username) <= 64 and "\x00" not in username
        user = await self._store.user_by_username(username) if named else None
        ok = await verify_password(password, user.password_hash if user else None)
        now = self._clock()
        if ok and user is not None and user.active:
            await self.throttle.succeeded(username, address)
            return user
        if user is not None:
            await self._store.record_failed_login(user.id)
        self._audit.record(
            AuditRecord(
                at=now, actor=user.id if user else "anonymous", action="login",
                target_type="user", target_id=user.id if user else None,
                tenant_id=user.tenant_id if user else None, outcome="failure",
                client_addr=client.addr, user_agent=client.user_agent,
                detail=None if user else "unknown username",
            )
        )  # fmt: skip
        await self.throttle.failed(username, address)
        held = await self.throttle.failure_delay(username)
        if held:
            await asyncio.sleep(held)
        return None
