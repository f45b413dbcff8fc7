"""The access log: one ``pangolin.access`` line per request with the request id, principal,
catalog, status, bytes and duration, and never a key, a token or a query string."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.forward_auth import SECRET_HEADER
from gateway.identity.bootstrap import initialize
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.observability.access_log import ACCESS_LOGGER, AccessLogger
from gateway.settings import CatalogSettings, ForwardAuthSettings
from gateway.store import SqliteStore

from ..conftest import Gateway, GatewayTestServer, make_settings
from ..fakes import FakeClock, RecordingUpstream

API = "/v1/default/v1"
_LINE = re.compile(
    r"request_id=(?P<request_id>\S+) client=(?P<client>\S+) principal=(?P<principal>\S+) "
    r"catalog=(?P<catalog>\S+) method=(?P<method>\S+) path=(?P<path>\S+) "
    r"status=(?P<status>\d+) bytes=(?P<bytes>\d+) duration_ms=(?P<duration_ms>\d+\.\d+)"
    r"(?: forward_auth=(?P<forward_auth>\S+))?"
)
FORWARD_AUTH_SECRET = "f" * 40


@pytest.fixture
async def logged(
    tmp_path: Path, aiohttp_client: Any, aiohttp_server: Any, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Gateway]:
    """The real app served with ``access_log_class=AccessLogger`` (as ``serve`` runs it)."""
    # Before the first connection: aiohttp asks the logger whether it is enabled per connection.
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    upstream = RecordingUpstream()
    server: TestServer = await aiohttp_server(upstream.app())
    base = str(server.make_url("")).rstrip("/")
    settings = make_settings(
        tmp_path, {"default": CatalogSettings(upstream=base)},
        forward_auth=ForwardAuthSettings(secret=FORWARD_AUTH_SECRET),
    )  # fmt: skip
    clock = FakeClock()
    store = SqliteStore(settings.store.path)
    await store.open()
    try:
        result = await initialize(store, ServiceUserAdmin(store, clock=clock))
        assert result.root is not None
        app = create_app(settings, store=store, clock=clock)
        # Started by hand: TestServer(**server_kwargs) drops its kwargs (aiohttp 3.14), only
        # start_server() hands them to the AppRunner.
        app_server = GatewayTestServer(app)
        await app_server.start_server(access_log_class=AccessLogger)
        client: TestClient[web.Request, web.Application] = await aiohttp_client(app_server)
        try:
            yield Gateway(client, app, store, result.root, upstream, clock)
        finally:
            await client.close()
    finally:
        await store.close()


async def access_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[dict[str, str]]:
    """The first ``count`` access lines. aiohttp logs just after the response is sent, so the
    client may see the answer first: yield to the loop until the lines are there."""
    for _ in range(1000):
        records = [r for r in caplog.records if r.name == ACCESS_LOGGER]
        if len(records) >= count:
            break
        await asyncio.sleep(0)
    assert len(records) >= count, [r.getMessage() for r in records]
    lines = []
    for record in records[:count]:
        assert record.levelno == logging.INFO
        match = _LINE.fullmatch(record.getMessage())
        assert match is not None, record.getMessage()
        lines.append(match.groupdict())
    return lines


def all_messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


@pytest.fixture
async def user(logged: Gateway) -> CreatedKey:
    return await logged.user()


async def test_line_names_request_principal_catalog_status_bytes_and_duration(
    logged: Gateway, user: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    async with logged.client.get(
        f"{API}/namespaces/ns/tables/t?pageToken=private_query&snapshots=all",
        headers={"X-API-Key": user.api_key.plaintext(), "X-Request-Id": "req-4711"},
    ) as resp:
        assert resp.status == 200
        body = await resp.read()

    (line,) = await access_lines(caplog, 1)
    assert line["request_id"] == "req-4711"
    assert line["principal"] == user.user.id
    assert line["catalog"] == "default"
    assert line["method"] == "GET"
    assert line["path"] == f"{API}/namespaces/ns/tables/t"
    assert line["status"] == "200"
    assert int(line["bytes"]) > len(body)  # as aiohttp's %b: the response as written
    assert float(line["duration_ms"]) > 0
    assert line["client"] == "127.0.0.1"
    messages = all_messages(caplog)
    for secret in (user.api_key.plaintext(), "private_query", "pageToken"):
        assert secret not in messages
    assert "?" not in line["path"]


async def test_generated_request_id_is_the_one_the_client_got(
    logged: Gateway, user: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    resp = await logged.client.get("/healthz")
    assert resp.status == 200

    (line,) = await access_lines(caplog, 1)
    assert line["request_id"] == resp.headers["X-Request-Id"]
    assert (line["principal"], line["catalog"], line["path"]) == ("-", "-", "/healthz")


async def test_token_requests_log_the_client_and_never_the_secret_or_token(
    logged: Gateway, user: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    token = await logged.token(user)
    resp = await logged.client.get(
        f"{API}/namespaces", headers={"Authorization": f"Bearer {token}"}
    )
    assert resp.status == 200

    issue, use = await access_lines(caplog, 2)
    assert (issue["path"], issue["status"], issue["principal"]) == (
        "/v1/oauth/tokens", "200", user.user.id,
    )  # fmt: skip
    assert (use["principal"], use["catalog"], use["status"]) == (user.user.id, "default", "200")
    messages = all_messages(caplog)
    assert token not in messages
    assert token.split(".")[2] not in messages  # not even the signature
    assert user.api_key.plaintext() not in messages


async def test_refused_requests_log_no_principal_and_no_credential(
    logged: Gateway, user: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = user.api_key.plaintext()[:-4] + "AAAA"
    first = await logged.client.get(f"{API}/namespaces", headers={"X-API-Key": wrong})
    second = await logged.client.get(
        "/v1/unknown-catalog/v1/namespaces", headers={"X-API-Key": user.api_key.plaintext()}
    )
    assert (first.status, second.status) == (401, 404)

    refused, unknown = await access_lines(caplog, 2)
    assert (refused["principal"], refused["catalog"], refused["status"]) == ("-", "default", "401")
    assert (unknown["principal"], unknown["catalog"], unknown["status"]) == (
        user.user.id, "-", "404",
    )  # fmt: skip
    messages = all_messages(caplog)
    assert wrong not in messages
    assert user.api_key.plaintext() not in messages


async def test_a_forward_auth_decision_logs_the_request_it_decided_not_the_endpoint(
    logged: Gateway, user: CreatedKey, caplog: pytest.LogCaptureFixture
) -> None:
    decided = "/v1/namespaces/ns"  # the default catalog's (a mounted one needs the proxy)
    proxy = {SECRET_HEADER: FORWARD_AUTH_SECRET, "X-Original-Method": "HEAD"}
    allowed = await logged.client.get(
        "/forward-auth/nginx",
        headers={**proxy, "X-Original-URI": f"{decided}?pageToken=private_query",
                 "X-API-Key": user.api_key.plaintext()},
    )  # fmt: skip
    refused = await logged.client.get(
        "/forward-auth/nginx", headers={**proxy, "X-Original-URI": f"{decided} x=1"}
    )
    unasked = await logged.client.get(
        "/forward-auth/nginx", headers={"X-Original-Method": "GET", "X-Original-URI": "/fake"}
    )
    assert (allowed.status, refused.status, unasked.status) == (200, 403, 403)

    allow, refuse, unknown = await access_lines(caplog, 3)
    assert (allow["method"], allow["path"], allow["forward_auth"]) == ("HEAD", decided, "nginx")
    assert (allow["principal"], allow["catalog"], allow["status"]) == (
        user.user.id, "default", "200",
    )  # fmt: skip
    # The proxy's header text stays one field of the line, whatever it holds.
    assert (refuse["path"], refuse["status"]) == (f"{decided}?x=1", "403")
    # Without the proxy's secret nothing the caller sent is taken for the request decided.
    assert (unknown["method"], unknown["path"]) == ("GET", "/forward-auth/nginx")
    assert unknown.get("forward_auth") is None  # the optional group did not match
    assert "private_query" not in all_messages(caplog)


def test_nothing_is_formatted_when_the_access_logger_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=ACCESS_LOGGER)
    assert not AccessLogger(logging.getLogger("aiohttp.access"), "").enabled
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    logger = AccessLogger(logging.getLogger("aiohttp.access"), "")
    assert logger.enabled
    assert logger.logger.name == ACCESS_LOGGER
