"""Forwarding: the identifier rule (issue 12). Namespace, table and view names holding ``*``,
``?``, ``$``, quotes or control characters are refused with 400 on every route, in the path,
the ``parent`` query and the bodies that name something new; nothing reaches the upstream.
Other names, and the bodies carrying them, go upstream byte for byte."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from gateway.identity.service_users import CreatedKey
from gateway.proxy.forwarder import MAX_JUDGED_BODY
from gateway.settings import ServerSettings

from ..conftest import Gateway, MakeGateway
from ..helpers import key_header
from .forwarding_support import API, MIB, assert_iceberg_error, call, chunks


def assert_refused(reply: Any, gateway: Gateway, message: str) -> None:
    assert_iceberg_error(reply, 400)
    error = reply.json()["error"]
    assert error["type"] == "BadRequestException"
    assert message in error["message"] and error["message"].isprintable()
    assert gateway.upstream.catalog_requests() == []


# -- in the path and the query --------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("GET", "/namespaces/a%2Ab", "a namespace name contains '*'"),
        ("HEAD", "/namespaces/ok%1Fa%3Fb", "a namespace name contains '?'"),
        ("DELETE", "/namespaces/a$b", "a namespace name contains '$'"),
        ("POST", "/namespaces/a%24b/properties", "a namespace name contains '$'"),
        ("GET", "/namespaces/a%22b/tables", "a namespace name contains a quote"),
        ("POST", "/namespaces/ns/tables", None),  # control: a fine path, for contrast
        ("GET", "/namespaces/ns/tables/it's", "a table name contains a quote"),
        ("POST", "/namespaces/ns/tables/t%60x", "a table name contains a quote"),
        ("GET", "/namespaces/ns/tables/t%0D%0AX-Pangolin-Role:%20Root", "a control character"),
        ("GET", "/namespaces/ns/tables/t%7F/credentials", "a table name contains a control"),
        ("POST", "/namespaces/ns/tables/t%C2%85/metrics", "a table name contains a control"),
        ("POST", "/namespaces/ns/tables/t%2A/plan", "a table name contains '*'"),
        ("GET", "/namespaces/ns/views/v%09", "a view name contains a control character"),
        ("DELETE", "/namespaces/ns/views/%2A", "a view name contains '*'"),
        ("POST", "/namespaces/a%2A/register", "a namespace name contains '*'"),
        ("GET", "/namespaces/ns/tables/%FF", "a table name is not valid UTF-8"),
        ("GET", "/namespaces?parent=a%1Fb%2A", "a namespace name contains '*'"),
        ("GET", "/namespaces?pageToken=&parent=%27", "a namespace name contains a quote"),
    ],
)
async def test_hostile_names_in_the_path_or_parent_query_are_400_and_go_nowhere(
    gateway: Gateway, user: CreatedKey, method: str, path: str, message: str | None
) -> None:
    data = b"{}" if method == "POST" else None
    reply = await call(gateway, method, f"{API}{path}", headers=key_header(user), data=data)

    if message is None:
        assert reply.status == 200
        return
    if method == "HEAD":  # no body: the status says it
        assert reply.status == 400 and gateway.upstream.catalog_requests() == []
        return
    assert_refused(reply, gateway, message)


async def test_a_hostile_path_is_400_even_without_a_credential(gateway: Gateway) -> None:
    # The grammar tells, so no principal is asked for.
    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/a%2Ab")

    assert_refused(reply, gateway, "a table name contains '*'")


@pytest.mark.parametrize(
    "path",
    [
        "/namespaces/d%C3%A9j%C3%A0%1Fx.y/tables/with%20space",
        "/namespaces/%E6%95%B0%E6%8D%AE/views/a-b_c~d",
        "/namespaces?parent=d%C3%A9j%C3%A0%1Fa.b-c",
        "/namespaces/a%2Bb%26c%3Dd%23e%25f/tables/t",  # + & = # % are the catalog's business
    ],
)
async def test_names_the_rule_allows_are_forwarded_as_sent(
    gateway: Gateway, user: CreatedKey, path: str
) -> None:
    reply = await call(gateway, "GET", f"{API}{path}", headers=key_header(user))

    assert reply.status == 200
    assert gateway.upstream.last.raw_path == f"/v1{path}"


# -- in the bodies that name something new ----------------------------------------------------

HOSTILE_BODIES = [
    ("/namespaces", {"namespace": ["a*b"]}, "a namespace name contains '*'"),
    ("/namespaces", {"namespace": ["ok", "line\nbreak"]}, "a control character"),
    ("/namespaces/ns/tables", {"name": "t$", "schema": {}}, "a table name contains '$'"),
    ("/namespaces/ns/tables", {"name": "t\u0085", "schema": {}}, "a control character"),
    ("/namespaces/ns/register", {"name": "a'b", "metadata-location": "s3://b/m"}, "a quote"),
    ("/namespaces/ns/views", {"name": 'v"', "schema": {}}, "a view name contains a quote"),
    ("/namespaces/ns/register-view", {"name": "v?", "metadata-location": "s3://b/m"}, "'?'"),
    (
        "/tables/rename",
        {"source": {"namespace": ["a"], "name": "t"},
         "destination": {"namespace": ["b"], "name": "t*"}},
        "a table name contains '*'",
    ),
    (
        "/views/rename",
        {"source": {"namespace": ["a`"], "name": "v"},
         "destination": {"namespace": ["b"], "name": "v"}},
        "a namespace name contains a quote",
    ),
]  # fmt: skip


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("path", "doc", "message"), HOSTILE_BODIES)
async def test_hostile_names_in_bodies_are_400_and_go_nowhere(
    gateway: Gateway, user: CreatedKey, path: str, doc: Any, message: str, chunked: bool
) -> None:
    body = json.dumps(doc, ensure_ascii=False).encode()

    reply = await call(
        gateway, "POST", f"{API}{path}", headers=key_header(user),
        data=chunks(body, 7) if chunked else body,
    )  # fmt: skip

    assert_refused(reply, gateway, message)


async def test_a_create_body_that_is_not_json_is_400_and_goes_nowhere(
    gateway: Gateway, user: CreatedKey
) -> None:
    body = b'{"name": "ok", "name": "t*"}'  # which "name" counts depends on the parser

    reply = await call(gateway, "POST", f"{API}/namespaces/ns/tables", headers=key_header(user),
                       data=body)  # fmt: skip

    assert_refused(reply, gateway, "the request body is not a JSON object")


async def test_a_body_is_read_only_after_the_caller_is_known(gateway: Gateway) -> None:
    reply = await call(gateway, "POST", f"{API}/namespaces", data=b'{"namespace": ["a*"]}')

    assert_iceberg_error(reply, 401)
    assert gateway.upstream.catalog_requests() == []


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("/namespaces", {"namespace": ["数据", "a.b-c"], "properties": {"owner": "it's me"}}),
        ("/namespaces/ns/tables", {"name": "déjà vu", "schema": {"type": "struct"}}),
        ("/tables/rename", {"source": {"namespace": ["a"], "name": "t"},
                            "destination": {"namespace": ["b"], "name": "t-2"}}),
        ("/namespaces/ns/views", {"name": "emoji😀", "sql": "SELECT '*' FROM t"}),
    ],
)  # fmt: skip
async def test_fine_bodies_are_forwarded_byte_for_byte(
    gateway: Gateway, user: CreatedKey, path: str, doc: Any, chunked: bool
) -> None:
    # Odd spacing and raw UTF-8: what the client wrote, not a re-serialisation. Only names are
    # judged: a quote in a property or in SQL is the catalog's business.
    body = json.dumps(doc, ensure_ascii=False, indent=3).encode() + b"\n\t "

    reply = await call(
        gateway, "POST", f"{API}{path}", headers=key_header(user),
        data=chunks(body, 5) if chunked else body,
    )  # fmt: skip

    assert reply.status == 200
    received = gateway.upstream.last
    assert received.body == body
    assert received.headers["Content-Length"] == str(len(body))


async def test_a_large_chunked_create_body_is_read_within_the_limit_and_forwarded(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(server=ServerSettings(max_body_bytes=MIB))
    fields = [{"id": i, "name": f"c{i}", "type": "string"} for i in range(5000)]
    body = json.dumps({"name": "wide", "schema": {"type": "struct", "fields": fields}}).encode()
    assert 64 * 1024 < len(body) < MIB
    root = key_header(gateway.root)

    reply = await call(gateway, "POST", f"{API}/namespaces/ns/tables", headers=root,
                       data=chunks(body))  # fmt: skip
    over = await call(gateway, "POST", f"{API}/namespaces/ns/tables", headers=root,
                      data=chunks(body + b" " * MIB))  # fmt: skip

    assert reply.status == 200 and gateway.upstream.last.body == body
    assert_iceberg_error(over, 413)
    assert len(gateway.upstream.catalog_requests()) == 1


async def test_a_judged_body_past_its_own_cap_is_413_whatever_max_body_bytes_allows(
    gateway: Gateway, user: CreatedKey
) -> None:
    # Parsed on the event loop: tens of megabytes of nested objects would hold the worker for
    # seconds and take gigabytes, so these bodies have a cap of their own.
    padding = b'{"x": [' + b"{}," * (MAX_JUDGED_BODY // 3) + b'{}], "name": "t"}'
    assert len(padding) > MAX_JUDGED_BODY
    for chunked in (False, True):
        data = chunks(padding) if chunked else io.BytesIO(padding)
        reply = await call(gateway, "POST", f"{API}/namespaces/ns/tables",
                           headers=key_header(user), data=data)  # fmt: skip
        assert_iceberg_error(reply, 413)
    assert gateway.upstream.catalog_requests() == []


@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "ok\\udc80"])
async def test_an_escaped_lone_surrogate_in_a_body_name_is_refused(
    gateway: Gateway, user: CreatedKey, escape: str
) -> None:
    # JSON can escape a lone surrogate, which Java encoders write as "?" (the same name in a
    # path is not UTF-8 and refused there too).
    for path, body in (
        ("/namespaces/ns/tables", '{"name": "t' + escape + '", "schema": {}}'),
        ("/namespaces", '{"namespace": ["a' + escape + '"]}'),
    ):
        reply = await call(gateway, "POST", f"{API}{path}", headers=key_header(user),
                           data=body.encode())  # fmt: skip
        assert_refused(reply, gateway, "a control character")
