"""The service-level API for service-user lifecycles: create, rotate, deactivate, reactivate,
expire and delete.

Used by ``init``, ``make run``, the tests and the management API. Every change is one store
transaction with its audit record. The store tells its change listeners (the authenticator's
caches) after the commit, so a change made in this process takes effect on the very next
request; other processes see it through the store's identity version.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import time
import unicodedata
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ..errors import AlreadyExists, InvalidInput, NoSuchThing
from ..networks import network_problem, parse_networks
from ..store import (
    AuditRecord,
    ClientInfo,
    LastRoot,
    MissingReference,
    Store,
    UniqueViolation,
)
from .grant_admin import check_holder, check_room, new_grant
from .grants import Grant
from .models import ApiKey, Role, ServiceUser, digest_key, generate_key

__all__ = (
    "MAX_DESCRIPTION",
    "MAX_GRACE",
    "MAX_NETWORKS",
    "MAX_NAME",
    "CreatedKey",
    "ServiceUserAdmin",
    "check_networks",
    "check_rate",
)

MAX_NAME: Final = 128
MAX_DESCRIPTION: Final = 1024
# Longest overlap a rotation may give the old key: a week covers a release cycle, and an old
# key alive for longer is a second key, not a transition.
MAX_GRACE: Final = 7 * 86400
MAX_NETWORKS: Final = 100  # per allowlist

Clock = Callable[[], float]
# A grant a new service user starts with: (catalog, resource levels, action).
GrantRequest = tuple[str, Sequence[str], str]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A service user together with its plaintext key, which exists only in this object."""

    user: ServiceUser
    api_key: ApiKey

    def __repr__(self) -> str:
        return f"CreatedKey(user={self.user.id!r}, api_key=<redacted>)"


def check_networks(entries: Sequence[str]) -> tuple[str, ...]:
    """An allowlist as kept: each entry a canonical CIDR (``10.1.2.3/8`` is ``10.0.0.0/8``,
    an address its /32 or /128), in the order given, without repeats."""
    if isinstance(entries, str) or len(entries) > MAX_NETWORKS:
        raise InvalidInput("allowed_networks", f"must be a list of at most {MAX_NETWORKS} CIDRs")
    for entry in entries:
        if not isinstance(entry, str) or (problem := network_problem(entry)):
            raise InvalidInput("allowed_networks", problem or "must be a list of CIDRs")
    return tuple(dict.fromkeys(str(network) for network in parse_networks(entries)))


def check_rate(rate: float | None, burst: int | None) -> tuple[float | None, int | None]:
    """A service user's own rate limit (requests per second, 0: none; None: the default)
    and burst (at least 1; None: the default)."""
    if rate is not None and not (
        isinstance(rate, int | float) and not isinstance(rate, bool) and 0 <= rate <= 1e6
    ):
        raise InvalidInput("rate_limit", "must be between 0 (no limit) and 1000000 per second")
    if burst is not None and not (
        isinstance(burst, int) and not isinstance(burst, bool) and 1 <= burst <= 10_000_000
    ):
        raise InvalidInput("rate_burst", "must be a whole number between 1 and 10000000")
    return (None if rate is None else float(rate)), burst


def _check_text(field: str, value: str, limit: int, *, required: bool) -> str:
    if required and not value.strip():
        raise InvalidInput(field, "must not be empty")
    if len(value) > limit:
        raise InvalidInput(field, f"must be at most {limit} characters")
    # Category Cc: C0, DEL and also the C1 controls (U+0080-U+009F), which terminals act on
    # (U+009B is CSI) just like ESC sequences when a name is printed or logged.
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise InvalidInput(field, "must not contain control characters")
    return value.strip() if required else value


def _check_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput("role", "must be Root, TenantAdmin or TenantUser") from None


