"""Forward-auth (issue 15) behind the real app, in its three dialects: the same decision as the
gateway's proxy (grammar, methods, authentication, grants), role headers and the upstream
credential on allow, the Iceberg error on refusal (401/403 only under nginx, with the JSON in a
header), fail closed for whatever forward-auth cannot see, and nothing answered without the
proxy's secret. (The real nginx in front: tests/process/test_forward_auth_nginx.py.)"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web

from gateway.forward_auth import SECRET_HEADER
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings, ForwardAuthSettings, UpstreamAuthSettings
from gateway.state import GRANTS

from ..conftest import Gateway, MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..helpers import bearer, key_header

SECRET = "s" * 40
PROXY = {SECRET_HEADER: SECRET}
UPSTREAM_TOKEN = "upstream-catalog-token"


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(
        forward_auth=ForwardAuthSettings(secret=SECRET),
        upstream_auth=UpstreamAuthSettings(type="bearer", token=UPSTREAM_TOKEN),
    )


async def nginx(gateway: Gateway, method: str, uri: str, who: dict[str, str] | None = None,
                **headers: str) -> Any:  # fmt: skip
    return await gateway.client.get(
        "/forward-auth/nginx",
        headers={**PROXY, "X-Original-Method": method, "X-Original-URI": uri, **(who or {}),
                 **headers},
    )  # fmt: skip


async def test_an_allowed_request_gets_the_role_headers_and_the_upstream_credential(
    gateway: Gateway,
) -> None:
    resp = await nginx(gateway, "GET", "/v1/namespaces/sales", key_header(gateway.root))
    assert resp.status == 200, await resp.text()
    assert resp.headers["X-Pangolin-Principal-Id"] == gateway.root.user.id
    assert resp.headers["X-Pangolin-Role"] == "Root"
    assert resp.headers["X-Pangolin-Tenant"] == "default"
    assert resp.headers["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert resp.headers["Cache-Control"] == "no-store"
    assert await resp.read() == b""
    assert gateway.upstream.catalog_requests() == []  # decided, never forwarded


async def test_a_bearer_token_and_a_head_on_a_table_are_decided_too(gateway: Gateway) -> None:
    token = await gateway.token(gateway.root)
    resp = await nginx(gateway, "HEAD", "/v1/namespaces/sales/tables/orders", bearer(token))
    assert resp.status == 200, await resp.text()


async def test_without_a_credential_nginx_gets_a_401_with_the_json_in_a_header(
    gateway: Gateway,
) -> None:
    resp = await nginx(gateway, "GET", "/v1/namespaces")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    doc = json.loads(resp.headers["X-Pangolin-Error"])
    assert doc["error"]["type"] == "NotAuthorizedException" and doc["error"]["code"] == 401
    assert "Authorization" not in resp.headers


async def test_under_nginx_every_other_refusal_is_a_403_and_says_why(gateway: Gateway) -> None:
    who = key_header(gateway.root)
    resp = await nginx(gateway, "GET", "/v1/nowhere/v1/namespaces", who)  # no such catalog
    assert resp.status == 403
    doc = json.loads(resp.headers["X-Pangolin-Error"])
    assert doc["error"] == {"message": "No such catalog: nowhere", "type": "NotFoundException",
                            "code": 403}  # fmt: skip
    resp = await nginx(gateway, "TRACE", "/v1/namespaces", who)
    assert resp.status == 403


@pytest.mark.parametrize(
    ("method", "uri", "why"),
    [
        ("POST", "/v1/oauth/tokens", "the token endpoint is the gateway's own"),
        ("GET", "/v1/config", "the gateway filters this answer"),
        ("GET", "/v1/namespaces/sales/tables/orders", "the gateway filters this answer"),
        ("GET", "/v1/namespaces/sales/tables", "the gateway filters this answer"),
        ("POST", "/v1/namespaces", "the gateway judges its body"),
        ("POST", "/v1/transactions/commit", "the gateway judges its body"),
        ("GET", "/v1/default/v1/namespaces", "the gateway sends it upstream under another path"),
        ("GET", "/v1/namespaces/%73ales", "the gateway sends it upstream under another path"),
    ],
)
async def test_what_forward_auth_cannot_see_is_refused_never_allowed(
    gateway: Gateway, method: str, uri: str, why: str
) -> None:
    resp = await nginx(gateway, method, uri, key_header(gateway.root))
    assert resp.status == 403, await resp.text()
    message = json.loads(resp.headers["X-Pangolin-Error"])["error"]["message"]
    assert message.startswith("Forbidden: send this request to the gateway's own proxy")
    assert why in message
    assert "Authorization" not in resp.headers


async def test_nothing_is_decided_without_the_proxys_secret(gateway: Gateway) -> None:
    for headers in ({}, {SECRET_HEADER: "x" * 40}, {SECRET_HEADER: SECRET[:-1]}):
        resp = await gateway.client.get(
            "/forward-auth/traefik",
            headers={**headers, **key_header(gateway.root), "X-Forwarded-Method": "GET",
                     "X-Forwarded-Uri": "/v1/namespaces"},
        )  # fmt: skip
        assert resp.status == 403
        assert "Authorization" not in resp.headers
        assert "X-Pangolin-Role" not in resp.headers


async def test_forward_auth_is_off_without_a_secret(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway()
    resp = await gateway.client.get(
        "/forward-auth/nginx",
        headers={**key_header(gateway.root), "X-Original-Method": "GET",
                 "X-Original-URI": "/v1/namespaces"},
    )  # fmt: skip
    assert resp.status == 404


async def test_traefik_gets_the_exact_status_and_the_json_body(gateway: Gateway) -> None:
    def asking(method: str, uri: str) -> dict[str, str]:
        return {**PROXY, **key_header(gateway.root), "X-Forwarded-Method": method,
                "X-Forwarded-Uri": uri}  # fmt: skip

    resp = await gateway.client.get(
        "/forward-auth/traefik", headers=asking("GET", "/v1/nowhere/v1/namespaces")
    )
    assert resp.status == 404
    assert (await resp.json())["error"]["message"] == "No such catalog: nowhere"
    resp = await gateway.client.get("/forward-auth/traefik", headers=asking("PATCH", "/v1/x"))
    assert resp.status == 405
    resp = await gateway.client.get(
        "/forward-auth/traefik", headers=asking("DELETE", "/v1/namespaces/sales")
    )
    assert resp.status == 200
    assert resp.headers["X-Pangolin-Role"] == "Root"


async def test_envoy_asks_with_the_original_method_and_path_and_is_told_what_to_remove(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(forward_auth=ForwardAuthSettings(secret=SECRET))
    resp = await gateway.client.delete(
        "/forward-auth/envoy/v1/namespaces/sales", headers={**PROXY, **key_header(gateway.root)}
    )
    assert resp.status == 200, await resp.text()
    # No upstream credential configured: the client's own must not reach the upstream.
    assert "Authorization" not in resp.headers
    # Nor its own identity assertion (the catalog asks for none).
    assert resp.headers["X-Envoy-Auth-Headers-To-Remove"] == (
        "x-api-key,authorization,x-pangolin-assertion"
    )
    resp = await gateway.client.get(
        "/forward-auth/envoy/v1/namespaces/sales/tables/t",
        headers={**PROXY, **key_header(gateway.root)},
    )
    assert resp.status == 403
    assert "gateway's own proxy" in (await resp.json())["error"]["message"]


async def test_grants_decide_as_they_do_on_the_gateways_proxy(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        forward_auth=ForwardAuthSettings(secret=SECRET),
        catalogs={"default": CatalogSettings(default_access="none")},
    )
    etl: CreatedKey = await gateway.user("etl", role=Role.TENANT_USER)
    await gateway.app[GRANTS].grant(
        etl.user, catalog="default", resource=("sales",), action="read", actor="test"
    )
    who = key_header(etl)
    assert (await nginx(gateway, "GET", "/v1/namespaces/sales", who)).status == 200
    resp = await nginx(gateway, "DELETE", "/v1/namespaces/sales", who)
    assert resp.status == 403
    message = json.loads(resp.headers["X-Pangolin-Error"])["error"]["message"]
    assert (
        message == "Forbidden: this request needs the drop grant on this resource or one above it"
    )
    assert (await nginx(gateway, "GET", "/v1/namespaces/hr", who)).status == 403


async def test_a_rotated_key_is_refused_on_the_next_decision(gateway: Gateway) -> None:
    user = await gateway.user("etl")
    assert (await nginx(gateway, "GET", "/v1/namespaces/a", key_header(user))).status == 200
    await gateway.admin.rotate(user.user.id, actor="test")
    assert (await nginx(gateway, "GET", "/v1/namespaces/a", key_header(user))).status == 401


async def test_a_cached_decision_never_outlives_the_upstream_token_it_carries(
    make_gateway: MakeGateway,
) -> None:
    async def responder(request: web.Request, recorded: Recorded) -> web.StreamResponse:
        # The catalog's own token endpoint: tokens that live 20 s.
        return web.json_response({"access_token": "short", "expires_in": 20})

    gateway = await make_gateway(
        upstream=RecordingUpstream(responder=responder),
        upstream_auth=UpstreamAuthSettings(type="oauth2", client_id="gw"),
        forward_auth=ForwardAuthSettings(secret=SECRET, cache_seconds=300),
    )
    resp = await nginx(gateway, "GET", "/v1/namespaces/sales", key_header(gateway.root))
    assert resp.headers["Authorization"] == "Bearer short"
    # nginx keeps an entry up to a second past X-Accel-Expires: it ends before the token.
    assert 0 < int(resp.headers["X-Accel-Expires"]) <= 18
    assert resp.headers["Cache-Control"] == f"private, max-age={resp.headers['X-Accel-Expires']}"


async def test_allow_decisions_may_be_cached_by_the_proxy_when_configured(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(forward_auth=ForwardAuthSettings(secret=SECRET, cache_seconds=5))
    resp = await nginx(gateway, "GET", "/v1/namespaces/sales", key_header(gateway.root))
    assert resp.headers["Cache-Control"] == "private, max-age=5"
    assert resp.headers["X-Accel-Expires"] == "5"
    # A cache keyed on the request tells callers apart by these (the shipped nginx caches
    # nothing without them): every header the decision reads a credential from.
    # One line, exactly: nginx 1.22 varies its cache on the last Vary line but reads the
    # first for the template's check, so a second line could make credentials share one.
    assert resp.headers.getall("Vary") == ["X-API-Key, Authorization"]
    refused = await nginx(gateway, "GET", "/v1/namespaces/sales")
    assert "max-age" not in refused.headers.get("Cache-Control", "")
    assert "X-Accel-Expires" not in refused.headers
