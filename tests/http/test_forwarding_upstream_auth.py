"""Forwarding: the gateway's own upstream authentication (static bearer, OAuth2 tokens)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.settings import UpstreamAuthSettings

from ..conftest import MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..helpers import bearer, key_header
from .forwarding_support import API, answer, assert_iceberg_error, call

# -- upstream authentication ---------------------------------------------------------------


async def test_static_bearer_upstream_auth_is_sent_and_never_shown_to_the_client(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(
        upstream_auth=UpstreamAuthSettings(type="bearer", token="up-secret")
    )
    created = await gateway.user()
    answer(
        gateway.upstream, b'{"error": {"message": "nope", "type": "x", "code": 403}}', status=403
    )

    replies = [
        await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created)),
        await call(
            gateway, "GET", f"{API}/namespaces", headers=bearer(created.api_key.plaintext())
        ),
        await call(gateway, "GET", f"{API}/nope/v1/config"),  # a gateway error, too
    ]

    for received in gateway.upstream.catalog_requests():
        assert received.headers.getall("Authorization") == ["Bearer up-secret"]
    assert len(gateway.upstream.catalog_requests()) == 2
    for reply in replies:
        assert "up-secret" not in reply.body.decode(errors="replace")
        assert not any("up-secret" in f"{n}: {v}" for n, v in reply.headers.items())


def _oauth_upstream(tokens_issued: list[str], refuse: set[str]) -> RecordingUpstream:
    """An upstream with its own token endpoint; requests bearing a token in ``refuse`` get 401."""

    async def responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        if recorded.raw_path == "/v1/oauth/tokens":
            tokens_issued.append(f"upstream-token-{len(tokens_issued) + 1}")
            return web.json_response(
                {"access_token": tokens_issued[-1], "token_type": "bearer", "expires_in": 3600}
            )
        if recorded.headers.get("Authorization", "").removeprefix("Bearer ") in refuse:
            return web.json_response({"error": {"message": "expired", "code": 401}}, status=401)
        return web.json_response({"namespaces": []})

    return RecordingUpstream(responder=responder)


async def test_oauth2_upstream_token_is_fetched_once_and_reused_even_by_concurrent_requests(
    make_gateway: MakeGateway,
) -> None:
    issued: list[str] = []
    upstream = _oauth_upstream(issued, refuse=set())
    gateway = await make_gateway(
        upstream=upstream,
        upstream_auth=UpstreamAuthSettings(
            type="oauth2", client_id="gw", client_secret="gw-secret", scope="catalog"
        ),
    )
    created = await gateway.user()

    replies = await asyncio.gather(
        *(call(gateway, "GET", f"{API}/namespaces", headers=key_header(created)) for _ in range(5))
    )
    replies.append(await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created)))

    assert [r.status for r in replies] == [200] * 6

    token_requests = [r for r in upstream.requests if r.raw_path == "/v1/oauth/tokens"]
    assert len(token_requests) == 1
    form = dict(x.split("=", 1) for x in token_requests[0].body.decode().split("&"))
    assert form == {
        "grant_type": "client_credentials", "client_id": "gw", "client_secret": "gw-secret",
        "scope": "catalog",
    }  # fmt: skip
    assert [r.headers["Authorization"] for r in upstream.catalog_requests()] == [
        "Bearer upstream-token-1"
    ] * 6


async def test_oauth2_upstream_401_on_a_get_fetches_a_new_token_and_retries_once(
    make_gateway: MakeGateway,
) -> None:
    issued: list[str] = []
    refused = {"upstream-token-1"}
    upstream = _oauth_upstream(issued, refuse=refused)
    gateway = await make_gateway(
        upstream=upstream, upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw")
    )
    created = await gateway.user()

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created))

    assert reply.status == 200
    assert issued == ["upstream-token-1", "upstream-token-2"]
    assert [r.headers["Authorization"] for r in upstream.catalog_requests()] == [
        "Bearer upstream-token-1",
        "Bearer upstream-token-2",
    ]


async def test_oauth2_upstream_401_twice_passes_the_second_401_through(
    make_gateway: MakeGateway,
) -> None:
    issued: list[str] = []
    upstream = _oauth_upstream(issued, refuse={"upstream-token-1", "upstream-token-2"})
    gateway = await make_gateway(
        upstream=upstream, upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw")
    )
    created = await gateway.user()

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created))

    assert reply.status == 401
    assert len(upstream.catalog_requests()) == 2
    assert "upstream-token" not in reply.body.decode()


class RefuseAll(set[str]):
    def __contains__(self, token: object) -> bool:
        return True


async def test_an_upstream_refusing_every_token_does_not_flood_its_identity_provider(
    make_gateway: MakeGateway,
) -> None:
    issued: list[str] = []
    upstream = _oauth_upstream(issued, refuse=RefuseAll())
    gateway = await make_gateway(
        upstream=upstream, upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw")
    )
    created = await gateway.user()

    for _ in range(10):
        reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created))
        assert reply.status == 401
    concurrent = await asyncio.gather(
        *(call(gateway, "GET", f"{API}/namespaces", headers=key_header(created)) for _ in range(10))
    )
    assert {reply.status for reply in concurrent} == {401}

    # The first token, and one renewal after its 401; the renewed one refused too: no more.
    assert issued == ["upstream-token-1", "upstream-token-2"]


async def test_a_failing_upstream_token_endpoint_is_asked_again_only_after_a_backoff(
    make_gateway: MakeGateway,
) -> None:
    fetches: list[float] = []

    async def responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        if recorded.raw_path == "/v1/oauth/tokens":
            fetches.append(0)
            return web.json_response({"error": "invalid_client"}, status=401)
        return web.json_response({"namespaces": []})

    gateway = await make_gateway(
        upstream=RecordingUpstream(responder=responder),
        upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw"),
    )
    created = await gateway.user()
    for _ in range(10):
        reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(created))
        assert_iceberg_error(reply, 502)
    assert len(fetches) == 1
    assert gateway.upstream.catalog_requests() == []


async def test_oauth2_upstream_401_on_a_request_with_a_body_is_not_replayed(
    make_gateway: MakeGateway,
) -> None:
    issued: list[str] = []
    upstream = _oauth_upstream(issued, refuse={"upstream-token-1"})
    gateway = await make_gateway(
        upstream=upstream, upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw")
    )
    created = await gateway.user()

    reply = await call(
        gateway,
        "POST",
        f"{API}/namespaces",
        headers=key_header(created),
        data=b'{"namespace":["a"]}',
    )

    assert reply.status == 401
    assert len(upstream.catalog_requests()) == 1
