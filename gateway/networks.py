"""IP addresses and networks as the settings and the allowlists write them: an address
(``10.0.0.7``, ``2001:db8::1``) or a CIDR (``10.0.0.0/8``, ``2001:db8::/32``), IPv4 or IPv6.

One parser for every place that names networks (``server.trusted_proxies``, a service user's
allowlist), so "which address is inside" means one thing everywhere. An IPv4-mapped IPv6
address (what a dual-stack socket reports for an IPv4 peer) is the IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ("IP", "Network", "counted_address", "network_problem", "parse_ip", "parse_networks")

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str) -> IP | None:
    """``text`` as an address (brackets around IPv6 allowed), or None."""
    try:
        ip = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def network_problem(entry: str) -> str | None:
    """Why ``entry`` is not an address or a CIDR, or None if it is one."""
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return f"{entry!r} is not an IP address or CIDR"
    return None


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``entries`` as networks (host bits allowed: ``10.1.2.3/8`` is ``10.0.0.0/8``); raises
    ValueError for a malformed one (``network_problem`` says which, for messages)."""
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def counted_address(address: str) -> str:
    """The unit a limit or a backoff counts ``address`` as: itself, or for IPv6 its /64
    (what one host is usually given: each of its 2^64 addresses must not get a budget)."""
    ip = parse_ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return address
