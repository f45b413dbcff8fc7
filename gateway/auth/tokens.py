"""Gateway access tokens: ES256 JWTs (joserfc) with a ``kid``, published as a JWK set.

Asymmetric signing lets anyone verify a token with ``/.well-known/jwks.json`` without being
able to mint one. A token records the key generation of its service user: rotation bumps the
generation, so every token minted from the old key stops verifying against the principal's
current state (that check lives in ``authn``; this module checks only the token itself).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet

from ..identity.models import Principal
from ..settings import TokenSettings
from ..signing_keys import ALGORITHM, parse_signing_key
from ..store import Store

__all__ = (
    "MAX_TOKEN_BYTES",
    "IssuedToken",
    "TokenClaims",
    "TokenService",
)

# Reject oversized tokens before any parsing (Home Assistant uses the same bound).
MAX_TOKEN_BYTES: Final = 8192
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
PRINCIPAL_TYPE_CLAIM: Final = "ptype"

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scope: str

    def __repr__(self) -> str:
        return f"IssuedToken(access_token=<redacted>, expires_in={self.expires_in})"


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a verified token says; the principal's live state is checked separately."""

    subject: str
    principal_type: str
    tenant_id: str
    key_generation: int
    expires_at: float
    scope: str


class TokenService:
    """Issues and verifies gateway tokens. Build it with :meth:`load`."""

    def __init__(self, settings: TokenSettings, keys: list[ECKey], clock: Clock) -> None:
        if not keys:
            raise ValueError("no signing key")
        self._settings = settings
        self._signing_key = keys[0]  # newest signs; older ones still verify until removed
        self._key_set = KeySet(list(keys))
        self._clock = clock
        self._public_jwks = KeySet(list(keys)).as_dict(private=False)

    @classmethod
    async def load(cls, store: Store, settings: TokenSettings, clock: Clock) -> TokenService:
        rows = await store.signing_keys()
        if not rows:
            raise LookupError("the store has no token-signing key; run `pangolin-gateway init`")
        keys = [ECKey.import_key(json.loads(jwk)) for _kid, jwk in rows]
        if settings.signing_key:
            # A configured key signs; the store's keys still verify tokens they signed earlier.
            keys.insert(0, parse_signing_key(settings.signing_key))
        return cls(settings, keys, clock)

    def jwks(self) -> dict[str, Any]:
        return dict(self._public_jwks)

    def issue(self, principal: Principal, scope: str) -> IssuedToken:
        """A signed token for ``principal`` (a service user: humans hold store sessions)."""
        lifetime = self._settings.lifetime_seconds
        now = int(self._clock())
        claims = {
            "iss": self._settings.issuer,
            "sub": principal.id,
            "aud": self._settings.audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid.uuid4()),
            "tenant": principal.tenant_id,
            "role": principal.role.value,
            PRINCIPAL_TYPE_CLAIM: principal.type,
            "kgen": principal.key_generation,
            "scope": scope,
        }
        return IssuedToken(self.sign(claims), lifetime, scope)

    def sign(self, claims: dict[str, object]) -> str:
        """``claims`` as a JWT signed with the current key (identity assertions)."""
        header = {"alg": ALGORITHM, "kid": self._signing_key.kid}
        return jwt.encode(header, claims, self._signing_key, algorithms=[ALGORITHM])

    def verify(self, token: str, *, allow_expired: bool = False) -> TokenClaims | None:
        """Signature, issuer, audience, expiry and shape; None for anything wrong.

        ``allow_expired`` is for token exchange with client credentials, where an expired
        subject is acceptable because the caller proves who it is by other means.
        """
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            return None
        try:
            decoded = jwt.decode(token, self._key_set, algorithms=[ALGORITHM])
            registry = jwt.JWTClaimsRegistry(
                now=lambda: int(self._clock()),
                leeway=5,
                iss={"essential": True, "value": self._settings.issuer},
                aud={"essential": True, "value": self._settings.audience},
                sub={"essential": True},
                iat={"essential": True},
                exp={"essential": True},
            )
            claims = decoded.claims
            if allow_expired:
                claims = {**claims, "exp": int(self._clock()) + 60}
            registry.validate(claims)
            real = decoded.claims
            # Interned (the signature is ours, so these are our own ids and names): the
            # authenticator keeps thousands of claims, most of them of a few service users.
            return TokenClaims(
                subject=sys.intern(_str(real["sub"])),
                principal_type=sys.intern(_str(real[PRINCIPAL_TYPE_CLAIM])),
                tenant_id=sys.intern(_str(real["tenant"])),
                key_generation=_int(real["kgen"]),
                expires_at=float(_int(real["exp"])),
                scope=sys.intern(_str(real.get("scope", ""))),
            )
        except (JoseError, KeyError, TypeError, ValueError):
            # joserfc raises JoseError subclasses for bad signatures, unknown kid, bad claims;
            # the rest cover well-signed tokens with a shape we never issue.
            return None


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError("expected a string claim")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("expected an integer claim")
    return value
