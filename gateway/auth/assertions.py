"""Signed identity assertions for upstreams: who is calling, as a short-lived JWT.

Role headers can be trusted only by an upstream nothing else can reach. A catalog with
``identity_assertion`` also gets ``X-Pangolin-Assertion``: an ES256 JWT signed with the
gateway's token key (``kid`` in the header, verifiable with ``/.well-known/jwks.json``) whose
audience is the catalog, with the principal, its type, role and tenant and, for a caller whose
grants decide, those of its grants that apply to the catalog. It lives ``LIFETIME`` (60 s) and
is signed once per principal and audience, then reused until ``REUSE`` has passed, so the
hot path pays a dictionary lookup, not an ECDSA signature, for most requests. A client's own
``X-Pangolin-Assertion`` never passes (``proxy.headers`` drops every ``X-Pangolin-*``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Final

from ..identity.grants import ANY_CATALOG
from ..identity.models import Principal
from .tokens import PRINCIPAL_TYPE_CLAIM, TokenService

__all__ = ("ASSERTION_HEADER", "LEAST_LEFT", "LIFETIME", "REUSE", "IdentityAssertions")

ASSERTION_HEADER: Final = "X-Pangolin-Assertion"
LIFETIME: Final = 60
REUSE: Final = 45  # then a new one: an upstream never gets one with less than 15 s left
# What every assertion handed out has left, at least (a proxy caching a decision that carries
# one must not keep it longer).
LEAST_LEFT: Final = LIFETIME - REUSE
# Assertions kept (one per principal and audience): a bound, like every cache of the hot path.
_MAX_CACHED: Final = 20_000


class IdentityAssertions:
    def __init__(self, tokens: TokenService, issuer: str, clock: Callable[[], float]) -> None:
        self._tokens = tokens
        self._issuer = issuer
        self._clock = clock
        # (principal id, catalog, audience) -> (the principal it was made for, assertion,
        # reuse until)
        self._made: dict[tuple[str, str, str], tuple[Principal, str, float]] = {}

    def for_principal(self, principal: Principal, catalog: str, audience: str) -> str:
        now = self._clock()
        key = (principal.id, catalog, audience)  # the grants claim is the catalog's
        made = self._made.get(key)
        # Only for that very principal object: any change to the identity or its grants
        # makes a new one, and with it a new assertion.
        if made is not None and made[0] is principal and now < made[2]:
            return made[1]
        issued = int(now)
        claims: dict[str, object] = {
            "iss": self._issuer,
            "aud": audience,
            "sub": principal.id,
            "name": principal.name,
            PRINCIPAL_TYPE_CLAIM: principal.type,
            "role": principal.role.value,
            "tenant": principal.tenant_name,
            "iat": issued,
            "exp": issued + LIFETIME,
            "jti": str(uuid.uuid4()),
        }
        grants = [
            {"action": grant.action, "on": grant.on}
            for grant in principal.grants.grants
            if grant.catalog in (catalog, ANY_CATALOG)
        ]
        if grants:
            claims["grants"] = grants
        assertion = self._tokens.sign(claims)
        if len(self._made) >= _MAX_CACHED:
            self._made.clear()
        # Counted from ``issued`` (whole seconds, as ``exp`` is): reused until then, it has
        # LEAST_LEFT seconds left at least.
        self._made[key] = (principal, assertion, issued + REUSE)
        return assertion
