"""The connection layer (``gateway.connection``): what a client gets for bytes that never become a
request, and the bounds on slow and idle connections."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from gateway.settings import ServerSettings
from gateway.state import METRICS

from ..conftest import Gateway, MakeGateway
from ..rawhttp import exchange, read_reply


def address(gateway: Gateway) -> tuple[str, int]:
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    return server.host, server.port


# Every one carries a valid key: aiohttp's parser used to log the refused bytes with a
# traceback and echo them in its plain-text 400.
MALFORMED_HEADS = {
    "bare LF line endings": (
        b"GET /v1/default/v1/namespaces HTTP/1.1\nHost: x\nX-API-Key: {key}\n\n"
    ),
    "space before the colon": (
        b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key : {key}\r\n\r\n"
    ),
    "control character after the key": (
        b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\x01\r\n\r\n"
    ),
    "obs-folded header": (
        b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n {key}\r\n\r\n"
    ),
    "NUL in a header value": (
        b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\x00x\r\n\r\n"
    ),
    "key in the request line's version": b"GET / HTTP/{key}\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("case", sorted(MALFORMED_HEADS))
async def test_malformed_request_heads_get_iceberg_json_and_the_key_is_never_echoed_or_logged(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.DEBUG)
    key = gateway.root.api_key.plaintext()
    raw = MALFORMED_HEADS[case].replace(b"{key}", key.encode())
    reply = await exchange(*address(gateway), raw)
    assert reply.status == 400
    assert reply.header("Content-Type") == "application/json"
    assert reply.json()["error"] == {
        "message": "Malformed HTTP request",
        "type": "BadRequestException",
        "code": 400,
    }
    # (Not key.rsplit("_"): the secret itself may hold "_", which left a one-character "secret"
    # that any answer could contain, a flaky failure.)
    secret = gateway.root.api_key.secret
    assert secret not in reply.head.decode("latin-1") + reply.body.decode("latin-1")
    assert secret not in caplog.text
    assert "Traceback" not in caplog.text
    assert not gateway.upstream.requests


async def test_request_line_over_the_limit_is_414_and_header_over_the_limit_is_431(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key = gateway.root.api_key.plaintext()
    long_path = b"/v1/default/v1/namespaces/" + b"n" * (70 * 1024)
    reply = await exchange(*address(gateway), b"GET %b HTTP/1.1\r\nHost: x\r\n\r\n" % long_path)
    assert reply.status == 414
    assert reply.json()["error"]["code"] == 414
    big = b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Pad: %b\r\nX-API-Key: %b\r\n\r\n"
    reply = await exchange(*address(gateway), big % (b"p" * 20000 + key.encode(), key.encode()))
    assert reply.status == 431
    assert reply.json()["error"]["code"] == 431
    assert key not in reply.body.decode() and key not in caplog.text


async def test_request_line_of_a_deep_spec_valid_namespace_reaches_the_upstream(
    gateway: Gateway,
) -> None:
    # 34 levels of 251 characters: valid in SeaweedFS, and over aiohttp's default 8190 bytes.
    namespace = "%1F".join(f"{i:02d}" + "n" * 249 for i in range(34))
    path = f"/v1/default/v1/namespaces/{namespace}"
    key = gateway.root.api_key.plaintext()
    raw = f"GET {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n\r\n".encode()
    reply = await exchange(*address(gateway), raw)
    assert reply.status == 200, reply.body
    assert gateway.upstream.requests[-1].raw_path == f"/v1/namespaces/{namespace}"


async def slow_settings(make_gateway: MakeGateway, **server: Any) -> Gateway:
    return await make_gateway(server=dataclasses.replace(ServerSettings(), **server))


async def test_a_request_head_that_does_not_arrive_in_time_gets_408_and_the_connection_closes(
    make_gateway: MakeGateway,
) -> None:
    gateway = await slow_settings(make_gateway, header_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        writer.write(b"GET /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\n")  # never finished
        async with asyncio.timeout(10):
            reply = await read_reply(reader)
            assert await reader.read() == b""  # closed
    finally:
        writer.close()
    assert reply.status == 408
    assert reply.json()["error"]["code"] == 408
    assert not gateway.upstream.requests


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    make_gateway: MakeGateway,
) -> None:
    gateway = await slow_settings(make_gateway, header_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        async with asyncio.timeout(10):
            reply = await read_reply(reader)
    finally:
        writer.close()
    assert reply.status == 408


async def test_the_header_timeout_does_not_cut_a_request_whose_body_arrives_later(
    make_gateway: MakeGateway,
) -> None:
    gateway = await slow_settings(make_gateway, header_timeout_seconds=0.3)
    key = gateway.root.api_key.plaintext()
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        writer.write(
            b"POST /v1/default/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key: %b\r\n"
            b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{" % key.encode()
        )
        await writer.drain()
        # A silent second connection is cut once the head timeout has passed: by then the
        # first one, whose head was complete, must still be waiting for its body.
        idle_reader, idle_writer = await asyncio.open_connection(*address(gateway))
        async with asyncio.timeout(10):
            assert (await read_reply(idle_reader)).status == 408
        idle_writer.close()
        writer.write(b"}")
        await writer.drain()
        async with asyncio.timeout(10):
            reply = await read_reply(reader)
    finally:
        writer.close()
    assert reply.status == 200
    assert gateway.upstream.requests[-1].body == b"{}"


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    make_gateway: MakeGateway,
) -> None:
    gateway = await slow_settings(make_gateway, keepalive_timeout_seconds=0.3)
    reader, writer = await asyncio.open_connection(*address(gateway))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(10):
            reply = await read_reply(reader)
            assert reply.status == 200
            assert await reader.read() == b""  # the gateway closed the idle connection
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/login", "application/json"),
        ("/v1/oauth/tokens", "application/x-www-form-urlencoded"),
        ("/v1/default/v1/namespaces", "application/json"),
    ],
)
async def test_a_client_that_disconnects_mid_body_is_a_499_not_a_server_error(
    gateway: Gateway, caplog: pytest.LogCaptureFixture, path: str, content_type: str
) -> None:
    caplog.set_level(logging.DEBUG)
    key = gateway.root.api_key.plaintext()
    reader, writer = await asyncio.open_connection(*address(gateway))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: {content_type}\r\n"
        "Content-Length: 60000\r\n\r\n".encode()
        + b"x" * 40_000  # under the form limit: the handler is reading when the client goes
    )
    await writer.drain()
    writer.close()

    metrics = gateway.app[METRICS]

    def statuses() -> dict[str, int]:
        counts: dict[str, int] = {}
        for routes in metrics.snapshot()["requests"].values():
            for by_status in routes.values():
                for status, count in by_status.items():
                    counts[status] = counts.get(status, 0) + count
        return counts

    async with asyncio.timeout(10):
        while "499" not in statuses():
            await asyncio.sleep(0.01)
    assert not any(status.startswith("5") for status in statuses())
    assert "Traceback" not in caplog.text and "unhandled" not in caplog.text
    assert gateway.root.api_key.secret not in caplog.text
