"""Identities and API keys: roles, service users, principals, and the key format.

An API key looks like ``pgl_<key_id>_<secret>``. The ``key_id`` is public and indexed, so a
lookup is one fetch; the secret carries 256 bits from :mod:`secrets`. Because the secret is
high-entropy, a plain SHA-256 digest is enough to store it: a slow password hash would add
latency and a CPU-exhaustion lever without adding security.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Final

from ..networks import Network, parse_ip, parse_networks
from .grants import NO_GRANTS, GrantIndex

__all__ = (
    "KEY_ID_CHARS",
    "KEY_PREFIX",
    "ApiKey",
    "Principal",
    "Role",
    "ServiceUser",
    "Session",
    "Tenant",
    "User",
    "digest_key",
    "generate_key",
    "parse_key",
    "verify_key",
)

KEY_PREFIX: Final = "pgl_"
_KEY_ID_BYTES: Final = 8  # 16 hex characters: public, only needs to be unique
KEY_ID_CHARS: Final = 2 * _KEY_ID_BYTES
_SECRET_BYTES: Final = 32  # 256 bits
_KEY_RE: Final = re.compile(r"pgl_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
# Compared against when the key id is unknown, so that path costs the same as a wrong secret.
_DUMMY_DIGEST: Final = hashlib.sha256(b"pangolin-gateway-dummy-key").digest()


class Role(enum.StrEnum):
    """System roles, highest first. ``rank`` orders them for "never above your own" checks."""

    ROOT = "Root"
    TENANT_ADMIN = "TenantAdmin"
    TENANT_USER = "TenantUser"

    @property
    def rank(self) -> int:
        return {Role.ROOT: 3, Role.TENANT_ADMIN: 2, Role.TENANT_USER: 1}[self]


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    created_at: float


@dataclass(frozen=True, slots=True)
class ServiceUser:
    """A machine identity as stored. ``key_digest`` never leaves the store layer's callers."""

    id: str
    tenant_id: str
    tenant_name: str
    name: str
    description: str
    role: Role
    key_id: str
    key_digest: bytes
    created_at: float
    created_by: str | None
    expires_at: float | None
    active: bool
    last_used_at: float | None
    key_rotated_at: float | None
    key_generation: int
    # The key a rotation with an overlap replaced (generation key_generation - 1): it and
    # its tokens keep working until previous_key_until. None when there is no such key.
    previous_key_id: str | None = None
    previous_key_digest: bytes | None = None
    previous_key_until: float | None = None
    # The networks (canonical CIDRs) its key and tokens work from; empty: from anywhere.
    allowed_networks: tuple[str, ...] = ()
    # Its own request rate limit (requests per second, 0: none) and burst; None: the
    # configured default.
    rate_limit: float | None = None
    rate_burst: int | None = None

    def usable_at(self, now: float) -> bool:
        """Whether this identity may authenticate at ``now`` (active and not expired)."""
        return self.active and (self.expires_at is None or now < self.expires_at)

    def digest_for(self, key_id: str) -> bytes | None:
        """The stored digest of the key named ``key_id``: the current one or, even past its
        overlap (the caller then refuses it as rotated), the previous one."""
        if key_id == self.key_id:
            return self.key_digest
        return self.previous_key_digest if key_id == self.previous_key_id else None

    def overlap_open(self, now: float) -> bool:
        """Whether the previous key (and the tokens of its generation) still works."""
        return self.previous_key_until is not None and now < self.previous_key_until

    def principal(self, grants: GrantIndex = NO_GRANTS) -> Principal:
        return Principal(
            id=self.id,
            name=self.name,
            type="service_user",
            role=self.role,
            tenant_id=self.tenant_id,
            tenant_name=self.tenant_name,
            key_generation=self.key_generation,
            grants=grants,
            networks=parse_networks(self.allowed_networks),
            key_issued_at=self.key_rotated_at or self.created_at,
            expires_at=self.expires_at,
            rate_limit=self.rate_limit,
            rate_burst=self.rate_burst,
        )


