"""Header hygiene between client and catalog, in both directions.

Upstream never receives the client's credentials (``X-API-Key``, ``Authorization``), any
hop-by-hop header (RFC 9110 section 7.6.1, plus whatever ``Connection`` names), or any header
whose *normalized* name (case-folded, ``_`` read as ``-``) is one of our identity headers:
some servers and frameworks treat ``X_Pangolin_Role`` like ``X-Pangolin-Role``, so a client
must not be able to smuggle an identity that way (oauth2-proxy strips the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from multidict import CIMultiDict, CIMultiDictProxy

from ..identity import Principal
from ..settings import RoleHeaderSettings

__all__ = ("HOP_BY_HOP", "HeaderPolicy", "normalize_header_name")

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
    }
)
_IDENTITY_PREFIX: Final = "x-pangolin-"


def normalize_header_name(name: str) -> str:
    return name.lower().replace("_", "-")


def _connection_listed(headers: Mapping[str, str] | CIMultiDictProxy[str]) -> set[str]:
    listed: set[str] = set()
    for value in (
        headers.getall("Connection", [])
        if isinstance(headers, CIMultiDictProxy)
        else ([headers["Connection"]] if "Connection" in headers else [])
    ):
        listed.update(normalize_header_name(token.strip()) for token in value.split(","))
    return listed


class HeaderPolicy:
    def __init__(self, role_headers: RoleHeaderSettings) -> None:
        self._role_headers = role_headers
        self._identity = frozenset(normalize_header_name(n) for n in role_headers.names())
        self._drop = HOP_BY_HOP | _GATEWAY_OWNED | self._identity

    def _keep_inbound(self, name: str, listed: set[str]) -> bool:
        norm = normalize_header_name(name)
        return not (norm in self._drop or norm in listed or norm.startswith(_IDENTITY_PREFIX))

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
    ) -> CIMultiDict[str]:
        listed = _connection_listed(inbound)
        out: CIMultiDict[str] = CIMultiDict(
            (name, value) for name, value in inbound.items() if self._keep_inbound(name, listed)
        )
        forwarded_for = client_addr
        if trusted_forwarded_for and "X-Forwarded-For" in inbound:
            # Append, never replace, when the peer is a proxy we trust.
            forwarded_for = f"{', '.join(inbound.getall('X-Forwarded-For'))}, {client_addr}"
        out["X-Forwarded-For"] = forwarded_for
        out["X-Forwarded-Proto"] = proto
        out["X-Forwarded-Host"] = host
        out["X-Request-Id"] = request_id
        role = self._role_headers
        out[role.principal_id] = principal.id
        out[role.principal_name] = principal.name
        out[role.principal_type] = principal.type
        out[role.role] = principal.role.value
        out[role.tenant] = principal.tenant_name
        if authorization is not None:
            out["Authorization"] = authorization
        return out

    @staticmethod
    def downstream_response(
        upstream: CIMultiDictProxy[str], *, drop: Iterable[str] = ()
    ) -> CIMultiDict[str]:
        """Upstream response headers minus hop-by-hop ones (and ``drop``)."""
        listed = _connection_listed(upstream) | {normalize_header_name(n) for n in drop}
        return CIMultiDict(
            (name, value)
            for name, value in upstream.items()
            if (norm := normalize_header_name(name)) not in HOP_BY_HOP and norm not in listed
        )
