"""The hot path's upstream client against raw sockets that misbehave on purpose: keep-alive
reuse and when it must not happen, framing of both bodies, request splitting, timeouts,
limits and back-pressure. (End to end it is exercised by every forwarding test.)"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.proxy.upstream_client import (
    MAX_HEADER_BYTES,
    ResponseTooLarge,
    UpstreamClient,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamReadTimeout,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Upstream:
    """A raw TCP server: ``handler`` runs per connection; connections and requests counted."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self._writers:
            writer.close()  # handlers waiting on the connection see its end and return
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request (head and body), or None at EOF."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lower = head.lower()
        body = b""
        if b"transfer-encoding: chunked" in lower:
            body = await reader.readuntil(b"0\r\n\r\n")
        elif b"content-length:" in lower:
            length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
        self.requests.append(head + body)
        return head + body


def serving(*answers: bytes, then_close: bool = False) -> Callable[[Upstream], Handler]:
    """A handler answering each request on a connection with the next of ``answers``."""

    def make(upstream: Upstream) -> Handler:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            for answer in answers:
                if await upstream.read_request(reader) is None:
                    return
                writer.write(answer)
                await writer.drain()
            if not then_close:
                await reader.read()  # keep the connection until the client closes it

        return handler

    return make


@contextlib.asynccontextmanager
async def connected(
    make: Callable[[Upstream], Handler], read_timeout: float = 10.0
) -> AsyncIterator[tuple[Upstream, UpstreamClient]]:
    """A started upstream and a client of it; both closed on the way out."""
    upstream = await start(make)
    c = client(upstream, read_timeout)
    try:
        yield upstream, c
    finally:
        c.close()
        await upstream.__aexit__()


async def start(make: Callable[[Upstream], Handler]) -> Upstream:
    upstream = Upstream(lambda r, w: asyncio.sleep(0))
    upstream.handler = make(upstream)
    return await upstream.__aenter__()


def client(upstream: Upstream, read_timeout: float = 10.0) -> UpstreamClient:
    return UpstreamClient(upstream.url, connect_timeout=2.0, read_timeout=read_timeout)


async def get(c: UpstreamClient, method: str = "GET", path: str = "/v1/config") -> bytes:
    response = await c.request(method, path, [("Accept", "application/json")])
    try:
        return await response.read(1 << 20)
    finally:
        response.release()


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not condition():
            await asyncio.sleep(0.001)


# -- keep-alive ------------------------------------------------------------------------------


async def test_sequential_requests_reuse_one_connection() -> None:
    async with connected(serving(OK, OK, OK)) as (upstream, c):
        assert [await get(c) for _ in range(3)] == [b"hello"] * 3
        assert upstream.connections == 1
        assert upstream.requests[0].startswith(b"GET /v1/config HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_base_path_prefixes_every_target() -> None:
    upstream = await start(serving(OK))
    c = UpstreamClient(upstream.url + "/catalog/", connect_timeout=2, read_timeout=10)
    try:
        await get(c, path="/v1/namespaces?pageToken=a%1Fb")
        assert upstream.requests[0].startswith(b"GET /catalog/v1/namespaces?pageToken=a%1Fb ")
    finally:
        c.close()
        await upstream.__aexit__()


async def test_get_is_sent_again_when_the_reused_connection_was_closed_meanwhile() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if upstream.connections == 1:
            await upstream.read_request(reader)
            writer.write(OK)
            await writer.drain()
            await upstream.read_request(reader)  # the keep-alive race: read, then hang up
            return
        await serving(OK)(upstream)(reader, writer)

    async with connected(lambda u: handler) as (upstream, c):
        assert await get(c) == b"hello"
        assert await get(c) == b"hello"
        assert upstream.connections == 2


async def test_post_is_never_sent_twice() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(OK)
        await writer.drain()
        await upstream.read_request(reader)  # took the POST, then hung up without answering

    async with connected(lambda u: handler) as (upstream, c):
        assert await get(c) == b"hello"
        with pytest.raises(UpstreamProtocolError):
            await c.request("POST", "/v1/namespaces", [], b"{}")
        assert upstream.connections == 1
        assert len(upstream.requests) == 2


async def test_a_connection_that_sent_unasked_bytes_is_not_reused() -> None:
    extra = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with connected(serving(OK + extra, OK)) as (upstream, c):
        assert await get(c) == b"hello"
        assert await get(c) == b"hello"
        assert upstream.connections == 2


async def test_connection_close_answer_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello"
    async with connected(serving(closing, then_close=True)) as (upstream, c):
        assert await get(c) == b"hello"
        assert await get(c) == b"hello"
        assert upstream.connections == 2


# -- response framing ------------------------------------------------------------------------


async def test_chunked_body_is_read_whole() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n"
    )
    async with connected(serving(chunked, OK)) as (upstream, c):
        assert await get(c) == b"hello"
        assert await get(c) == b"hello"
        assert upstream.connections == 1


