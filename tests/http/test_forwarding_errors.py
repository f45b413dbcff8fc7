"""Forwarding through the real app to the recording fake upstream: what the upstream receives,
what the client gets back, upstream auth, rewrites, errors and refused input."""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.identity.service_users import CreatedKey
from gateway.proxy.headers import normalize_header_name
from gateway.settings import CatalogSettings, ServerSettings, UpstreamAuthSettings
from gateway.state import AUTHENTICATOR
from gateway.store import AuditRecord

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..helpers import bearer, key_header
from ..rawhttp import exchange

API = "/v1/default/v1"  # the seed's uri ".../v1/default/" plus the "v1/" clients append
ROLE_HEADERS = (
    "X-Pangolin-Principal-Id",
    "X-Pangolin-Principal-Name",
    "X-Pangolin-Principal-Type",
    "X-Pangolin-Role",
    "X-Pangolin-Tenant",
)
INT64_MAX = 9223372036854775807
SNAPSHOT_ID = 2663087109101640605
MIB = 1024 * 1024


# -- helpers -------------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_url(gateway: Gateway, path: str) -> URL:
    """The gateway URL for ``path`` exactly as written (no normalization or re-quoting)."""
    return URL(str(gateway.client.make_url("/")).rstrip("/") + path, encoded=True)


async def call(
    gateway: Gateway,
    method: str,
    path: str,
    *,
    headers: Any = None,
    data: Any = None,
) -> Reply:
    async with gateway.client.session.request(
        method, raw_url(gateway, path), headers=headers, data=data, allow_redirects=False
    ) as resp:
        return Reply(resp.status, resp.headers, await resp.read())


def answer(
    upstream: RecordingUpstream,
    body: bytes = b"",
    *,
    status: int = 200,
    content_type: str | None = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    """Make the fake upstream answer every request with this response."""

    async def responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.Response(status=status, body=body, headers=headers)
        if content_type is not None:
            response.content_type = content_type
        return response

    upstream.responder = responder


def answer_json(upstream: RecordingUpstream, doc: Any, **kwargs: Any) -> None:
    answer(upstream, json.dumps(doc).encode(), **kwargs)


def assert_iceberg_error(reply: Reply, status: int) -> None:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == status
    assert isinstance(error["message"], str) and isinstance(error["type"], str)


def assert_secret_absent(recorded: Recorded, secret: str) -> None:
    for name, value in recorded.headers.items():
        assert secret not in name and secret not in value, name
    assert secret.encode() not in recorded.body


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """A request body without Content-Length (sent chunked)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@dataclass
class EnteredUpstream(RecordingUpstream):
    """Also notes when a request reaches the upstream, before its body has been read."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.entered.set()
        return await super()._handle(request)


def random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


@pytest.fixture
async def user(gateway: Gateway) -> CreatedKey:
    return await gateway.user("etl")


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


# -- method, path, query and body -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        (
            f"{API}/warehouse/namespaces/a%1Fb/tables?pageToken=&pageSize=10",
            "/v1/warehouse/namespaces/a%1Fb/tables?pageToken=&pageSize=10",
        ),
        (f"{API}/my%2Fwh/namespaces?parent=a%1fb", "/v1/my%2Fwh/namespaces?parent=a%1fb"),
        (f"{API}/wh/namespaces/ns/tables/t%20x?snapshots=refs", None),
        ("/v1/namespaces", "/v1/namespaces"),
        ("/v1/namespaces/v1/tables", "/v1/namespaces/v1/tables"),
        ("/v1/wh/namespaces/v1", "/v1/wh/namespaces/v1"),
    ],
    ids=["namespace-separator", "encoded-slash-prefix", "encoded-table", "root", "ns-v1", "v1"],
)
async def test_raw_path_and_query_reach_the_upstream_exactly(
    gateway: Gateway, user: CreatedKey, path: str, upstream_path: str | None
) -> None:
    reply = await call(gateway, "GET", path, headers=key_header(user))

    assert reply.status == 200
    expected = upstream_path or path.removeprefix("/v1/default")
    assert gateway.upstream.last.raw_path == expected


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_request_bodies_reach_the_upstream_byte_exact(
    gateway: Gateway, user: CreatedKey, method: str
) -> None:
    body = bytes(range(256)) * 4 + b'{"\xff\xfe not utf-8 \xc3\x28}'

    reply = await call(
        gateway, method, f"{API}/namespaces/ns/tables/t", headers=key_header(user), data=body
    )

    assert reply.status == 200
    received = gateway.upstream.last
    assert (received.method, received.body) == (method, body)
    assert received.headers["Content-Length"] == str(len(body))


