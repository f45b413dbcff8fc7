"""The client address (``gateway.audit.clients``): the peer's, or behind trusted proxies the
first X-Forwarded-For hop from the right that is not a trusted proxy itself."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.audit.clients import ClientAddresses
from gateway.settings import SettingsError, load_settings


def request_from(peer: str, *forwarded_for: str) -> object:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" else default
    )
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded_for)
    return make_mocked_request("GET", "/v1/config", headers=headers, transport=transport)


def address(trusted: tuple[str, ...], peer: str, *forwarded_for: str) -> str:
    return ClientAddresses(trusted).address(request_from(peer, *forwarded_for))  # type: ignore[arg-type]


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert address(("10.0.0.1",), "203.0.113.9", "198.51.100.1") == "203.0.113.9"
    assert address((), "203.0.113.9", "198.51.100.1") == "203.0.113.9"


def test_behind_one_trusted_proxy_the_client_is_the_hop_it_appended() -> None:
    # The client wrote "6.6.6.6" itself; the proxy appended the address it saw.
    assert address(("10.0.0.1",), "10.0.0.1", "6.6.6.6, 198.51.100.7") == "198.51.100.7"


def test_a_chain_of_trusted_proxies_given_as_cidrs_is_walked_from_the_right() -> None:
    trusted = ("10.0.0.0/8", "2001:db8::/32")
    chain = "6.6.6.6, 198.51.100.7, 10.1.2.3, 2001:db8::5"
    assert address(trusted, "10.9.9.9", chain) == "198.51.100.7"


def test_several_header_lines_are_one_list_in_order() -> None:
    assert address(("10.0.0.0/8",), "10.0.0.1", "6.6.6.6", "198.51.100.7, 10.0.0.2") == (
        "198.51.100.7"
    )


def test_when_every_hop_is_trusted_the_leftmost_is_the_client() -> None:
    assert address(("10.0.0.0/8",), "10.0.0.1", "10.0.0.3, 10.0.0.2") == "10.0.0.3"


def test_a_hop_that_is_no_address_stops_the_walk_at_the_last_trusted_one() -> None:
    # Client-written text never becomes an address (a throttle's key, an allowlist's subject).
    assert address(("10.0.0.0/8",), "10.0.0.1", "198.51.100.7, evil, 10.0.0.2") == "10.0.0.2"
    assert address(("10.0.0.1",), "10.0.0.1", "not-an-ip") == "10.0.0.1"
    assert address(("10.0.0.1",), "10.0.0.1") == "10.0.0.1"  # no header at all


def test_ipv6_hops_and_ipv4_mapped_peers_are_understood() -> None:
    assert address(("2001:db8::/32",), "2001:db8::1", "[2001:db8:ffff::9]") == "2001:db8:ffff::9"
    # A dual-stack socket reports an IPv4 proxy as ::ffff:10.0.0.1: still the trusted proxy.
    assert address(("10.0.0.1",), "::ffff:10.0.0.1", "198.51.100.7") == "198.51.100.7"


def test_the_address_is_worked_out_once_per_request() -> None:
    clients = ClientAddresses(("10.0.0.1",))
    request = request_from("10.0.0.1", "198.51.100.7")
    with mock.patch.object(clients, "_first_untrusted", wraps=clients._first_untrusted) as walk:
        answers = {clients.address(request) for _ in range(3)}  # type: ignore[arg-type]
    assert answers == {"198.51.100.7"}
    assert walk.call_count == 1


@pytest.mark.parametrize("entry", ["10.0.0.300", "10.0.0.0/33", "proxy.internal", ""])
def test_check_config_names_a_trusted_proxy_that_is_no_address_or_cidr(
    entry: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f'[server]\ntrusted_proxies = ["10.0.0.0/8", "{entry}"]\n'
        '[catalogs.default]\nupstream = "http://127.0.0.1:9"\n'
    )
    with pytest.raises(SettingsError) as refused:
        load_settings(config, {})
    assert refused.value.problems == [
        f"server.trusted_proxies: {entry!r} is not an IP address or CIDR"
    ]