def _check_expiry(expires_at: float | None) -> float | None:
    # NaN compares false with everything and SQLite stores it as NULL: "never expires".
    if expires_at is not None and (
        not isinstance(expires_at, int | float) or math.isnan(expires_at)
    ):
        raise InvalidInput("expires_at", "must be a time")
    return expires_at


class ServiceUserAdmin:
    def __init__(self, store: Store, *, clock: Clock = time.time) -> None:
        self._store = store
        self._clock = clock

    def _record(
        self,
        actor: str,
        action: str,
        user: ServiceUser,
        client: ClientInfo | None,
        detail: str | None = None,
    ) -> AuditRecord:
        return AuditRecord.success(
            at=self._clock(), actor=actor, action=action, target_type="service_user",
            target_id=user.id, tenant_id=user.tenant_id, client=client, detail=detail,
        )  # fmt: skip

    async def create(
        self,
        *,
        name: str,
        role: Role | str = Role.TENANT_USER,
        tenant: str = "default",
        description: str = "",
        expires_at: float | None = None,
        grants: Sequence[GrantRequest] = (),
        roles: Sequence[str] = (),
        allowed_networks: Sequence[str] = (),
        rate_limit: float | None = None,
        rate_burst: int | None = None,
        actor: str,
        client: ClientInfo | None = None,
    ) -> CreatedKey:
        """A new service user with its key and, in the same transaction, its first ``grants``
        ((catalog, resource, action), checked by ``access``) and the ``roles`` (names) of its
        tenant it holds; ``allowed_networks``: where its key and tokens work from (CIDRs;
        empty: anywhere)."""
        name = _check_text("name", name, MAX_NAME, required=True)
        description = _check_text("description", description, MAX_DESCRIPTION, required=False)
        role = _check_role(role)
        networks = check_networks(allowed_networks)
        rate_limit, rate_burst = check_rate(rate_limit, rate_burst)
        now = self._clock()
        _check_expiry(expires_at)
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at", "must be in the future")
        found = await self._store.tenant_by_name(tenant)
        if found is None:
            raise NoSuchThing("tenant", field="tenant")
        key = generate_key()
        user = ServiceUser(
            id=str(uuid.uuid4()), tenant_id=found.id, tenant_name=found.name, name=name,
            description=description, role=role, key_id=key.key_id, key_digest=digest_key(key),
            created_at=now, created_by=actor, expires_at=expires_at, active=True,
            last_used_at=None, key_rotated_at=None, key_generation=1,
            allowed_networks=networks, rate_limit=rate_limit, rate_burst=rate_burst,
        )  # fmt: skip
        rights, role_ids, detail = await self._first_rights(user, grants, roles, actor)
        record = self._record(actor, "service_user.create", user, client, detail)
        try:
            await self._store.insert_service_user(user, record, grants=rights, role_ids=role_ids)
        except UniqueViolation:
            raise AlreadyExists(
                "name: a service user with this name already exists in the tenant"
            ) from None
        except MissingReference:
            raise NoSuchThing("tenant or role") from None  # deleted meanwhile
        return CreatedKey(user, key)

    async def _first_rights(
        self,
        user: ServiceUser,
        grants: Sequence[GrantRequest],
        roles: Sequence[str],
        actor: str,
    ) -> tuple[list[Grant], list[str], str | None]:
        """The grants and role ids a new service user starts with, and the audit detail."""
        if grants or roles:
            check_holder(user.role)
        rights: dict[tuple[str, tuple[str, ...], str], Grant] = {}
        for catalog, resource, action in grants:
            grant = new_grant(
                user, catalog=catalog, resource=resource, action=action, actor=actor,
                at=user.created_at,
            )  # fmt: skip
            rights.setdefault((grant.catalog, grant.resource, grant.action), grant)
        await check_room(self._store, user.tenant_id, len(rights))
        role_ids: list[str] = []
        for role_name in dict.fromkeys(roles):
            found = await self._store.access_role_by_name(user.tenant_id, role_name)
            if found is None:
                raise NoSuchThing("role", field="roles")
            role_ids.append(found.id)
        given = [grant.describe() for grant in rights.values()]
        parts = ([f"grants: {', '.join(given)}"] if given else []) + (
            [f"roles: {', '.join(dict.fromkeys(roles))}"] if roles else []
        )
        return list(rights.values()), role_ids, "; ".join(parts) or None

    async def get(self, id_: str) -> ServiceUser:
        user = await self._store.service_user(id_)
        if user is None:
            raise NoSuchThing("service user")
        return user

    async def usage(self, id_: str, *, since: str) -> dict[str, int]:
        """Stored request counts by UTC day (``YYYY-MM-DD``) from ``since`` on; days without
        requests are absent, and counts still in some process's memory are not included."""
        return await self._store.usage_of(id_, since)

    async def list(
        self,
        *,
        tenant_id: str | None = None,
        tenant_name: str | None = None,
        active: bool | None = None,
        role: Role | None = None,
        unused_for: float | None = None,
        expiring_within: float | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[ServiceUser], int]:
        """One page. ``unused_for`` (seconds): stale ones, not used for that long (never
        used counts from when they were made); ``expiring_within``: those whose expiry falls
        between now and then."""
        now = self._clock()
        return await self._store.list_service_users(
            tenant_id=tenant_id, tenant_name=tenant_name, active=active, role=role,
            unused_before=None if unused_for is None else now - unused_for,
            expires_from=None if expiring_within is None else now,
            expires_before=None if expiring_within is None else now + expiring_within,
            limit=limit, offset=offset,
        )  # fmt: skip

    async def prune(
        self,
        unused_for: float,
        *,
        tenant_id: str | None = None,
        tenant_name: str | None = None,
        highest: Role = Role.ROOT,
        dry_run: bool = False,
        actor: str,
        client: ClientInfo | None = None,
    ) -> tuple[builtins.list[ServiceUser], builtins.list[ServiceUser]]:
        """Deactivate the active service users not used for ``unused_for`` seconds, each in
        its own transaction with its audit record: (deactivated, kept). Kept: the last active
        Root, which the store never lets go. Service users above ``highest`` (the caller's
        role) are left out. ``dry_run``: say what would go, change nothing."""
        if not (isinstance(unused_for, int | float) and unused_for >= 86400):
            raise InvalidInput("unused_for", "must be at least one day (in seconds)")
        stale: builtins.list[ServiceUser] = []
        seen = 0
        while True:  # every page: a prune is not bounded by one
            page, total = await self.list(
                tenant_id=tenant_id, tenant_name=tenant_name, active=True,
                unused_for=unused_for, limit=1000, offset=seen,
            )  # fmt: skip
            seen += len(page)
            stale += [user for user in page if user.role.rank <= highest.rank]
            if not page or seen >= total:
                break
        if dry_run:
            return stale, []
        gone: builtins.list[ServiceUser] = []
        kept: builtins.list[ServiceUser] = []
        days = f"{unused_for / 86400:g}"
        for user in stale:
            record = self._record(
                actor, "service_user.deactivate", user, client, f"pruned: unused for {days} days"
            )
            try:
                changed = await self._store.update_service_user(user.id, {"active": 0}, record)
            except LastRoot:
                kept.append(user)
                continue
            if changed:  # not deleted meanwhile
                gone.append(dataclasses.replace(user, active=False))
        return gone, kept

    async def _write(
        self,
        id_: str,
        columns: dict[str, Any],
        *,
        actor: str,
        action: str,
        client: ClientInfo | None,
        detail: str | None = None,
    ) -> ServiceUser:
        user = await self.get(id_)
        record = self._record(actor, action, user, client, detail)
        if not await self._store.update_service_user(id_, columns, record):
            raise NoSuchThing("service user")  # deleted between the read and the write
        return await self.get(id_)

    async def update(
        self,
        id_: str,
        changes: Mapping[str, Any],
        *,
        actor: str,
        client: ClientInfo | None = None,
    ) -> ServiceUser:
        """Change any of description, role, expires_at (None: never), active and
        allowed_networks (empty: anywhere), in one transaction with one audit record."""
        columns: dict[str, Any] = {}
        for field, value in changes.items():
            if field == "description":
                columns[field] = _check_text(field, value, MAX_DESCRIPTION, required=False)
            elif field == "role":
                columns[field] = _check_role(value).value
            elif field == "expires_at":
                columns[field] = _check_expiry(value)
            elif field == "active":
                columns[field] = int(bool(value))
            elif field == "allowed_networks":
                columns[field] = check_networks(value)
            elif field == "rate_limit":
                columns[field] = check_rate(value, None)[0]
            elif field == "rate_burst":
                columns[field] = check_rate(None, value)[1]
            else:
                raise InvalidInput(field, "cannot be changed")
        if not columns:
            raise InvalidInput("changes", "nothing to change")
        if set(columns) == {"active"}:
            action = "service_user.activate" if columns["active"] else "service_user.deactivate"
        else:
            action = "service_user.update"
        detail = "changed: " + ", ".join(sorted(columns))
        if columns.get("role", Role.TENANT_USER.value) != Role.TENANT_USER.value:
            detail += "; its grants and roles went with its TenantUser role"
        return await self._write(
            id_, columns, actor=actor, action=action, client=client, detail=detail
        )

    async def rotate(
        self,
        id_: str,
        *,
        actor: str,
        client: ClientInfo | None = None,
        grace_seconds: float = 0.0,
    ) -> CreatedKey:
        """New key, shown once. The old key and every token minted from it die now or, with
        ``grace_seconds``, at the end of that overlap (for clients still to be given the new
        key). A key an earlier overlap kept alive dies now either way: one old key at most."""
        if not (isinstance(grace_seconds, int | float) and 0 <= grace_seconds <= MAX_GRACE):
            raise InvalidInput("grace_seconds", f"must be between 0 and {MAX_GRACE} seconds")
        user = await self.get(id_)
        key = generate_key()
        now = self._clock()
        columns: dict[str, Any] = {
            "key_id": key.key_id,
            "key_digest": digest_key(key),
            "key_rotated_at": now,
            "key_generation": user.key_generation + 1,
            "previous_key_id": user.key_id if grace_seconds else None,
            "previous_key_digest": user.key_digest if grace_seconds else None,
            "previous_key_until": now + grace_seconds if grace_seconds else None,
        }
        detail = f"old key works for {grace_seconds:g} s more" if grace_seconds else None
        updated = await self._write(
            id_, columns, actor=actor, action="service_user.rotate", client=client, detail=detail
        )
        return CreatedKey(updated, key)

    async def deactivate(
        self, id_: str, *, actor: str, client: ClientInfo | None = None
    ) -> ServiceUser:
        return await self.update(id_, {"active": False}, actor=actor, client=client)

    async def reactivate(
        self, id_: str, *, actor: str, client: ClientInfo | None = None
    ) -> ServiceUser:
        return await self.update(id_, {"active": True}, actor=actor, client=client)

    async def set_expiry(
        self, id_: str, expires_at: float | None, *, actor: str, client: ClientInfo | None = None
    ) -> ServiceUser:
        """Set (or clear, with None) when the identity stops working; a past time expires it now."""
        return await self.update(id_, {"expires_at": expires_at}, actor=actor, client=client)

    async def expire(
        self, id_: str, *, actor: str, client: ClientInfo | None = None
    ) -> ServiceUser:
        return await self.set_expiry(id_, self._clock(), actor=actor, client=client)

    async def delete(self, id_: str, *, actor: str, client: ClientInfo | None = None) -> None:
        user = await self.get(id_)
        record = self._record(actor, "service_user.delete", user, client)
        if not await self._store.delete_service_user(id_, record):
            raise NoSuchThing("service user")