async def test_chunked_request_body_of_several_megabytes_is_streamed_byte_exact(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = random_bytes(3 * MIB + 17)

    reply = await call(
        gateway,
        "POST",
        f"{API}/namespaces/ns/tables/t",
        headers=key_header(user),
        data=chunks(body),
    )

    assert reply.status == 200
    assert gateway.upstream.last.body == body


async def test_head_and_bodiless_delete_are_forwarded(gateway: Gateway, user: CreatedKey) -> None:
    answer(gateway.upstream, status=204, content_type=None)

    head = await call(gateway, "HEAD", f"{API}/namespaces/ns", headers=key_header(user))
    delete = await call(gateway, "DELETE", f"{API}/namespaces/ns", headers=key_header(user))

    assert (head.status, delete.status) == (204, 204)
    methods = [(r.method, r.raw_path, r.body) for r in gateway.upstream.catalog_requests()]
    assert methods == [("HEAD", "/v1/namespaces/ns", b""), ("DELETE", "/v1/namespaces/ns", b"")]


# -- responses -----------------------------------------------------------------------------


async def test_large_streamed_response_reaches_the_client_byte_exact(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = random_bytes(5 * MIB + 3)

    async def stream(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        for start in range(0, len(body), 100_000):
            await response.write(body[start : start + 100_000])
        await response.write_eof()
        return response

    gateway.upstream.responder = stream

    reply = await call(
        gateway, "GET", f"{API}/namespaces/ns/tables/t/plan/p1", headers=key_header(user)
    )

    assert reply.status == 200
    assert reply.body == body


async def test_status_and_upstream_headers_are_passed_to_the_client(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = b'{"metadata-location": "s3://b/m.json", "metadata": {}}'
    answer(gateway.upstream, body, status=201, headers={"ETag": '"v7"', "X-Upstream": "yes"})

    reply = await call(gateway, "POST", f"{API}/namespaces/ns/tables", headers=key_header(user))

    assert reply.status == 201
    assert reply.body == body
    assert reply.headers["ETag"] == '"v7"'
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.headers["X-Upstream"] == "yes"


async def test_hop_by_hop_response_headers_are_dropped(gateway: Gateway, user: CreatedKey) -> None:
    hop_by_hop = {
        "Connection": "keep-alive, X-Upstream-Hop",
        "X-Upstream-Hop": "1",
        "Keep-Alive": "timeout=99",
        "Proxy-Authenticate": 'Basic realm="upstream"',
        "Trailer": "X-Checksum",
        "Upgrade": "h2c",
    }
    answer(gateway.upstream, b"{}", headers={**hop_by_hop, "X-Kept": "1"})

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(user))

    assert reply.headers["X-Kept"] == "1"
    for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate", "Trailer", "Upgrade"):
        assert name not in reply.headers, name


async def test_upstream_redirects_are_passed_on_not_followed(
    gateway: Gateway, user: CreatedKey
) -> None:
    answer(gateway.upstream, status=307, headers={"Location": "/v1/oauth/tokens"})

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(user))

    assert (reply.status, reply.headers["Location"]) == (307, "/v1/oauth/tokens")
    assert [r.raw_path for r in gateway.upstream.requests] == ["/v1/namespaces"]


async def test_not_modified_passes_through(gateway: Gateway, user: CreatedKey) -> None:
    answer(gateway.upstream, status=304, content_type=None, headers={"ETag": '"v7"'})

    reply = await call(
        gateway,
        "GET",
        f"{API}/namespaces/ns/tables/t",
        headers={**key_header(user), "If-None-Match": '"v7"'},
    )

    assert (reply.status, reply.body, reply.headers["ETag"]) == (304, b"", '"v7"')


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (
            404,
            b'{"error": {"message": "Table does not exist: ns.t", '
            b'"type": "NoSuchTableException", "code": 404}}',
            "application/json",
        ),
        (
            409,
            b'{"error": {"message": "conflict", "type": "CommitFailedException", "code": 409}}',
            "application/json",
        ),
        (
            401,
            b'{"error": {"message": "upstream says no", "type": "x", "code": 401}}',
            "application/json",
        ),
        (500, b"Internal Server Error: boom", "text/plain"),
        (503, b"<html>maintenance</html>", "text/html"),
    ],
)
async def test_upstream_errors_pass_through_unchanged(
    gateway: Gateway, user: CreatedKey, status: int, body: bytes, content_type: str
) -> None:
    answer(gateway.upstream, body, status=status, content_type=content_type)

    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(user))

    assert (reply.status, reply.body) == (status, body)
    assert reply.headers["Content-Type"].startswith(content_type)


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


