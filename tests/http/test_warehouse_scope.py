"""A catalog that names its warehouse is fenced to it: clients cannot name another warehouse
of the same upstream (reached with the gateway's one upstream credential)."""

from __future__ import annotations

import json

import pytest
from aiohttp import web

from gateway.errors import NotFound
from gateway.proxy.scope import WarehouseScope
from gateway.routing import parse_catalog_path
from gateway.settings import CatalogSettings

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded, RecordingUpstream


def _scope(warehouse: str = "", prefix: str = "") -> WarehouseScope:
    return WarehouseScope(CatalogSettings(upstream="http://u", warehouse=warehouse, prefix=prefix))


@pytest.mark.parametrize(
    ("tail", "upstream"),
    [
        ("namespaces", "wh/namespaces"),
        ("namespaces/a%1Fb/tables/t", "wh/namespaces/a%1Fb/tables/t"),
        ("tables/rename", "wh/tables/rename"),
        ("transactions/commit", "wh/transactions/commit"),
        ("wh/namespaces", "wh/namespaces"),
        ("%77h/namespaces", "wh/namespaces"),  # normalised: %77 is "w"
        ("config", "config"),
    ],
)
def test_paths_are_kept_under_the_catalogs_prefix(tail: str, upstream: str) -> None:
    assert _scope(warehouse="wh").upstream_tail(parse_catalog_path(tail)) == upstream


@pytest.mark.parametrize("tail", ["other/namespaces", "wh2/namespaces", "WH/namespaces"])
def test_another_prefix_is_not_found(tail: str) -> None:
    with pytest.raises(NotFound):
        _scope(warehouse="wh").upstream_tail(parse_catalog_path(tail))


def test_without_a_warehouse_the_whole_upstream_is_the_catalog() -> None:
    scope = _scope()
    assert scope.upstream_tail(parse_catalog_path("other/namespaces")) == "other/namespaces"
    assert scope.config_query("warehouse=mine") == "warehouse=mine"


def test_an_explicit_prefix_is_used_for_a_warehouse_named_otherwise() -> None:
    scope = _scope(warehouse="s3://bucket/", prefix="bucket")
    assert scope.upstream_tail(parse_catalog_path("namespaces")) == "bucket/namespaces"
    assert scope.config_query("warehouse=x&y=1") == "warehouse=s3%3A%2F%2Fbucket%2F"


async def _config_with(request: web.Request, recorded: Recorded) -> web.StreamResponse:
    if recorded.raw_path.startswith("/v1/config"):
        return web.json_response({"defaults": {}, "overrides": {"prefix": "somewhere-else"}})
    return web.json_response({"namespaces": []})


async def _fenced(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(
        upstream=RecordingUpstream(responder=_config_with),
        catalogs={"default": CatalogSettings(warehouse="wh")},
    )


async def test_config_tells_clients_the_catalogs_own_prefix(make_gateway: MakeGateway) -> None:
    gateway = await _fenced(make_gateway)
    headers = {"X-API-Key": gateway.root.api_key.plaintext()}

    reply = await gateway.client.get("/v1/default/v1/config?warehouse=other", headers=headers)

    assert json.loads(await reply.read())["overrides"]["prefix"] == "wh"
    assert gateway.upstream.last.raw_path == "/v1/config?warehouse=wh"


async def test_a_client_cannot_reach_another_warehouse_through_a_catalog(
    make_gateway: MakeGateway,
) -> None:
    gateway = await _fenced(make_gateway)
    headers = {"X-API-Key": gateway.root.api_key.plaintext()}

    refused = await gateway.client.get("/v1/default/v1/other/namespaces", headers=headers)
    unprefixed = await gateway.client.get("/v1/default/v1/namespaces", headers=headers)

    assert refused.status == 404
    assert (await refused.json())["error"]["code"] == 404
    assert unprefixed.status == 200
    assert [r.raw_path for r in gateway.upstream.catalog_requests()] == ["/v1/wh/namespaces"]
