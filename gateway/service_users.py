"""The service-level API for service-user lifecycles: create, rotate, deactivate, reactivate,
expire and delete.

Used by ``init``, ``make run``, the tests and the management API. Every change is one store
transaction with its audit record. Listeners (the authenticator's caches) are told after the
commit, so a change made in this process takes effect on the very next request; other
processes see it through the store's identity version.
"""

from __future__ import annotations

import math
import time
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from .identity import ApiKey, Role, ServiceUser, digest_key, generate_key
from .store import AuditRecord, Store

__all__ = (
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "CreatedKey",
    "NotFound",
    "ServiceUserAdmin",
    "ValidationError",
)

MAX_NAME: Final = 128
MAX_DESCRIPTION: Final = 1024

Clock = Callable[[], float]


class ValidationError(ValueError):
    """Bad input for a lifecycle call; ``field`` names what was wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class NotFound(LookupError):
    """No such service user (or tenant)."""


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A service user together with its plaintext key, which exists only in this object."""

    user: ServiceUser
    api_key: ApiKey

    def __repr__(self) -> str:
        return f"CreatedKey(user={self.user.id!r}, api_key=<redacted>)"


def _check_text(field: str, value: str, limit: int, *, required: bool) -> str:
    if required and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters")
    # Category Cc: C0, DEL and also the C1 controls (U+0080-U+009F), which terminals act on
    # (U+009B is CSI) just like ESC sequences when a name is printed or logged.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValidationError(field, "must not contain control characters")
    return value.strip() if required else value


class ServiceUserAdmin:
    def __init__(self, store: Store, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock
        self._listeners: list[Callable[[str], None]] = []

    def add_listener(self, listener: Callable[[str], None]) -> None:
        """Call ``listener(service_user_id)`` after every committed change."""
        self._listeners.append(listener)

    def _changed(self, id_: str) -> None:
        for listener in self._listeners:
            listener(id_)

    def _record(
        self, actor: str, action: str, user: ServiceUser, detail: str | None = None
    ) -> AuditRecord:
        return AuditRecord(
            at=self._clock(), actor=actor, action=action, target_type="service_user",
            target_id=user.id, tenant_id=user.tenant_id, outcome="success", detail=detail,
        )  # fmt: skip

    async def create(
        self,
        *,
        name: str,
        role: Role | str = Role.TENANT_USER,
        tenant: str = "default",
        description: str = "",
        expires_at: float | None = None,
        actor: str,
    ) -> CreatedKey:
        name = _check_text("name", name, MAX_NAME, required=True)
        description = _check_text("description", description, MAX_DESCRIPTION, required=False)
        try:
            role = Role(role)
        except ValueError:
            raise ValidationError("role", "must be Root, TenantAdmin or TenantUser") from None
        now = self._clock()
        # NaN compares false with everything and SQLite stores it as NULL: "never expires".
        if expires_at is not None and (math.isnan(expires_at) or expires_at <= now):
            raise ValidationError("expires_at", "must be in the future")
        found = await self._store.tenant_by_name(tenant)
        if found is None:
            raise NotFound(f"tenant {tenant!r}")
        key = generate_key()
        user = ServiceUser(
            id=str(uuid.uuid4()), tenant_id=found.id, tenant_name=found.name, name=name,
            description=description, role=role, key_id=key.key_id, key_digest=digest_key(key),
            created_at=now, created_by=actor, expires_at=expires_at, active=True,
            last_used_at=None, key_rotated_at=None, key_generation=1,
        )  # fmt: skip
        await self._store.insert_service_user(
            user, self._record(actor, "service_user.create", user)
        )
        self._changed(user.id)
        return CreatedKey(user, key)

    async def get(self, id_: str) -> ServiceUser:
        user = await self._store.service_user(id_)
        if user is None:
            raise NotFound(f"service user {id_!r}")
        return user

    async def _update(
        self, id_: str, changes: dict[str, Any], actor: str, action: str
    ) -> ServiceUser:
        user = await self.get(id_)
        if not await self._store.update_service_user(
            id_, changes, self._record(actor, action, user)
        ):
            raise NotFound(f"service user {id_!r}")  # deleted between the read and the write
        self._changed(id_)
        return await self.get(id_)

    async def rotate(self, id_: str, *, actor: str) -> CreatedKey:
        """New key, shown once; the old key and every token minted from it die now."""
        user = await self.get(id_)
        key = generate_key()
        updated = await self._update(
            id_,
            {
                "key_id": key.key_id,
                "key_digest": digest_key(key),
                "key_rotated_at": self._clock(),
                "key_generation": user.key_generation + 1,
            },
            actor,
            "service_user.rotate",
        )
        return CreatedKey(updated, key)

    async def deactivate(self, id_: str, *, actor: str) -> ServiceUser:
        return await self._update(id_, {"active": 0}, actor, "service_user.deactivate")

    async def reactivate(self, id_: str, *, actor: str) -> ServiceUser:
        return await self._update(id_, {"active": 1}, actor, "service_user.activate")

    async def set_expiry(self, id_: str, expires_at: float | None, *, actor: str) -> ServiceUser:
        """Set (or clear, with None) when the identity stops working; a past time expires it now."""
        if expires_at is not None and math.isnan(expires_at):
            # SQLite would store NaN as NULL, silently turning "expire" into "never expires".
            raise ValidationError("expires_at", "must be a time")
        return await self._update(id_, {"expires_at": expires_at}, actor, "service_user.update")

    async def expire(self, id_: str, *, actor: str) -> ServiceUser:
        return await self.set_expiry(id_, self._clock(), actor=actor)

    async def delete(self, id_: str, *, actor: str) -> None:
        user = await self.get(id_)
        if not await self._store.delete_service_user(
            id_, self._record(actor, "service_user.delete", user)
        ):
            raise NotFound(f"service user {id_!r}")
        self._changed(id_)