# -- /v1/config and table responses --------------------------------------------------------


UPSTREAM_CONFIG = {
    "defaults": {
        "uri": "http://upstream:8181/",
        "oauth2-server-uri": "http://upstream:8181/v1/oauth/tokens",
        "token": "upstream-token",
        "credential": "id:secret",
        "header.X-Foo": "bar",
        "clients": "4",
    },
    "overrides": {"prefix": "warehouse", "uri": "http://upstream:8181/", "token": "t"},
    "endpoints": ["GET /v1/{prefix}/namespaces"],
}


async def test_config_response_loses_redirecting_and_auth_keys(
    gateway: Gateway, user: CreatedKey
) -> None:
    answer_json(gateway.upstream, UPSTREAM_CONFIG, headers={"ETag": '"c1"'})

    reply = await call(gateway, "GET", "/v1/default/v1/config", headers=key_header(user))

    assert reply.status == 200
    assert reply.json() == {
        "defaults": {"clients": "4"},
        "overrides": {"prefix": "warehouse"},
        "endpoints": ["GET /v1/{prefix}/namespaces"],
    }
    assert "ETag" not in reply.headers  # the representation changed
    assert reply.headers["Content-Length"] == str(len(reply.body))


async def test_root_mounted_config_is_rewritten_too(gateway: Gateway, user: CreatedKey) -> None:
    answer_json(gateway.upstream, UPSTREAM_CONFIG)

    reply = await call(gateway, "GET", "/v1/config", headers=key_header(user))

    assert "uri" not in reply.json()["overrides"]


async def test_config_response_without_anything_to_strip_is_passed_byte_for_byte(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = b'{ "defaults" : {"prefix":"wh"},\n "overrides": {}, "n": 1.50 }'
    answer(gateway.upstream, body, headers={"ETag": '"c1"'})

    reply = await call(gateway, "GET", "/v1/default/v1/config", headers=key_header(user))

    assert reply.body == body
    assert reply.headers["ETag"] == '"c1"'


@pytest.mark.parametrize(
    ("query", "upstream_query"),
    [
        ("", "warehouse=wh%2F1"),
        ("?warehouse=", "warehouse=wh%2F1"),
        ("?warehouse=mine", "warehouse=wh%2F1"),
        ("?warehouse=mine&warehouse=other", "warehouse=wh%2F1"),
        ("?foo=1&warehouse=", "warehouse=wh%2F1"),
        ("?warehouse", "warehouse=wh%2F1"),
        ("?foo=1", "warehouse=wh%2F1"),
        # Names as the upstream's parser may read them: decoded, "+" as space, any case.
        ("?%77arehouse=other", "warehouse=wh%2F1"),
        ("?ware%68ouse=other&warehouse=mine", "warehouse=wh%2F1"),
        ("?WAREHOUSE=other", "warehouse=wh%2F1"),
        ("?warehouse%00=other", "warehouse=wh%2F1"),
        ("?+warehouse=other", "warehouse=wh%2F1"),
        ("?warehouse;x=other", "warehouse=wh%2F1"),
    ],
)
async def test_config_always_names_the_catalogs_own_warehouse(
    make_gateway: MakeGateway, query: str, upstream_query: str
) -> None:
    catalog = CatalogSettings(warehouse="wh/1", prefix="wh1")
    gateway = await make_gateway(catalogs={"default": catalog})

    await call(gateway, "GET", f"/v1/default/v1/config{query}", headers=key_header(gateway.root))

    assert gateway.upstream.last.raw_path == f"/v1/config?{upstream_query}"


async def test_config_without_a_catalog_warehouse_forwards_the_query_unchanged(
    gateway: Gateway, user: CreatedKey
) -> None:
    await call(gateway, "GET", "/v1/default/v1/config?warehouse=", headers=key_header(user))

    assert gateway.upstream.last.raw_path == "/v1/config?warehouse="


def load_table_result(config: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata-location": "s3://bucket/ns/t/metadata/00001.metadata.json",
        "metadata": {
            "current-snapshot-id": SNAPSHOT_ID,
            "snapshots": [{"snapshot-id": SNAPSHOT_ID, "sequence-number": INT64_MAX}],
        },
        "config": config,
    }


STORAGE = {"s3.endpoint": "http://127.0.0.1:8333", "s3.access-key-id": "AK", "s3.region": "r"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "namespaces/ns/tables/t"),
        ("POST", "namespaces/ns/tables"),
        ("GET", "wh/namespaces/a%1Fb/tables/t"),
        ("POST", "wh/namespaces/ns/register"),
        ("GET", "wh/namespaces/ns/views/v"),
    ],
)
async def test_table_responses_lose_config_token_and_keep_storage_keys_and_int64s(
    gateway: Gateway, user: CreatedKey, method: str, path: str
) -> None:
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted", **STORAGE}))

    reply = await call(gateway, method, f"{API}/{path}", headers=key_header(user), data=b"{}")

    assert reply.status == 200
    assert reply.json() == load_table_result(STORAGE)
    assert b"upstream-minted" not in reply.body
    assert str(SNAPSHOT_ID).encode() in reply.body and str(INT64_MAX).encode() in reply.body


