"""Both upstream transports (``proxy.transport``): the lean ``UpstreamClient`` and aiohttp's
client (``AiohttpTransport``, ``client = "aiohttp"``) behind the real app, held to the same
forwarding behaviour: what the upstream receives (byte-exact bodies, the gateway's own framing,
no client credential, nothing aiohttp would add on its own), streaming, keep-alive, the
Iceberg errors for a down, silent or broken upstream, the size limits and ``/readyz``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httptools
import pytest
from aiohttp import web

from gateway.proxy import AiohttpTransport, UpstreamClient, UpstreamTransport
from gateway.settings import CatalogSettings, Settings, UpstreamAuthSettings, validate
from gateway.state import CONFIGURED

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..helpers import bearer, key_header
from ..rawhttp import exchange
from .forwarding_support import (
    API,
    MIB,
    answer,
    answer_json,
    assert_iceberg_error,
    call,
    chunks,
    endless_upstream,
    load_table_result,
)
from .test_request_framing import NAMESPACE, padded, send

CLIENTS = ("lean", "aiohttp")
TRANSPORT_TYPES: dict[str, type[Any]] = {"lean": UpstreamClient, "aiohttp": AiohttpTransport}


def random_bytes(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def closed_port_url() -> str:
    """A loopback URL nothing listens on (the port was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_secret_absent(recorded: Recorded, secret: str) -> None:
    for name, value in recorded.headers.items():
        assert secret not in name and secret not in value, name
    assert secret.encode() not in recorded.body


@dataclass
class EnteredUpstream(RecordingUpstream):
    """Also notes when a request reaches the upstream, before its body has been read."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.entered.set()
        return await super()._handle(request)


def _both_satisfy_the_seam(lean: UpstreamClient, aio: AiohttpTransport) -> list[UpstreamTransport]:
    """Never called: mypy checks that each implementation is an ``UpstreamTransport``."""
    return [lean, aio]


@pytest.fixture(params=CLIENTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Which client the gateway under test forwards with."""
    return str(request.param)


async def gateway_for(
    make_gateway: MakeGateway, client: str, upstream: str = "", **catalog: Any
) -> Gateway:
    """A gateway whose one catalog forwards with ``client`` (to ``upstream``, by default the
    fixture's recording upstream)."""
    settings = CatalogSettings(upstream=upstream, client=client, **catalog)
    gateway = await make_gateway(catalogs={"default": settings})
    assert isinstance(
        gateway.app[CONFIGURED].forwarders["default"].transport, TRANSPORT_TYPES[client]
    )
    return gateway


# -- a raw upstream: the request heads exactly as they arrive ----------------------------------


@dataclass
class Message:
    method: str
    url: str
    headers: list[tuple[str, str]]  # names lower-cased, in order, repeats kept
    body: bytes

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"


@dataclass
class RawUpstream:
    """Parses what arrives with llhttp (so a smuggled second request would show as one more
    message) and answers every message with ``{}``, or, with ``drop``, closes the connection
    after reading a request, without answering."""

    messages: list[Message] = field(default_factory=list)
    connections: int = 0
    drop: bool = False
    server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        upstream = self
        url, body = bytearray(), bytearray()
        headers: list[tuple[str, str]] = []

        class Callbacks:
            def on_url(self, data: bytes) -> None:
                url.extend(data)

            def on_header(self, name: bytes, value: bytes) -> None:
                headers.append((name.decode().lower(), value.decode()))

            def on_body(self, data: bytes) -> None:
                body.extend(data)

            def on_message_complete(self) -> None:
                method = parser.get_method().decode()
                upstream.messages.append(Message(method, url.decode(), list(headers), bytes(body)))
                url.clear()
                body.clear()
                headers.clear()
                if upstream.drop:
                    writer.close()
                else:
                    writer.write(OK if method == "HEAD" else OK + b"{}")

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
        except (httptools.HttpParserError, ConnectionError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()  # handlers see the end of their connection and return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[RawUpstream]:
    upstream = RawUpstream()
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        await upstream.close()


# -- what the upstream receives ----------------------------------------------------------------

TABLE = "namespaces/ns/tables/t"  # a route taking GET, HEAD, POST and DELETE
PER_GATEWAY = ("x-forwarded-host", "x-pangolin-principal-id")
BODY = bytes(range(256)) * 4 + b'{"\xff\xfe not utf-8 \xc3\x28}'
LARGE = random_bytes(200_000)  # above the forwarder's 64 KiB: streamed, with its length
CASES: dict[str, tuple[str, Any, str | None]] = {
    # name: (method, client body, the framing header the upstream must see)
    "get": ("GET", None, None),
    "head": ("HEAD", None, None),
    "delete": ("DELETE", None, None),
    "post": ("POST", BODY, f"content-length: {len(BODY)}"),
    "delete-with-body": ("DELETE", BODY, f"content-length: {len(BODY)}"),
    "post-streamed": ("POST", LARGE, f"content-length: {len(LARGE)}"),
    "post-chunked": ("POST", "chunked", "transfer-encoding: chunked"),
}


def _framing(message: Message) -> list[str]:
    return [f"{n}: {v}" for n, v in message.headers if n in ("content-length", "transfer-encoding")]


@pytest.mark.parametrize("case", sorted(CASES))
async def test_both_transports_send_the_same_request_framed_by_the_gateway(
    make_gateway: MakeGateway, raw_upstream: RawUpstream, case: str
) -> None:
    """The same client request through each transport reaches the upstream as the same single
    message: method, target, every header (aiohttp adds none of its own: no User-Agent,
    Accept-Encoding or Content-Type) and the body byte for byte, framed by the gateway."""
    method, body, framing = CASES[case]
    received: dict[str, Message] = {}
    for client in CLIENTS:
        gateway = await gateway_for(make_gateway, client, raw_upstream.url)
        data = chunks(LARGE) if body == "chunked" else body
        headers = {**key_header(gateway.root), "X-Request-Id": "req-1", "X-Custom": "a b"}
        before = len(raw_upstream.messages)

        reply = await call(gateway, method, f"{API}/{TABLE}", headers=headers, data=data)

        assert reply.status == 200, reply.body
        assert len(raw_upstream.messages) == before + 1  # exactly one message upstream
        received[client] = raw_upstream.messages[-1]

    lean, aio = received["lean"], received["aiohttp"]
    assert (lean.method, lean.url) == (aio.method, aio.url) == (method, f"/v1/{TABLE}")
    assert lean.body == aio.body == (LARGE if body == "chunked" else body or b"")
    assert _framing(lean) == ([framing] if framing else [])
    if case == "delete":
        # aiohttp frames a bodiless DELETE as an empty body (the lean client sends no length):
        # the one documented difference, the same (empty) request either way.
        assert _framing(aio) == ["content-length: 0"]
        aio = dataclasses.replace(
            aio, headers=[h for h in aio.headers if h != ("content-length", "0")]
        )
    else:
        assert _framing(aio) == _framing(lean)

    def comparable(message: Message) -> list[tuple[str, str]]:
        # Per gateway: the port it listens on, and the id of its root (the caller).
        return sorted((n, v) for n, v in message.headers if n not in PER_GATEWAY)

    assert comparable(lean) == comparable(aio)
    assert lean.values("x-request-id") == aio.values("x-request-id") == ["req-1"]


async def test_a_client_body_framed_its_own_way_reaches_the_upstream_as_one_request(
    make_gateway: MakeGateway, raw_upstream: RawUpstream, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport, raw_upstream.url)
    body = padded(NAMESPACE)  # a second request inside the body is just body bytes
    framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)

    status = await send(gateway, b"Transfer-Encoding: chunked\r\n", framed)

    assert status == 200
    assert [(m.url, m.body) for m in raw_upstream.messages] == [
        ("/v1/namespaces/ns/tables/t", body)
    ]
    assert _framing(raw_upstream.messages[0]) == ["transfer-encoding: chunked"]


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "DELETE"])
async def test_methods_and_bodies_are_forwarded_byte_exact(
    make_gateway: MakeGateway, transport: str, method: str
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    body = BODY if method in ("POST", "DELETE") else None
    answer(gateway.upstream, b'{"ok": true}')

    reply = await call(
        gateway, method, f"{API}/{TABLE}", headers=key_header(gateway.root), data=body,
    )  # fmt: skip

    assert reply.status == 200
    assert reply.body == (b"" if method == "HEAD" else b'{"ok": true}')
    received = gateway.upstream.last
    assert (received.method, received.raw_path) == (method, f"/v1/{TABLE}")
    assert received.body == (body or b"")
    assert len(gateway.upstream.requests) == 1


async def test_a_chunked_client_body_of_megabytes_is_reframed_and_byte_exact(
    make_gateway: MakeGateway, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    body = random_bytes(3 * MIB + 17)

    reply = await call(
        gateway, "POST", f"{API}/namespaces/ns/tables/t", headers=key_header(gateway.root),
        data=chunks(body),
    )  # fmt: skip

    assert reply.status == 200
    received = gateway.upstream.last
    assert received.body == body
    assert received.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in received.headers


@pytest.mark.parametrize("credential", ["x-api-key", "bearer-api-key", "bearer-gateway-token"])
async def test_no_client_credential_reaches_the_upstream(
    make_gateway: MakeGateway, transport: str, credential: str
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    user = await gateway.user("etl")
    secret = user.api_key.plaintext()
    if credential == "x-api-key":
        headers = key_header(user)
    elif credential == "bearer-api-key":
        headers = bearer(secret)
    else:
        secret = await gateway.token(user)
        headers = bearer(secret)
    headers = {**headers, "Cookie": "session=c00k1e", "Proxy-Authorization": "Basic cHJveHk="}

    reply = await call(gateway, "POST", f"{API}/namespaces", headers=headers, data=b"{}")

    assert reply.status == 200
    received = gateway.upstream.last
    for name in ("X-API-Key", "Authorization", "Cookie", "Proxy-Authorization"):
        assert name not in received.headers, name
    assert_secret_absent(received, secret)
    assert_secret_absent(received, user.api_key.secret)
    assert_secret_absent(received, "c00k1e")


async def test_only_the_gateways_own_upstream_credential_is_sent(
    make_gateway: MakeGateway, transport: str
) -> None:
    auth = UpstreamAuthSettings(type="bearer", token="up-secret")
    gateway = await gateway_for(make_gateway, transport, upstream_auth=auth)
    user = await gateway.user("etl")

    reply = await call(
        gateway, "GET", f"{API}/namespaces", headers=bearer(user.api_key.plaintext())
    )

    assert reply.status == 200
    assert gateway.upstream.last.headers.getall("Authorization") == ["Bearer up-secret"]


async def test_redirects_are_passed_on_not_followed(
    make_gateway: MakeGateway, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    answer(gateway.upstream, status=307, headers={"Location": "/v1/oauth/tokens"})

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    assert (reply.status, reply.headers["Location"]) == (307, "/v1/oauth/tokens")
    assert [r.raw_path for r in gateway.upstream.requests] == ["/v1/namespaces"]


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        (f"{API}/my%2Fwh/namespaces?parent=a%1fb", "/v1/my%2Fwh/namespaces?parent=a%1fb"),
        (f"{API}/wh/namespaces/a%1Fb/tables?pageToken=&pageSize=10", None),
    ],
)
async def test_the_target_is_sent_as_given_never_requoted(
    make_gateway: MakeGateway, transport: str, path: str, upstream_path: str | None
) -> None:
    gateway = await gateway_for(make_gateway, transport)

    await call(gateway, "GET", path, headers=key_header(gateway.root))

    assert gateway.upstream.last.raw_path == (upstream_path or path.removeprefix("/v1/default"))


# -- responses ---------------------------------------------------------------------------------


async def test_a_large_response_is_streamed_not_buffered(
    make_gateway: MakeGateway, transport: str
) -> None:
    """The client reads the first megabyte while the upstream still holds back the rest: an
    answer buffered whole by the transport would never arrive (the read would time out)."""
    gateway = await gateway_for(make_gateway, transport)
    head, tail = random_bytes(MIB), random_bytes(4 * MIB + 3)
    more = asyncio.Event()

    async def stream(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        await response.write(head)
        await more.wait()
        for start in range(0, len(tail), 100_000):
            await response.write(tail[start : start + 100_000])
        await response.write_eof()
        return response

    gateway.upstream.responder = stream
    url = gateway.client.make_url(f"{API}/namespaces/ns/tables/t/plan/p1")
    try:
        async with gateway.client.session.get(url, headers=key_header(gateway.root)) as resp:
            assert resp.status == 200
            async with asyncio.timeout(10):
                first = await resp.content.readexactly(MIB)
            more.set()
            rest = await resp.read()
    finally:
        more.set()

    assert first + rest == head + tail


async def test_keep_alive_connections_are_reused(
    make_gateway: MakeGateway, raw_upstream: RawUpstream, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport, raw_upstream.url)
    root = key_header(gateway.root)

    for method, data in [("GET", None)] * 3 + [("POST", b"{}"), ("HEAD", None), ("GET", None)]:
        reply = await call(gateway, method, f"{API}/{TABLE}", headers=root, data=data)
        assert reply.status == 200
    assert (await call(gateway, "POST", f"{API}/{TABLE}", headers=root, data=LARGE)).status == 200

    assert len(raw_upstream.messages) == 7
    assert raw_upstream.connections == 1


async def test_a_client_leaving_mid_stream_frees_the_upstream_and_the_next_request_works(
    make_gateway: MakeGateway, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    upstream_done = endless_upstream(gateway)
    async with aiohttp.ClientSession() as session:
        url = gateway.client.make_url(f"{API}/namespaces/ns/tables/t/plan/p")
        async with session.get(url, headers=key_header(gateway.root)) as resp:
            assert resp.status == 200
            await resp.content.readexactly(MIB)

    await asyncio.wait_for(upstream_done.wait(), timeout=10)
    answer_json(gateway.upstream, {"namespaces": []})
    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))
    assert (reply.status, reply.json()) == (200, {"namespaces": []})


# -- errors ------------------------------------------------------------------------------------


async def test_an_unreachable_upstream_is_503_and_the_log_names_the_cause(
    make_gateway: MakeGateway, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await gateway_for(make_gateway, transport, closed_port_url())

    reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    assert_iceberg_error(reply, 503)
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.proxy.forwarder"]
    assert lines == ["upstream unreachable: ConnectionRefusedError"]


async def test_an_upstream_that_never_answers_is_504(
    make_gateway: MakeGateway, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport, timeout_seconds=0.5)

    async with gateway.upstream.stuck():
        reply = await call(gateway, "GET", f"{API}/namespaces", headers=key_header(gateway.root))

    assert_iceberg_error(reply, 504)


async def test_an_upstream_falling_silent_mid_body_cuts_the_clients_answer(
    make_gateway: MakeGateway, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport, timeout_seconds=0.5)
    release = asyncio.Event()

    async def stalls(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b"x" * 10)
        await release.wait()
        return response

    gateway.upstream.responder = stalls
    url = gateway.client.make_url(f"{API}/namespaces/ns/tables/t/plan/p")
    try:
        async with gateway.client.session.get(url, headers=key_header(gateway.root)) as resp:
            assert resp.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                async with asyncio.timeout(10):
                    await resp.read()  # a truncated answer, never a complete-looking one
    finally:
        release.set()


@pytest.mark.parametrize(
    ("method", "body"), [("POST", b"{}"), ("DELETE", None), ("DELETE", b"{}"), ("POST", LARGE)]
)
async def test_a_connection_broken_before_the_answer_is_502_and_never_replayed(
    make_gateway: MakeGateway, raw_upstream: RawUpstream, transport: str, method: str,
    body: bytes | None,
) -> None:  # fmt: skip
    """Requests with side effects reach the upstream once, even when it drops the connection
    after reading them (aiohttp would resend a DELETE by itself). Only a bodiless GET/HEAD
    may be sent again, by either transport."""
    gateway = await gateway_for(make_gateway, transport, raw_upstream.url)
    raw_upstream.drop = True

    reply = await call(gateway, method, f"{API}/{TABLE}", headers=key_header(gateway.root),
                       data=body)  # fmt: skip

    assert_iceberg_error(reply, 502)
    assert [m.method for m in raw_upstream.messages] == [method]


async def test_a_body_passing_the_limit_mid_stream_is_413_and_never_completes_upstream(
    make_gateway: MakeGateway, transport: str
) -> None:
    upstream = EnteredUpstream()
    catalog = CatalogSettings(client=transport)
    gateway = await make_gateway(
        upstream=upstream,
        catalogs={"default": catalog},
        server=dataclasses.replace(Settings().server, max_body_bytes=1024),
    )

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await upstream.entered.wait()  # the first part has reached the upstream
        yield b"x" * 1000

    # A commit: its body streams (a create's is read whole first, to judge the name in it).
    reply = await call(
        gateway, "POST", f"{API}/{TABLE}", headers=key_header(gateway.root), data=body()
    )

    assert_iceberg_error(reply, 413)  # the client's error, not a broken upstream's 502
    assert upstream.requests == []  # it never read a complete request


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_too_large_to_inspect_is_502(
    make_gateway: MakeGateway, transport: str, chunked: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gateway.proxy.forwarder.MAX_REWRITE_BYTES", 4096)
    gateway = await gateway_for(make_gateway, transport)
    doc = load_table_result({"s3.region": "r" * 5000})

    if chunked:

        async def pieces(request: web.Request, recorded: Recorded) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            data = json.dumps(doc).encode()
            for start in range(0, len(data), 1000):
                await response.write(data[start : start + 1000])
            await response.write_eof()
            return response

        gateway.upstream.responder = pieces
    else:
        answer_json(gateway.upstream, doc)

    reply = await call(
        gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(gateway.root)
    )

    assert_iceberg_error(reply, 502)
    assert "too large" in reply.json()["error"]["message"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-Big": "x" * 30_000}, 200),  # above aiohttp's default 8190, within the bound
        ({"X-Big": "x" * 70_000}, 502),
        ({f"X-Big-{i}": "x" * 30_000 for i in range(3)}, 502),  # each fits, together not
    ],
    ids=["30k", "70k", "3x30k"],
)
async def test_response_heads_are_bounded_alike(
    make_gateway: MakeGateway, transport: str, headers: dict[str, str], status: int
) -> None:
    gateway = await gateway_for(make_gateway, transport)
    answer(gateway.upstream, b"{}", headers=headers)
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    key = gateway.root.api_key.plaintext()
    raw = f"GET {API}/namespaces HTTP/1.1\r\nHost: gw\r\nX-API-Key: {key}\r\n\r\n"

    # Raw: aiohttp's client would refuse the 30 KB header passed on to it.
    reply = await exchange(server.host, server.port, raw.encode())

    assert reply.status == status
    if status == 502:
        assert reply.json()["error"]["code"] == 502


# -- readiness and settings --------------------------------------------------------------------


async def test_readyz_probes_through_the_catalogs_transport(
    make_gateway: MakeGateway, raw_upstream: RawUpstream, transport: str
) -> None:
    gateway = await gateway_for(make_gateway, transport, raw_upstream.url)

    reply = await call(gateway, "GET", "/readyz")

    assert reply.status == 200
    assert reply.json() == {"status": "ok", "checks": {"store": "ok", "catalog:default": "ok"}}
    # The transport's own request: no credential, nothing but Host.
    [probe] = raw_upstream.messages
    assert (probe.method, probe.url) == ("GET", "/v1/config")
    assert [name for name, _ in probe.headers] == ["host"]


@pytest.mark.parametrize("down", ["refused", "5xx"])
async def test_readyz_is_503_when_the_upstream_is_down(
    make_gateway: MakeGateway, transport: str, down: str
) -> None:
    upstream = closed_port_url() if down == "refused" else ""
    gateway = await gateway_for(make_gateway, transport, upstream)
    answer(gateway.upstream, b"{}", status=503)

    reply = await call(gateway, "GET", "/readyz")

    assert reply.status == 503
    assert reply.json()["checks"]["catalog:default"] == "unavailable"


def test_the_client_setting_takes_lean_or_aiohttp_only() -> None:
    def problems(client: str) -> list[str]:
        catalog = CatalogSettings(upstream="http://127.0.0.1:8181", client=client)
        return validate(Settings(catalogs={"default": catalog}))

    assert problems("lean") == problems("aiohttp") == []
    assert CatalogSettings().client == "lean"
    assert problems("httpx") == [
        "catalogs.default.client: must be one of lean, aiohttp, got 'httpx'"
    ]
