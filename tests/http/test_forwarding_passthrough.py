"""Forwarding: method, path, query, bodies and responses pass through byte-exact."""

from __future__ import annotations

import random

import pytest
from aiohttp import web

from gateway.identity.service_users import CreatedKey

from ..conftest import Gateway
from ..fakes import Recorded
from ..helpers import key_header
from .forwarding_support import API, MIB, answer, call, chunks


def random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


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