async def test_table_response_without_a_token_is_passed_byte_for_byte(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = (
        b'{"metadata-location" : "s3://b/m.json",\n "metadata": {"current-snapshot-id": '
        b'2663087109101640605, "x": 9223372036854775807, "f": 1.0e0},'
        b' "config": {"s3.a": "\\u00fc"}}'
    )
    answer(gateway.upstream, body, headers={"ETag": '"t1"'})

    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(user))

    assert reply.body == body
    assert reply.headers["ETag"] == '"t1"'


async def test_gzip_encoded_table_response_is_still_stripped_of_its_token(
    gateway: Gateway, user: CreatedKey
) -> None:
    """A client asking for gzip must not get an upstream token the gateway could not read."""
    body = json.dumps(load_table_result({"token": "upstream-minted", **STORAGE})).encode()

    async def compressing(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.Response(body=body, content_type="application/json")
        response.enable_compression()  # compresses only if the request accepts gzip
        return response

    gateway.upstream.responder = compressing

    reply = await call(
        gateway,
        "GET",
        f"{API}/namespaces/ns/tables/t",
        headers={**key_header(user), "Accept-Encoding": "gzip"},
    )

    assert reply.status == 200
    assert reply.json() == load_table_result(STORAGE)


async def test_upstream_ignoring_accept_encoding_on_a_table_route_is_refused_not_passed(
    gateway: Gateway, user: CreatedKey
) -> None:
    """A body the gateway cannot inspect must not reach the client unfiltered."""
    body = gzip.compress(json.dumps(load_table_result({"token": "upstream-minted"})).encode())
    answer(gateway.upstream, body, headers={"Content-Encoding": "gzip"})

    reply = await call(
        gateway,
        "GET",
        f"{API}/namespaces/ns/tables/t",
        headers={**key_header(user), "Accept-Encoding": "gzip"},
    )

    assert_iceberg_error(reply, 502)
    assert gateway.upstream.last.headers["Accept-Encoding"] == "identity"


async def test_accept_encoding_is_forwarded_on_routes_that_are_not_rewritten(
    gateway: Gateway, user: CreatedKey
) -> None:
    headers = {**key_header(user), "Accept-Encoding": "gzip"}

    await call(gateway, "GET", f"{API}/namespaces/ns/tables/t/plan/p1", headers=headers)

    assert gateway.upstream.last.headers["Accept-Encoding"] == "gzip"


@pytest.mark.parametrize("content_type", ["application/octet-stream", "text/plain"])
async def test_table_token_is_stripped_whatever_content_type_the_upstream_declares(
    gateway: Gateway, user: CreatedKey, content_type: str
) -> None:
    body = json.dumps(load_table_result({"token": "upstream-minted", **STORAGE})).encode()
    answer(gateway.upstream, body, content_type=content_type)

    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(user))

    assert reply.json() == load_table_result(STORAGE)


