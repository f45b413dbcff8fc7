"""Forwarding: errors the gateway makes itself (503, 504, 413, 400, 404, 401), request ids."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings, ServerSettings

from ..conftest import Gateway, MakeGateway
from ..fakes import RecordingUpstream
from ..helpers import bearer, key_header
from .forwarding_support import (
    API,
    MIB,
    UPSTREAM_CONFIG,
    answer_json,
    assert_iceberg_error,
    call,
    chunks,
    endless_upstream,
)

COMMIT = "namespaces/ns/tables/t"  # updateTable: a route whose request body streams


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class EnteredUpstream(RecordingUpstream):
    """Also notes when a request reaches the upstream, before its body has been read."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.entered.set()
        return await super()._handle(request)


# -- gateway-generated errors --------------------------------------------------------------


async def test_unreachable_upstream_is_503_and_the_log_names_the_cause(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(upstream=closed_port_url())})
    key = gateway.root.api_key.plaintext()

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    assert_iceberg_error(reply, 503)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.proxy.forwarder"]
    assert lines == ["upstream unreachable: ConnectionRefusedError"]
    assert key not in caplog.text


async def test_upstream_that_never_answers_is_504(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(timeout_seconds=0.5)})
    async with gateway.upstream.stuck():
        reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    assert_iceberg_error(reply, 504)


async def test_client_disconnecting_mid_stream_releases_the_upstream_and_the_next_request_works(
    gateway: Gateway, user: CreatedKey
) -> None:
    upstream_done = endless_upstream(gateway)
    async with aiohttp.ClientSession() as session:
        url = gateway.client.make_url(f"{API}/namespaces/ns/tables/t/plan/p")
        async with session.get(url, headers=key_header(user)) as resp:
            assert resp.status == 200
            await resp.content.readexactly(MIB)
            # Leaving the block unread closes the connection mid-stream.

    await asyncio.wait_for(upstream_done.wait(), timeout=10)
    answer_json(gateway.upstream, {"namespaces": []})
    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(user))
    assert (reply.status, reply.json()) == (200, {"namespaces": []})


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_body_over_max_body_bytes_is_413_and_nothing_is_forwarded(
    make_gateway: MakeGateway, chunked: bool
) -> None:
    gateway = await make_gateway(server=ServerSettings(max_body_bytes=1024))
    body = b"x" * 1025

    reply = await call(
        gateway,
        "POST",
        f"{API}/namespaces",
        headers=key_header(gateway.root),
        data=chunks(body, 100) if chunked else body,
    )

    assert_iceberg_error(reply, 413)
    assert gateway.upstream.requests == []


async def test_chunked_body_passing_the_limit_mid_stream_is_413_and_never_completes_upstream(
    make_gateway: MakeGateway,
) -> None:
    # Chunked bodies stream, so the upstream may see a prefix; the gateway must then cut it off
    # rather than let the upstream act on a request whose tail never arrived.
    upstream = EnteredUpstream()
    gateway = await make_gateway(upstream=upstream, server=ServerSettings(max_body_bytes=1024))

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await upstream.entered.wait()  # the first part has reached the upstream
        yield b"x" * 1000

    # A commit: its body streams (a create's is read whole first, to judge the name in it).
    reply = await call(
        gateway, "POST", f"{API}/{COMMIT}", headers=key_header(gateway.root), data=body()
    )

    assert_iceberg_error(reply, 413)
    assert upstream.requests == []  # it never read a complete request