@dataclass(frozen=True, slots=True)
class User:
    """A human administrator as stored. ``password_hash`` never leaves the store's callers."""

    id: str
    tenant_id: str
    tenant_name: str
    username: str
    role: Role
    password_hash: str
    created_at: float
    created_by: str | None
    active: bool
    last_login_at: float | None
    failed_logins: int
    password_changed_at: float

    def principal(self) -> Principal:
        return Principal(
            id=self.id,
            name=self.username,
            type="user",
            role=self.role,
            tenant_id=self.tenant_id,
            tenant_name=self.tenant_name,
            # Humans hold no key and are never issued a gateway token: their sessions are
            # store rows (``Session``), ended by deleting the row, not by a generation.
            key_generation=0,
        )


@dataclass(frozen=True, slots=True)
class Session:
    """A human administrator's login as stored. ``digest`` is the SHA-256 of the opaque
    session token; the token itself exists only in the client's hands and in the answer to
    the login."""

    digest: bytes
    user_id: str
    created_at: float
    last_seen_at: float
    expires_at: float  # absolute: no activity extends it
    client_addr: str | None
    user_agent: str | None

    def __repr__(self) -> str:
        return f"Session(user_id={self.user_id!r}, digest=<redacted>)"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as, once authenticated."""

    id: str
    name: str
    type: str
    role: Role
    tenant_id: str
    tenant_name: str
    key_generation: int
    # What a TenantUser service user may do beyond its catalogs' default_access (its own and
    # its roles' grants), loaded with the identity; Root and TenantAdmin need none.
    grants: GrantIndex = field(default=NO_GRANTS, compare=False, repr=False)
    # Where its credentials work from (a service user's allowlist); empty: anywhere.
    networks: tuple[Network, ...] = field(default=(), compare=False, repr=False)
    # A service user's: when its key was issued (made or last rotated), and when it stops
    # working (its expiry, or the end of the overlap of a replaced key it used); for the
    # key-age policy (auth.key_age). None for humans, and for no expiry.
    key_issued_at: float | None = field(default=None, compare=False, repr=False)
    expires_at: float | None = field(default=None, compare=False, repr=False)
    # A service user's own rate limit and burst (None: the configured default).
    rate_limit: float | None = field(default=None, compare=False, repr=False)
    rate_burst: int | None = field(default=None, compare=False, repr=False)

    def allowed_from(self, address: str) -> bool:
        """Whether a request from ``address`` may act as this principal."""
        if not self.networks:
            return True
        ip = parse_ip(address)
        return ip is not None and any(ip in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A parsed key. ``str()`` is deliberately not the plaintext, so it cannot leak via logs."""

    key_id: str
    secret: str

    def plaintext(self) -> str:
        return f"{KEY_PREFIX}{self.key_id}_{self.secret}"

    def __repr__(self) -> str:
        return f"ApiKey(key_id={self.key_id!r}, secret=<redacted>)"

    __str__ = __repr__


def generate_key() -> ApiKey:
    return ApiKey(
        key_id=secrets.token_hex(_KEY_ID_BYTES), secret=secrets.token_urlsafe(_SECRET_BYTES)
    )


def parse_key(value: str) -> ApiKey | None:
    """Parse ``pgl_<key_id>_<secret>``; anything else (wrong shape, length, charset) is None."""
    match = _KEY_RE.fullmatch(value)
    if match is None:
        return None
    return ApiKey(key_id=match.group(1), secret=match.group(2))


def digest_key(key: ApiKey) -> bytes:
    # The digest covers the key id as well, so a digest cannot be moved to another key id.
    return hashlib.sha256(key.plaintext().encode("ascii")).digest()


def verify_key(key: ApiKey, stored_digest: bytes | None) -> bool:
    """Constant-time check; an unknown key id (``None``) runs the same compare and fails."""
    expected = _DUMMY_DIGEST if stored_digest is None else stored_digest
    ok = hmac.compare_digest(digest_key(key), expected)
    return ok and stored_digest is not None