async def test_table_token_is_stripped_under_a_multi_segment_prefix(
    gateway: Gateway, user: CreatedKey
) -> None:
    # Java and PyIceberg paste the config's prefix verbatim, slashes included.
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted", **STORAGE}))

    reply = await call(
        gateway,
        "GET",
        f"{API}/catalogs/123456789012/namespaces/ns/tables/t",
        headers=key_header(user),
    )

    assert reply.json() == load_table_result(STORAGE)


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
    upstream_done = asyncio.Event()

    async def endless(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        try:
            while True:  # until the gateway lets go of this connection
                await response.write(b"x" * 256 * 1024)
        except ConnectionError:
            return response
        finally:
            upstream_done.set()

    gateway.upstream.responder = endless
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

    reply = await call(
        gateway, "POST", f"{API}/namespaces", headers=key_header(gateway.root), data=body()
    )

    assert_iceberg_error(reply, 413)
    assert upstream.requests == []  # it never read a complete request


async def test_body_of_exactly_max_body_bytes_is_forwarded(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(server=ServerSettings(max_body_bytes=1024))

    reply = await call(
        gateway, "POST", f"{API}/namespaces", headers=key_header(gateway.root), data=b"x" * 1024
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


# -- catalogs and tenants ------------------------------------------------------------------


async def gateway_with_acme(make_gateway: MakeGateway) -> Gateway:
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(), "acme": CatalogSettings(tenant="acme")}
    )
    await gateway.store.insert_tenant(
        "acme",
        AuditRecord(
            at=gateway.clock(), actor="test", action="tenant.create", target_type="tenant",
            target_id=None, tenant_id=None, outcome="success",
        ),
    )  # fmt: skip
    return gateway


async def test_catalog_of_another_tenant_is_403(make_gateway: MakeGateway) -> None:
    gateway = await gateway_with_acme(make_gateway)
    default_user = await gateway.user("etl")
    acme_user = await gateway.user("acme-etl", tenant="acme")

    assert_iceberg_error(
        await call(gateway, "GET", "/v1/acme/v1/namespaces", headers=key_header(default_user)), 403
    )
    assert_iceberg_error(
        await call(gateway, "GET", "/v1/default/v1/namespaces", headers=key_header(acme_user)), 403
    )
    assert_iceberg_error(
        await call(gateway, "GET", "/v1/namespaces", headers=key_header(acme_user)), 403
    )
    assert gateway.upstream.requests == []
    reply = await call(gateway, "GET", "/v1/acme/v1/namespaces", headers=key_header(acme_user))
    assert reply.status == 200
    assert gateway.upstream.last.headers["X-Pangolin-Tenant"] == "acme"


async def test_root_may_use_the_catalogs_of_every_tenant(make_gateway: MakeGateway) -> None:
    gateway = await gateway_with_acme(make_gateway)

    for path in ("/v1/acme/v1/namespaces", "/v1/default/v1/namespaces", "/v1/namespaces"):
        assert (await call(gateway, "GET", path, headers=key_header(gateway.root))).status == 200
    assert len(gateway.upstream.catalog_requests()) == 3


async def test_catalog_list_shows_only_permitted_catalogs_with_client_settings(
    make_gateway: MakeGateway,
) -> None:
    gateway = await gateway_with_acme(make_gateway)
    acme_user = await gateway.user("acme-etl", tenant="acme")
    default_user = await gateway.user("etl")
    base = f"http://{gateway.client.host}:{gateway.client.port}"

    acme = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(acme_user))
    default = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(default_user))
    root = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(gateway.root))

    assert acme.json() == {
        "catalogs": [
            {
                "name": "acme", "tenant": "acme", "default": False, "uri": f"{base}/v1/acme/",
                "oauth2-server-uri": f"{base}/v1/acme/v1/oauth/tokens",
            }
        ]
    }  # fmt: skip
    assert default.json() == {
        "catalogs": [
            {
                "name": "default", "tenant": "default", "default": True,
                "uri": f"{base}/v1/default/",
                "oauth2-server-uri": f"{base}/v1/default/v1/oauth/tokens",
            }
        ]
    }  # fmt: skip
    assert root.json()["catalogs"] == acme.json()["catalogs"] + default.json()["catalogs"]


async def test_catalog_list_without_a_credential_is_401(gateway: Gateway) -> None:
    reply = await call(gateway, "GET", "/api/v1/catalogs")

    assert_iceberg_error(reply, 401)


