"""Header hygiene between client and catalog, in both directions.

Upstream never receives the client's credentials (``X-API-Key``, ``Authorization``), any
hop-by-hop header (RFC 9110 section 7.6.1, plus whatever ``Connection`` names), or any header
whose *normalized* name (case-folded, ``_`` read as ``-``) is one of our identity headers:
some servers and frameworks treat ``X_Pangolin_Role`` like ``X-Pangolin-Role``, so a client
must not be able to smuggle an identity that way (oauth2-proxy strips the same way). Nor
does it receive method or URL override headers (``X-HTTP-Method-Override``,
``X-Original-URL`` ...): what the upstream does must be what the gateway judged.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from ..identity.models import Principal
from ..settings import RoleHeaderSettings

__all__ = ("HOP_BY_HOP", "HeaderPolicy", "Headers", "normalize_header_name")

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)
# Set by the gateway itself; an inbound copy is never passed on.
_GATEWAY_OWNED: Final = frozenset(
    {
        "host",
        "x-api-key",
        "authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-request-id",
        "expect",
        # Method and URL overrides that some frameworks honour: the upstream must act on the
        # method and path the gateway judged, never on another one a header names.
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
    }
)
_IDENTITY_PREFIX: Final = "x-pangolin-"


def normalize_header_name(name: str) -> str:
    return name.lower().replace("_", "-")


# Header names repeat from request to request; a bounded cache, so invented names only cycle it.
_normalized = functools.lru_cache(maxsize=2048)(normalize_header_name)


def _connection_listed(values: Iterable[str]) -> set[str]:
    """The header names a ``Connection`` header lists (hop-by-hop by declaration)."""
    return {normalize_header_name(token.strip()) for value in values for token in value.split(",")}


Headers = list[tuple[str, str]]


class HeaderPolicy:
    def __init__(self, role_headers: RoleHeaderSettings, *, formerly: Iterable[str] = ()) -> None:
        """``formerly``: role header names a reload has replaced. A client's copy of them is
        still dropped: an upstream not yet told of the new names trusts the old ones."""
        self._role_headers = role_headers
        self._identity = frozenset(
            normalize_header_name(n) for n in (*role_headers.names(), *formerly)
        )
        self._drop = HOP_BY_HOP | _GATEWAY_OWNED | self._identity
        # The verdict on a name is cached like the normalized names.
        self._passes = functools.lru_cache(maxsize=1024)(self._name_passes)

    def _name_passes(self, name: str) -> bool:
        norm = normalize_header_name(name)
        return not (norm in self._drop or norm.startswith(_IDENTITY_PREFIX))

    def upstream_request(
        self,
        inbound: CIMultiDictProxy[str],
        principal: Principal,
        *,
        client_addr: str,
        proto: str,
        host: str,
        request_id: str,
        authorization: str | None,
        trusted_forwarded_for: bool,
        identity_encoding: bool = False,
        drop_delegation: bool = False,
    ) -> Headers:
        """What goes upstream: the client's headers that may pass, then ours.
        ``identity_encoding`` asks for an uncompressed answer (one the gateway must read);
        ``drop_delegation`` keeps the client's ``X-Iceberg-Access-Delegation`` back, in any
        spelling a server could read as it, so the catalog vends no storage credentials."""
        passes = self._passes
        out = [(name, value) for name, value in inbound.items() if passes(name)]
        if "Connection" in inbound or identity_encoding or drop_delegation:
            listed = _connection_listed(inbound.getall("Connection", ()))
            if identity_encoding:
                listed.add("accept-encoding")
            if drop_delegation:
                listed.add("x-iceberg-access-delegation")
            out = [(n, v) for n, v in out if _normalized(n) not in listed]
        forwarded_for = client_addr
        if trusted_forwarded_for and "X-Forwarded-For" in inbound:
            # Append, never replace, when the peer is a proxy we trust.
            forwarded_for = f"{', '.join(inbound.getall('X-Forwarded-For'))}, {client_addr}"
        out += (
            ("X-Forwarded-For", forwarded_for),
            ("X-Forwarded-Proto", proto),
            ("X-Forwarded-Host", host),
            ("X-Request-Id", request_id),
        )
        out += self.identity(principal)
        if authorization is not None:
            out.append(("Authorization", authorization))
        if identity_encoding:
            out.append(("Accept-Encoding", "identity"))
        return out

    def identity(self, principal: Principal) -> Headers:
        """The role headers that tell the upstream who is calling."""
        role = self._role_headers
        return [
            (role.principal_id, principal.id),
            (role.principal_name, principal.name),
            (role.principal_type, principal.type),
            (role.role, principal.role.value),
            (role.tenant, principal.tenant_name),
        ]

    @staticmethod
    def downstream_response(upstream: Headers, *, drop: Iterable[str] = ()) -> CIMultiDict[str]:
        """Upstream response headers minus hop-by-hop ones (and ``drop``)."""
        listed = _connection_listed(v for n, v in upstream if n.lower() == "connection")
        listed.update(normalize_header_name(n) for n in drop)
        return CIMultiDict(
            (name, value)
            for name, value in upstream
            if (norm := _normalized(name)) not in HOP_BY_HOP and norm not in listed
        )
