"""Forwarding: /v1/config and table responses lose upstream tokens and redirecting keys."""

from __future__ import annotations

import gzip
import json

import pytest
from aiohttp import web

from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded
from ..helpers import key_header
from .forwarding_support import (
    API,
    INT64_MAX,
    SNAPSHOT_ID,
    UPSTREAM_CONFIG,
    answer,
    answer_json,
    assert_iceberg_error,
    call,
    load_table_result,
)


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