# -- methods, path forms and filters (the security review's findings) ------------------------


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "MKCOL", "PUT", "PATCH", "OPTIONS"])
async def test_methods_iceberg_does_not_use_get_405_before_authentication_and_go_nowhere(
    gateway: Gateway, user: CreatedKey, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    authenticator = gateway.app[AUTHENTICATOR]
    real = authenticator.authenticate

    async def counting(headers: Any) -> Any:
        calls.append(headers)
        return await real(headers)

    monkeypatch.setattr(authenticator, "authenticate", counting)

    reply = await call(gateway, method, f"{API}/namespaces", headers=key_header(user))

    assert_iceberg_error(reply, 405)
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
        "POST",
        "DELETE",
    }
    assert calls == []  # refused before any authentication cost
    assert gateway.upstream.requests == []


async def test_a_lower_case_method_is_405(gateway: Gateway, user: CreatedKey) -> None:
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    raw = f"get {API}/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key: {user.api_key.plaintext()}"
    reply = await exchange(server.host, server.port, raw.encode() + b"\r\n\r\n")
    assert reply.status == 405
    assert "GET" in (reply.header("Allow") or "")
    assert reply.json()["error"]["code"] == reply.status
    assert gateway.upstream.requests == []


async def test_a_method_the_route_does_not_take_is_405_with_the_routes_methods(
    gateway: Gateway, user: CreatedKey
) -> None:
    reply = await call(gateway, "DELETE", f"{API}/config", headers=key_header(user))
    assert_iceberg_error(reply, 405)
    assert reply.headers["Allow"] == "GET"
    reply = await call(gateway, "GET", f"{API}/tables/rename", headers=key_header(user))
    assert reply.headers["Allow"] == "POST"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/namespaces/ns/tables//t",
        f"{API}/namespaces//ns/tables/t",
        f"{API}/namespaces/ns/tables/t/",
        f"{API}/namespaces/ns;x/tables/t",
        f"{API}/config/",
        f"{API}/config;x",
        f"{API}//config",
        "/v1//config",
        f"{API}/namespaces/ns%2Ftables%2Ft",
        "/%761/default/v1/namespaces",
    ],
)
@pytest.mark.parametrize("catalog", [CatalogSettings(), CatalogSettings(warehouse="wh")])
async def test_path_forms_a_lenient_upstream_reads_differently_are_400_and_go_nowhere(
    make_gateway: MakeGateway, path: str, catalog: CatalogSettings
) -> None:
    gateway = await make_gateway(catalogs={"default": catalog})
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted"}))

    reply = await call(gateway, "GET", path, headers=key_header(gateway.root))

    assert_iceberg_error(reply, 400)
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/v1/default/v1/%6Eamespaces", "/v1/wh/namespaces"),
        ("/v1/default/v1/%77h/namespaces/ns%1ftables", "/v1/wh/namespaces/ns%1Ftables"),
        ("/v1/%6eamespaces/line%0Abreak", "/v1/wh/namespaces/line%0Abreak"),
    ],
)
async def test_paths_are_normalised_once_and_forwarded_in_that_form(
    make_gateway: MakeGateway, path: str, upstream_path: str
) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(warehouse="wh")})

    reply = await call(gateway, "GET", path, headers=key_header(gateway.root))

    assert reply.status == 200
    assert gateway.upstream.last.raw_path == upstream_path


@pytest.mark.parametrize("status", [200, 201, 206, 400, 404, 409, 500, 503])
async def test_no_answer_status_skips_the_table_credential_filter(
    gateway: Gateway, user: CreatedKey, status: int
) -> None:
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted"}), status=status)

    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(user))

    assert reply.status == status
    assert b"upstream-minted" not in reply.body


@pytest.mark.parametrize("status", [200, 206, 404, 500])
async def test_no_answer_status_skips_the_config_filter(
    gateway: Gateway, user: CreatedKey, status: int
) -> None:
    answer_json(gateway.upstream, UPSTREAM_CONFIG, status=status)

    reply = await call(gateway, "GET", f"{API}/config", headers=key_header(user))

    assert reply.status == status
    assert b"upstream-token" not in reply.body and b"upstream:8181" not in reply.body


async def test_answers_built_from_the_host_header_are_never_stored_by_a_shared_cache(
    gateway: Gateway, user: CreatedKey
) -> None:
    forged = {**key_header(user), "Host": "attacker.example"}
    catalogs = await call(gateway, "GET", "/api/v1/catalogs", headers=forged)
    metadata = await call(gateway, "GET", "/.well-known/oauth-authorization-server", headers=forged)
    assert "attacker.example" in catalogs.body.decode()  # public_url is unset here
    for reply in (catalogs, metadata):
        assert reply.status == 200
        assert reply.headers["Cache-Control"] == "no-store"
