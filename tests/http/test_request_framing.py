"""The upstream receives exactly one request per client request, framed by the gateway itself,
whatever the client's body encoding and framing (the review smuggled a second request inside a
gzip body whose decoded length exceeded the compressed Content-Length)."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httptools
import pytest

from gateway.settings import CatalogSettings

from ..conftest import Gateway, MakeGateway
from ..rawhttp import exchange

SMUGGLED = (
    b"DELETE /v1/other-warehouse/namespaces/victim HTTP/1.1\r\nHost: upstream\r\n"
    b"X-Pangolin-Role: Root\r\nContent-Length: 0\r\n\r\n"
)
NAMESPACE = b'{"namespace": ["ns"]}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


@dataclass
class ParsingUpstream:
    """A raw upstream that parses what it receives with llhttp and answers every message:
    ``messages`` is every request the upstream saw, smuggled ones included."""

    messages: list[tuple[bytes, bytes]] = field(default_factory=list)  # (url, body)
    server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = self
        url, body = bytearray(), bytearray()

        class Callbacks:
            def on_url(self, data: bytes) -> None:
                url.extend(data)

            def on_body(self, data: bytes) -> None:
                body.extend(data)

            def on_message_complete(self) -> None:
                upstream.messages.append((bytes(url), bytes(body)))
                url.clear()
                body.clear()
                writer.write(OK)

        parser = httptools.HttpRequestParser(Callbacks())
        try:
            while data := await reader.read(65536):
                parser.feed_data(data)
        except (httptools.HttpParserError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture
async def parsing_upstream() -> AsyncIterator[ParsingUpstream]:
    upstream = ParsingUpstream()
    upstream.server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    try:
        yield upstream
    finally:
        upstream.server.close()


@pytest.fixture
async def gateway(make_gateway: MakeGateway, parsing_upstream: ParsingUpstream) -> Gateway:
    catalog = CatalogSettings(upstream=parsing_upstream.url, warehouse="wh")
    return await make_gateway(catalogs={"default": catalog})


def padded(payload: bytes) -> bytes:
    return NAMESPACE + b" " * 70_000 + SMUGGLED  # decodes to far more than it compresses to


ENCODED_BODIES = {
    "gzip": ("gzip", gzip.compress(padded(NAMESPACE))),
    "deflate": ("deflate", zlib.compress(padded(NAMESPACE))),
    "br": ("br", b"\x1b\x03\x00\xf8\x8d\x94n\xde\x02"),  # any bytes: refused unread
    "identity, gzip": ("identity, gzip", gzip.compress(padded(NAMESPACE))),
    "GZIP": ("GZIP", gzip.compress(padded(NAMESPACE))),
}


async def send(gateway: Gateway, head: bytes, body: bytes) -> int:
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    key = gateway.root.api_key.plaintext().encode()
    # A commit (updateTable): its body streams, where a create's is read whole to judge the
    # name in it (and refused unless it is one JSON object).
    request = (
        b"POST /v1/default/v1/namespaces/ns/tables/t HTTP/1.1\r\nHost: gw\r\nX-API-Key: %b\r\n"
        b"Content-Type: application/json\r\n%b\r\n%b" % (key, head, body)
    )
    return (await exchange(server.host, server.port, request)).status


@pytest.mark.parametrize("case", sorted(ENCODED_BODIES))
async def test_an_encoded_request_body_is_415_and_nothing_reaches_the_upstream(
    gateway: Gateway, parsing_upstream: ParsingUpstream, case: str
) -> None:
    encoding, body = ENCODED_BODIES[case]
    head = b"Content-Encoding: %b\r\nContent-Length: %d\r\n" % (encoding.encode(), len(body))

    assert await send(gateway, head, body) == 415
    assert parsing_upstream.messages == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_identity_body_reaches_the_upstream_as_exactly_one_request(
    gateway: Gateway, parsing_upstream: ParsingUpstream, chunked: bool
) -> None:
    body = padded(NAMESPACE)  # a second request inside the body is just body bytes
    if chunked:
        head = b"Content-Encoding: identity\r\nTransfer-Encoding: chunked\r\n"
        framed = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    else:
        head, framed = b"Content-Length: %d\r\n" % len(body), body

    assert await send(gateway, head, framed) == 200
    assert parsing_upstream.messages == [(b"/v1/wh/namespaces/ns/tables/t", body)]


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 2\r\nContent-Length: 40\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
    ],
)
async def test_ambiguous_framing_is_refused_and_nothing_reaches_the_upstream(
    gateway: Gateway, parsing_upstream: ParsingUpstream, head: bytes
) -> None:
    status = await send(gateway, head, b"2\r\n{}\r\n0\r\n\r\n" + SMUGGLED)
    assert 400 <= status < 500
    assert parsing_upstream.messages == []
