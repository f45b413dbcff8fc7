"""Who is on the other end: a request's client address.

The address is the TCP peer's, unless the peer is one of ``server.trusted_proxies`` (addresses
or CIDRs, IPv4 or IPv6): then it is the first hop of ``X-Forwarded-For``, read from the right,
that is not a trusted proxy itself. Reading from the right matters: the left of the header is
whatever the client wrote, and only the hops our own proxies appended are facts. A hop that is
not an IP address ends the walk at the last trusted one, so client-written text never becomes
an address (the audit log's, a throttle's key, an allowlist's subject).

One object per app (``CLIENTS``); the answer is kept on the request, so the audit record, the
backoff and the allowlist of one request agree and pay for the walk once.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Final

from aiohttp import web

from ..networks import parse_ip, parse_networks

__all__ = ("ClientAddresses",)

_ADDRESS: Final[web.RequestKey[str]] = web.RequestKey("pangolin.client_address")
_MAX_HOPS: Final = 32  # of X-Forwarded-For walked: a header of thousands costs no more


class ClientAddresses:
    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        # check-config refuses a malformed entry before an app is ever built.
        self._trusted = parse_networks(trusted_proxies)

    @functools.lru_cache(maxsize=4096)  # noqa: B019  # one object per app, lives as long
    def is_trusted(self, address: str) -> bool:
        """Whether ``address`` (a peer, a hop) is one of the trusted proxies."""
        if not self._trusted:
            return False
        ip = parse_ip(address)
        return ip is not None and any(ip in network for network in self._trusted)

    def address(self, request: web.Request) -> str:
        """The client's address, as the module docstring says ("-" without a peer)."""
        if _ADDRESS in request:
            return request[_ADDRESS]
        peer = request.remote or "-"
        address = peer
        if self._trusted and self.is_trusted(peer):
            address = self._first_untrusted(peer, request.headers.getall("X-Forwarded-For", []))
        request[_ADDRESS] = address
        return address

    def _first_untrusted(self, peer: str, headers: list[str]) -> str:
        hops = [hop.strip() for header in headers for hop in header.split(",")]
        nearest = peer
        for hop in reversed(hops[-_MAX_HOPS:]):
            ip = parse_ip(hop)
            if ip is None:
                break  # not an address: stop at the last hop a trusted proxy vouched for
            nearest = str(ip)
            if not self.is_trusted(nearest):
                break
        return nearest
