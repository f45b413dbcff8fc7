"""Forwarding: the identity and other headers the upstream receives, and those dropped."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from multidict import CIMultiDict

from gateway.identity.service_users import CreatedKey
from gateway.proxy.headers import normalize_header_name
from gateway.settings import ServerSettings

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded
from ..helpers import bearer, key_header
from .forwarding_support import API, call

ROLE_HEADERS = (
    "X-Pangolin-Principal-Id",
    "X-Pangolin-Principal-Name",
    "X-Pangolin-Principal-Type",
    "X-Pangolin-Role",
    "X-Pangolin-Tenant",
)


def assert_secret_absent(recorded: Recorded, secret: str) -> None:
    for name, value in recorded.headers.items():
        assert secret not in name and secret not in value, name
    assert secret.encode() not in recorded.body


CredentialHeaders = Callable[[Gateway, CreatedKey], Awaitable[tuple[dict[str, str], str]]]


async def _x_api_key(gateway: Gateway, created: CreatedKey) -> tuple[dict[str, str], str]:
    return key_header(created), created.api_key.plaintext()


async def _bearer_key(gateway: Gateway, created: CreatedKey) -> tuple[dict[str, str], str]:
    return bearer(created.api_key.plaintext()), created.api_key.plaintext()


async def _bearer_token(gateway: Gateway, created: CreatedKey) -> tuple[dict[str, str], str]:
    token = await gateway.token(created)
    return bearer(token), token


CREDENTIALS = pytest.mark.parametrize(
    "credential",
    [_x_api_key, _bearer_key, _bearer_token],
    ids=["x-api-key", "bearer-api-key", "bearer-gateway-token"],
)


# -- what the upstream receives: identity -----------------------------------------------------


@CREDENTIALS
async def test_upstream_receives_role_headers_of_the_service_user(
    gateway: Gateway, user: CreatedKey, credential: CredentialHeaders
) -> None:
    headers, _ = await credential(gateway, user)

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=headers)

    assert reply.status == 200
    received = gateway.upstream.last.headers
    assert received["X-Pangolin-Principal-Id"] == user.user.id
    assert received["X-Pangolin-Principal-Name"] == "etl"
    assert received["X-Pangolin-Principal-Type"] == "service_user"
    assert received["X-Pangolin-Role"] == "TenantUser"
    assert received["X-Pangolin-Tenant"] == "default"


@CREDENTIALS
async def test_client_credentials_never_reach_the_upstream(
    gateway: Gateway, user: CreatedKey, credential: CredentialHeaders
) -> None:
    headers, secret = await credential(gateway, user)

    reply = await call(
        gateway, "POST", f"{API}/namespaces", headers=headers, data=b'{"namespace": ["a"]}'
    )

    assert reply.status == 200
    received = gateway.upstream.last
    assert "X-API-Key" not in received.headers
    assert "Authorization" not in received.headers
    assert_secret_absent(received, secret)
    assert_secret_absent(received, user.api_key.secret)


async def test_spoofed_identity_headers_are_dropped_and_the_gateway_sets_each_once(
    gateway: Gateway, user: CreatedKey
) -> None:
    spoofed = CIMultiDict(key_header(user))
    spoofed.add("X-Pangolin-Role", "Root")
    spoofed.add("x-pangolin-principal-id", "someone-else")
    spoofed.add("X_Pangolin_Role", "Root")
    spoofed.add("X_PANGOLIN_TENANT", "acme")
    spoofed.add("X-Pangolin-Anything", "smuggled")

    await call(gateway, "GET", f"{API}/namespaces", headers=spoofed)

    received = gateway.upstream.last.headers
    pangolin = [n for n in received if normalize_header_name(n).startswith("x-pangolin-")]
    assert sorted(pangolin) == sorted(ROLE_HEADERS)
    assert received.getall("X-Pangolin-Role") == ["TenantUser"]
    assert received.getall("X-Pangolin-Principal-Id") == [user.user.id]
    assert received.getall("X-Pangolin-Tenant") == ["default"]
    assert "smuggled" not in received.values()


async def test_root_key_is_forwarded_with_the_root_role(gateway: Gateway) -> None:
    await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    received = gateway.upstream.last.headers
    assert received["X-Pangolin-Role"] == "Root"
    assert received["X-Pangolin-Principal-Id"] == gateway.root.user.id


# -- what the upstream receives: other headers -------------------------------------------------


async def test_hop_by_hop_headers_and_headers_named_in_connection_are_dropped(
    gateway: Gateway, user: CreatedKey
) -> None:
    hop_by_hop = {
        "Connection": "keep-alive, X-Hop-Listed, x_hop_underscored",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Trailer": "X-Checksum",
        "Upgrade": "h2c",
        "Proxy-Authorization": "Basic cHJveHk6c2VjcmV0",
        "X-Hop-Listed": "1",
        "X-Hop-Underscored": "1",
    }

    await call(gateway, "GET", f"{API}/namespaces", headers={**key_header(user), **hop_by_hop})

    received = gateway.upstream.last.headers
    for name in hop_by_hop:
        if name != "Connection":  # the upstream connection may carry its own
            assert name not in received, name
    assert "X-Hop-Listed" not in received.get("Connection", "")


OVERRIDES = (
    "X-HTTP-Method-Override",
    "X-HTTP-Method",
    "X-Method-Override",
    "X-Original-URL",
    "X-Original-URI",
    "X-Rewrite-URL",
)


@pytest.mark.parametrize("name", OVERRIDES)
async def test_method_and_url_override_headers_never_reach_the_upstream_in_any_spelling(
    gateway: Gateway, user: CreatedKey, name: str
) -> None:
    # Some frameworks act on the method or path such a header names instead of the request
    # line's: the upstream must act on what the gateway judged.
    value = "DELETE" if "Method" in name else "/v1/namespaces/sales/tables/orders"
    spoofed = CIMultiDict(key_header(user))
    for spelling in (name, name.lower(), name.upper(), name.replace("-", "_"),
                     name.lower().replace("-", "_")):  # fmt: skip
        spoofed.add(spelling, value)

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=spoofed)

    assert reply.status == 200
    received = gateway.upstream.last
    assert (received.method, received.raw_path) == ("GET", "/v1/namespaces")
    overrides = {normalize_header_name(n) for n in OVERRIDES}
    assert [n for n in received.headers if normalize_header_name(n) in overrides] == []
    assert value not in received.headers.values()


async def test_end_to_end_headers_are_kept(gateway: Gateway, user: CreatedKey) -> None:
    kept = {
        "Idempotency-Key": "01893f4e-7c1a-7cc2-9b7a-7f3d2c1b0a99",
        "X-Iceberg-Access-Delegation": "vended-credentials",
        "If-None-Match": '"etag-1"',
        "Content-Type": "application/json",
        "User-Agent": "PyIceberg/0.12.0",
        "X-Client-Version": "1.10.0",
    }

    await call(
        gateway, "POST", f"{API}/namespaces", headers={**key_header(user), **kept}, data=b"{}"
    )

    received = gateway.upstream.last.headers
    for name, value in kept.items():
        assert received.getall(name) == [value], name


async def test_x_forwarded_headers_describe_the_client(gateway: Gateway, user: CreatedKey) -> None:
    await call(gateway, "GET", f"{API}/namespaces", headers=key_header(user))

    received = gateway.upstream.last.headers
    assert received["X-Forwarded-For"] == "127.0.0.1"
    assert received["X-Forwarded-Proto"] == "http"
    assert received["X-Forwarded-Host"] == f"{gateway.client.host}:{gateway.client.port}"


async def test_x_forwarded_for_from_an_untrusted_peer_is_replaced(
    gateway: Gateway, user: CreatedKey
) -> None:
    spoofed = {
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "https",
        "Forwarded": "for=203.0.113.7",
    }

    await call(gateway, "GET", f"{API}/namespaces", headers={**key_header(user), **spoofed})

    received = gateway.upstream.last.headers
    assert received.getall("X-Forwarded-For") == ["127.0.0.1"]
    assert received.getall("X-Forwarded-Host") == [f"{gateway.client.host}:{gateway.client.port}"]
    assert received.getall("X-Forwarded-Proto") == ["http"]
    assert "Forwarded" not in received


async def test_x_forwarded_for_from_a_trusted_proxy_is_appended(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(server=ServerSettings(trusted_proxies=("127.0.0.1",)))

    await call(
        gateway,
        "GET",
        f"{API}/namespaces",
        headers={**key_header(gateway.root), "X-Forwarded-For": "203.0.113.7, 10.0.0.2"},
    )

    received = gateway.upstream.last.headers
    assert received.getall("X-Forwarded-For") == ["203.0.113.7, 10.0.0.2, 127.0.0.1"]


async def test_upstream_receives_the_request_id_the_client_gets(
    gateway: Gateway, user: CreatedKey
) -> None:
    reply = await call(
        gateway, "GET", f"{API}/namespaces", headers={**key_header(user), "X-Request-Id": "req-42"}
    )

    assert reply.headers["X-Request-Id"] == "req-42"
    assert gateway.upstream.last.headers.getall("X-Request-Id") == ["req-42"]