async def test_body_delimited_by_close_is_read_to_the_end() -> None:
    answer = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    async with connected(serving(answer, then_close=True)) as (upstream, c):
        assert await get(c) == b"until the end"


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n", True),
        # llhttp cannot know the answer was to a HEAD: without a length it takes the body to
        # run to the end of the connection, so the connection is not reused (but no wait).
        (b"HTTP/1.1 200 OK\r\n\r\n", False),
    ],
    ids=["with-length", "without-length"],
)
async def test_head_answer_has_no_body_whatever_its_length_says(head: bytes, reused: bool) -> None:
    async with connected(serving(head, OK), read_timeout=2) as (upstream, c):
        response = await c.request("HEAD", "/v1/namespaces/a", [])
        assert response.status == 200
        assert await response.read(10) == b""
        response.release()
        assert len(c._idle) == (1 if reused else 0)


async def test_interim_answers_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with connected(serving(answer)) as (upstream, c):
        response = await c.request("GET", "/v1/config", [])
        assert (response.status, response.reason) == (200, "OK")
        assert "Link" not in response.headers
        assert await response.read(100) == b"hello"
        response.release()


async def test_no_content_answer_has_no_body_and_keeps_the_connection() -> None:
    async with connected(serving(b"HTTP/1.1 204 No Content\r\n\r\n", OK)) as (upstream, c):
        assert await get(c, "DELETE") == b""
        assert await get(c) == b"hello"
        assert upstream.connections == 1


async def test_repeated_headers_and_reason_are_kept() -> None:
    answer = (
        b"HTTP/1.1 404 Not Here\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n"
    )
    async with connected(serving(answer)) as (upstream, c):
        response = await c.request("GET", "/v1/x", [])
        assert (response.status, response.reason) == (404, "Not Here")
        assert response.headers.getall("set-cookie") == ["a=1", "b=2"]
        assert response.content_length == 0
        response.release()


async def test_truncated_body_is_an_error_and_the_connection_is_dropped() -> None:
    short = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"
    async with connected(serving(short, then_close=True)) as (upstream, c):
        response = await c.request("GET", "/v1/config", [])
        with pytest.raises(UpstreamProtocolError):
            await response.read(1000)
        response.release()
        assert not c._idle  # not handed back for reuse


async def test_body_over_the_limit_is_refused() -> None:
    async with connected(serving(OK)) as (upstream, c):
        response = await c.request("GET", "/v1/config", [])
        with pytest.raises(ResponseTooLarge):
            await response.read(4)
        response.release()


async def test_oversized_response_headers_are_refused() -> None:
    huge = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
    async with connected(serving(huge)) as (upstream, c):
        with pytest.raises(UpstreamProtocolError, match="too large"):
            await c.request("GET", "/v1/config", [])


