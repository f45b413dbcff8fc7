"""Token-signing keys: EC P-256 JWKs for ES256. A leaf: settings validate a configured key
and the token service signs with one, and neither depends on the other for it."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

from joserfc.errors import JoseError
from joserfc.jwk import ECKey

if TYPE_CHECKING:
    from .store import Store

__all__ = ("ALGORITHM", "create_signing_key", "new_signing_key", "parse_signing_key")

ALGORITHM: Final = "ES256"


def new_signing_key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"use": "sig", "alg": ALGORITHM}, auto_kid=True)


def parse_signing_key(text: str) -> ECKey:
    """A private EC P-256 JWK (JSON); ValueError saying what is wrong otherwise."""
    try:
        data = json.loads(text)
        key = ECKey.import_key(data)
    except (ValueError, TypeError, JoseError) as exc:
        raise ValueError("must be a private EC P-256 JWK (JSON)") from exc
    if key.get("crv") != "P-256" or not key.is_private:
        raise ValueError("must be a private EC P-256 JWK (JSON)")
    if key.kid is None:
        key = ECKey.import_key({**data, "kid": key.thumbprint()})
    return key


async def create_signing_key(store: Store) -> str:
    """Create and store a new ES256 signing key; returns its ``kid`` (the JWK thumbprint)."""
    key = new_signing_key()
    kid = key.kid
    assert kid is not None
    await store.insert_signing_key(kid, json.dumps(key.as_dict(private=True)))
    return kid
