"""What a request presents as its credential, read from its headers (no I/O): one rule for
every route, so the authenticator, the access log and the upstream never disagree on who is
calling."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from multidict import CIMultiDictProxy

from ..identity.models import KEY_PREFIX
from ..identity.sessions import SESSION_PREFIX

__all__ = ("AMBIGUOUS", "Credential", "parse_credentials")


@dataclass(frozen=True, slots=True)
class Credential:
    """What the request presented: ``kind`` is ``api_key``, ``token`` (a gateway JWT),
    ``session`` (a human's session token) or ``malformed``."""

    kind: str
    value: str

    def __repr__(self) -> str:
        return f"Credential(kind={self.kind!r}, value=<redacted>)"


AMBIGUOUS: Final = Credential("ambiguous", "")


def parse_credentials(headers: CIMultiDictProxy[str]) -> tuple[Credential, ...]:
    """The credentials the request presents (none, one, or an ``X-API-Key`` with a bearer
    credential, which must name the same principal); no I/O.

    A credential header given twice is ``AMBIGUOUS``: servers disagree on which copy counts
    (first, last, joined), so no copy is trusted. PyIceberg configured with
    ``header.X-API-Key`` and no auth also sends ``Authorization: Bearer None``, which is no
    credential at all, on its own or beside a key.
    """
    keys = headers.getall("X-API-Key", ())
    authorizations = headers.getall("Authorization", ())
    if len(keys) > 1 or len(authorizations) > 1:
        return (AMBIGUOUS,)
    found = [Credential("api_key", keys[0].strip())] if keys else []
    if authorizations:
        bearer = _bearer(authorizations[0])
        if bearer is not None:
            found.append(bearer)
    return tuple(found)


def _bearer(authorization: str) -> Credential | None:
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        return Credential("malformed", "")
    if value == "None":
        return None
    if value.startswith(KEY_PREFIX):
        return Credential("api_key", value)
    if value.startswith(SESSION_PREFIX):
        return Credential("session", value)
    return Credential("token", value)