async def test_garbage_answer_is_a_protocol_error() -> None:
    async with connected(serving(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")) as (upstream, c):
        with pytest.raises(UpstreamProtocolError, match="unparsable"):
            await c.request("GET", "/v1/config", [])


# -- request framing and splitting ------------------------------------------------------------


async def test_bytes_body_goes_with_its_own_length() -> None:
    async with connected(serving(OK)) as (upstream, c):
        headers = [("Content-Length", "999"), ("Host", "evil.example"), ("X-A", "1")]
        response = await c.request("POST", "/v1/namespaces", headers, b'{"a":1}')
        response.release()
        sent = upstream.requests[0]
        assert sent.count(b"Content-Length") == 1 and b"Content-Length: 7\r\n" in sent
        assert b"evil.example" not in sent
        assert sent.endswith(b'\r\n\r\n{"a":1}')


async def test_post_without_body_says_length_zero() -> None:
    async with connected(serving(OK)) as (upstream, c):
        (await c.request("POST", "/v1/x", [])).release()
        assert b"Content-Length: 0\r\n" in upstream.requests[0]


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_streamed_body_of_unknown_length_goes_chunked() -> None:
    async with connected(serving(OK)) as (upstream, c):
        (await c.request("PUT", "/v1/x", [], chunks(b"ab", b"", b"cde"))).release()
        sent = upstream.requests[0]
        assert b"Transfer-Encoding: chunked\r\n" in sent
        assert sent.endswith(b"\r\n\r\n2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n")


async def test_streamed_body_of_known_length_goes_as_is() -> None:
    async with connected(serving(OK)) as (upstream, c):
        body = chunks(b"ab", b"cde")
        (await c.request("PUT", "/v1/x", [], body, content_length=5)).release()
        assert upstream.requests[0].endswith(b"Content-Length: 5\r\n\r\nabcde")


async def test_a_streamed_body_longer_than_its_declared_length_never_sends_the_surplus() -> None:
    smuggled = b"DELETE /v1/other/namespaces/victim HTTP/1.1\r\nHost: u\r\n\r\n"
    async with connected(serving(OK, OK)) as (upstream, c):
        with pytest.raises(UpstreamProtocolError):
            await c.request("POST", "/v1/x", [], chunks(b"{}", smuggled), content_length=2)
        await until(lambda: upstream.connections == 1 and not upstream._tasks)  # all read
        assert upstream.requests == [upstream.requests[0]]
        assert upstream.requests[0].endswith(b"Content-Length: 2\r\n\r\n{}")
        assert b"victim" not in b"".join(upstream.requests)


@pytest.mark.parametrize(
    ("name", "value", "target"),
    [
        ("X-A", "1\r\nX-Pangolin-Role: Root", "/v1/x"),
        ("X-A", "1\nGET /admin HTTP/1.1", "/v1/x"),
        ("X-A\r\nX-B", "1", "/v1/x"),
        ("X-A", "1", "/v1/x HTTP/1.1\r\nX-Pangolin-Role: Root\r\n\r\nGET /"),
        ("X-A", "lone\rcr", "/v1/x"),
    ],
)
async def test_cr_or_lf_anywhere_is_refused_before_sending(
    name: str, value: str, target: str
) -> None:
    async with connected(serving(OK)) as (upstream, c):
        with pytest.raises(ValueError, match="CR or LF"):
            await c.request("GET", target, [(name, value)])
        assert upstream.requests == [] and upstream.connections == 0


# -- failures and timeouts -------------------------------------------------------------------


async def test_refused_connection_is_a_connect_error() -> None:
    upstream = await start(serving(OK))
    url = upstream.url
    await upstream.__aexit__()
    c = UpstreamClient(url, connect_timeout=2, read_timeout=10)
    try:
        with pytest.raises(UpstreamConnectError):
            await c.request("GET", "/v1/config", [])
    finally:
        c.close()


async def test_silent_upstream_times_out_and_loses_the_connection() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with connected(lambda u: silent, read_timeout=0.2) as (upstream, c):
        with pytest.raises(UpstreamReadTimeout):
            await c.request("GET", "/v1/config", [])
        assert not c._idle


async def test_upstream_stalling_mid_body_times_out() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await reader.read()

    async with connected(lambda u: stall, read_timeout=0.2) as (upstream, c):
        response = await c.request("GET", "/v1/config", [])
        with pytest.raises(UpstreamReadTimeout):
            await response.read(100)
        response.release()


async def test_cancelled_request_closes_its_connection() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        await reader.read()

    async with connected(lambda u: slow) as (upstream, c):
        task = asyncio.create_task(c.request("GET", "/v1/config", []))
        await until(lambda: len(upstream.requests) == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not c._idle


# -- back-pressure ----------------------------------------------------------------------------


async def test_slow_reader_pauses_the_upstream_and_gets_every_byte() -> None:
    size = 8 * 1024 * 1024
    payload = bytes(range(256)) * (size // 256)

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await upstream.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + payload)
        await writer.drain()
        await reader.read()

    async with connected(lambda u: big, read_timeout=0.5) as (upstream, c):
        response = await c.request("GET", "/v1/x", [])
        conn = response._conn
        await until(lambda: conn._paused)  # nobody reads: the buffer stops growing
        assert conn._buffered < 2 * 1024 * 1024
        # Holding off for our own reasons is not the upstream's silence: no timeout.
        conn.check_timeout(conn._last_read + 10)
        assert conn.error is None
        received = b"".join([chunk async for chunk in response.iter_chunks()])
        assert received == payload
        response.release()


# -- event loops ------------------------------------------------------------------------------


def test_works_on_uvloop() -> None:
    async def scenario() -> tuple[list[bytes], int]:
        upstream = await start(serving(OK, OK))
        c = client(upstream)
        try:
            return [await get(c), await get(c)], upstream.connections
        finally:
            c.close()
            await upstream.__aexit__()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == ([b"hello", b"hello"], 1)


# -- TLS --------------------------------------------------------------------------------------


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_https_upstream_is_verified_and_kept_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = _self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_file, key_file)
    upstream = Upstream(lambda r, w: asyncio.sleep(0))
    upstream.handler = serving(OK, OK)(upstream)
    upstream.server = await asyncio.start_server(
        upstream._on_connect, "127.0.0.1", 0, ssl=server_ctx
    )
    url = upstream.url.replace("http://", "https://")
    trusting = ssl.create_default_context(cafile=str(cert_file))
    c = UpstreamClient(url, connect_timeout=2, read_timeout=10, ssl_context=trusting)
    untrusting = UpstreamClient(url, connect_timeout=2, read_timeout=10)
    # What the README tells operators with a private CA to do.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    configured = UpstreamClient(url, connect_timeout=2, read_timeout=10)
    try:
        assert [await get(c), await get(c)] == [b"hello", b"hello"]
        assert upstream.connections == 1
        # The system's trust store does not know this certificate: no connection.
        with pytest.raises(UpstreamConnectError):
            await untrusting.request("GET", "/v1/config", [])
        assert await get(configured) == b"hello"
    finally:
        c.close()
        untrusting.close()
        configured.close()
        await upstream.__aexit__()