async def test_body_of_exactly_max_body_bytes_is_forwarded(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(server=ServerSettings(max_body_bytes=1024))

    reply = await call(
        gateway, "POST", f"{API}/{COMMIT}", headers=key_header(gateway.root), data=b"x" * 1024
    )

    assert reply.status == 200
    assert gateway.upstream.last.body == b"x" * 1024


@pytest.mark.parametrize(
    "path",
    [
        "/v1/default/v1/namespaces/../oauth/tokens",
        "/v1/default/v1/namespaces/%2e%2e/oauth/tokens",
        "/v1/default/v1/namespaces/%2E./config",
        "/v1/namespaces/ns/./tables",
        "/v1/default/../v1/config",
        # Servlet containers (Tomcat, Jetty) drop ";parameters" from segments: "..;" is "..".
        "/v1/default/v1/namespaces/..;/oauth/tokens",
        "/v1/default/v1/namespaces/..;x=1/..;/config",
        "/v1/default/v1/namespaces/%2e%2e%3b/oauth/tokens",
        # Some servers read a backslash as a slash.
        "/v1/default/v1/namespaces/..%5Coauth%5Ctokens",
    ],
)
async def test_dot_segments_are_400_and_nothing_is_forwarded(
    gateway: Gateway, user: CreatedKey, path: str
) -> None:
    reply = await call(gateway, "GET", path, headers=key_header(user))

    assert_iceberg_error(reply, 400)
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/default/v1/oauth;jsessionid=1/tokens",
        "/v1/default/v1/oauth/tokens;x",
        "/v1/oauth%3B/tokens",
        "/v1/default/v1/oauth%5Ctokens",
    ],
)
async def test_token_endpoint_variants_a_lenient_upstream_would_accept_are_never_forwarded(
    gateway: Gateway, user: CreatedKey, path: str
) -> None:
    form = {"grant_type": "client_credentials", "client_id": user.user.id,
            "client_secret": user.api_key.plaintext()}  # fmt: skip

    await call(gateway, "POST", path, headers=bearer(await gateway.token(user)), data=form)

    assert gateway.upstream.requests == []


async def test_unknown_catalog_is_404_after_authentication(
    gateway: Gateway, user: CreatedKey
) -> None:
    anonymous = await call(gateway, "GET", "/v1/nope/v1/config")
    known = await call(gateway, "GET", "/v1/nope/v1/config", headers=key_header(user))

    assert_iceberg_error(anonymous, 401)
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert_iceberg_error(known, 404)
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "pgl_nope"}, {"Authorization": "Bearer None"}, {"Authorization": "Basic x"}],
)
async def test_catalog_routes_without_a_valid_credential_are_401(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    reply = await call(gateway, "GET", f"{API}/namespaces", headers=headers)

    assert_iceberg_error(reply, 401)
    assert gateway.upstream.requests == []


async def test_gateway_errors_carry_a_request_id(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(upstream=closed_port_url())},
        server=ServerSettings(max_body_bytes=1),
    )
    root = key_header(gateway.root)

    replies = {
        401: await call(gateway, "GET", f"{API}/namespaces"),
        400: await call(gateway, "GET", f"{API}/namespaces/../config", headers=root),
        404: await call(gateway, "GET", "/v1/nope/v1/config", headers=root),
        413: await call(gateway, "POST", f"{API}/namespaces", headers=root, data=b"{}"),
        503: await call(gateway, "GET", f"{API}/namespaces", headers=root),
    }

    for status, reply in replies.items():
        assert_iceberg_error(reply, status)
    assert all(reply.headers.get("X-Request-Id") for reply in replies.values())


async def test_streamed_response_carries_the_gateways_request_id_not_the_upstreams(
    gateway: Gateway, user: CreatedKey
) -> None:
    answer_json(gateway.upstream, {"namespaces": []}, headers={"X-Request-Id": "upstream-id"})

    reply = await call(
        gateway, "GET", f"{API}/namespaces", headers={**key_header(user), "X-Request-Id": "req-7"}
    )

    assert reply.headers.getall("X-Request-Id") == ["req-7"]


async def test_streamed_and_rewritten_responses_carry_a_request_id(
    gateway: Gateway, user: CreatedKey
) -> None:
    streamed = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(user))
    answer_json(gateway.upstream, UPSTREAM_CONFIG)
    rewritten = await call(gateway, "GET", f"{API}/config", headers=key_header(user))

    assert streamed.headers.get("X-Request-Id")
    assert rewritten.headers.get("X-Request-Id")
