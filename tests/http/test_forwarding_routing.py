"""Forwarding: tenants' catalogs, refused methods and path forms, and skipped filters."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings
from gateway.state import AUTHENTICATOR
from gateway.store import AuditRecord

from ..conftest import Gateway, MakeGateway
from ..helpers import key_header
from ..rawhttp import exchange
from .forwarding_support import (
    API,
    UPSTREAM_CONFIG,
    answer_json,
    assert_iceberg_error,
    call,
    load_table_result,
)

# -- catalogs and tenants ------------------------------------------------------------------


async def gateway_with_acme(make_gateway: MakeGateway) -> Gateway:
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(), "acme": CatalogSettings(tenant="acme")}
    )
    await gateway.store.insert_tenant(
        "acme",
        AuditRecord(
            at=gateway.clock(), actor="test", action="tenant.create", target_type="tenant",
            target_id=None, tenant_id=None, outcome="success",
        ),
    )  # fmt: skip
    return gateway


async def test_catalog_of_another_tenant_is_403(make_gateway: MakeGateway) -> None:
    gateway = await gateway_with_acme(make_gateway)
    default_user = await gateway.user("etl")
    acme_user = await gateway.user("acme-etl", tenant="acme")

    assert_iceberg_error(
        await call(gateway, "GET", "/v1/acme/v1/namespaces", headers=key_header(default_user)), 403
    )
    assert_iceberg_error(
        await call(gateway, "GET", "/v1/default/v1/namespaces", headers=key_header(acme_user)), 403
    )
    assert_iceberg_error(
        await call(gateway, "GET", "/v1/namespaces", headers=key_header(acme_user)), 403
    )
    assert gateway.upstream.requests == []
    reply = await call(gateway, "GET", "/v1/acme/v1/namespaces", headers=key_header(acme_user))
    assert reply.status == 200
    assert gateway.upstream.last.headers["X-Pangolin-Tenant"] == "acme"


async def test_root_may_use_the_catalogs_of_every_tenant(make_gateway: MakeGateway) -> None:
    gateway = await gateway_with_acme(make_gateway)

    for path in ("/v1/acme/v1/namespaces", "/v1/default/v1/namespaces", "/v1/namespaces"):
        assert (await call(gateway, "GET", path, headers=key_header(gateway.root))).status == 200
    assert len(gateway.upstream.catalog_requests()) == 3


async def test_catalog_list_shows_only_permitted_catalogs_with_client_settings(
    make_gateway: MakeGateway,
) -> None:
    gateway = await gateway_with_acme(make_gateway)
    acme_user = await gateway.user("acme-etl", tenant="acme")
    default_user = await gateway.user("etl")
    base = f"http://{gateway.client.host}:{gateway.client.port}"

    acme = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(acme_user))
    default = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(default_user))
    root = await call(gateway, "GET", "/api/v1/catalogs", headers=key_header(gateway.root))

    assert acme.json() == {
        "catalogs": [
            {
                "name": "acme", "tenant": "acme", "default": False, "uri": f"{base}/v1/acme/",
                "oauth2-server-uri": f"{base}/v1/acme/v1/oauth/tokens",
            }
        ]
    }  # fmt: skip
    assert default.json() == {
        "catalogs": [
            {
                "name": "default", "tenant": "default", "default": True,
                "uri": f"{base}/v1/default/",
                "oauth2-server-uri": f"{base}/v1/default/v1/oauth/tokens",
            }
        ]
    }  # fmt: skip
    assert root.json()["catalogs"] == acme.json()["catalogs"] + default.json()["catalogs"]


async def test_catalog_list_without_a_credential_is_401(gateway: Gateway) -> None:
    reply = await call(gateway, "GET", "/api/v1/catalogs")

    assert_iceberg_error(reply, 401)


# -- methods, path forms and filters (the security review's findings) ------------------------


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "MKCOL", "PUT", "PATCH", "OPTIONS"])
async def test_methods_iceberg_does_not_use_get_405_before_authentication_and_go_nowhere(
    gateway: Gateway, user: CreatedKey, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[object] = []
    authenticator = gateway.app[AUTHENTICATOR]
    real = authenticator.authenticate

    async def counting(headers: Any) -> Any:
        calls.append(headers)
        return await real(headers)

    monkeypatch.setattr(authenticator, "authenticate", counting)

    reply = await call(gateway, method, f"{API}/namespaces", headers=key_header(user))

    assert_iceberg_error(reply, 405)
    assert set(reply.headers["Allow"].replace(" ", "").split(",")) == {
        "GET",
        "HEAD",
        "POST",
        "DELETE",
    }
    assert calls == []  # refused before any authentication cost
    assert gateway.upstream.requests == []


async def test_a_lower_case_method_is_405(gateway: Gateway, user: CreatedKey) -> None:
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    raw = f"get {API}/namespaces HTTP/1.1\r\nHost: x\r\nX-API-Key: {user.api_key.plaintext()}"
    reply = await exchange(server.host, server.port, raw.encode() + b"\r\n\r\n")
    assert reply.status == 405
    assert "GET" in (reply.header("Allow") or "")
    assert reply.json()["error"]["code"] == reply.status
    assert gateway.upstream.requests == []


async def test_a_method_the_route_does_not_take_is_405_with_the_routes_methods(
    gateway: Gateway, user: CreatedKey
) -> None:
    reply = await call(gateway, "DELETE", f"{API}/config", headers=key_header(user))
    assert_iceberg_error(reply, 405)
    assert reply.headers["Allow"] == "GET"
    reply = await call(gateway, "GET", f"{API}/tables/rename", headers=key_header(user))
    assert reply.headers["Allow"] == "POST"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    "path",
    [
        f"{API}/namespaces/ns/tables//t",
        f"{API}/namespaces//ns/tables/t",
        f"{API}/namespaces/ns/tables/t/",
        f"{API}/namespaces/ns;x/tables/t",
        f"{API}/config/",
        f"{API}/config;x",
        f"{API}//config",
        "/v1//config",
        f"{API}/namespaces/ns%2Ftables%2Ft",
        "/%761/default/v1/namespaces",
    ],
)
@pytest.mark.parametrize("catalog", [CatalogSettings(), CatalogSettings(warehouse="wh")])
async def test_path_forms_a_lenient_upstream_reads_differently_are_400_and_go_nowhere(
    make_gateway: MakeGateway, path: str, catalog: CatalogSettings
) -> None:
    gateway = await make_gateway(catalogs={"default": catalog})
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted"}))

    reply = await call(gateway, "GET", path, headers=key_header(gateway.root))

    assert_iceberg_error(reply, 400)
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    ("path", "upstream_path"),
    [
        ("/v1/default/v1/%6Eamespaces", "/v1/wh/namespaces"),
        ("/v1/default/v1/%77h/namespaces/ns%1ftables", "/v1/wh/namespaces/ns%1Ftables"),
        ("/v1/%6eamespaces/a%3ab", "/v1/wh/namespaces/a%3Ab"),
    ],
)
async def test_paths_are_normalised_once_and_forwarded_in_that_form(
    make_gateway: MakeGateway, path: str, upstream_path: str
) -> None:
    gateway = await make_gateway(catalogs={"default": CatalogSettings(warehouse="wh")})

    reply = await call(gateway, "GET", path, headers=key_header(gateway.root))

    assert reply.status == 200
    assert gateway.upstream.last.raw_path == upstream_path


@pytest.mark.parametrize("status", [200, 201, 206, 400, 404, 409, 500, 503])
async def test_no_answer_status_skips_the_table_credential_filter(
    gateway: Gateway, user: CreatedKey, status: int
) -> None:
    answer_json(gateway.upstream, load_table_result({"token": "upstream-minted"}), status=status)

    reply = await call(gateway, "GET", f"{API}/namespaces/ns/tables/t", headers=key_header(user))

    assert reply.status == status
    assert b"upstream-minted" not in reply.body


@pytest.mark.parametrize("status", [200, 206, 404, 500])
async def test_no_answer_status_skips_the_config_filter(
    gateway: Gateway, user: CreatedKey, status: int
) -> None:
    answer_json(gateway.upstream, UPSTREAM_CONFIG, status=status)

    reply = await call(gateway, "GET", f"{API}/config", headers=key_header(user))

    assert reply.status == status
    assert b"upstream-token" not in reply.body and b"upstream:8181" not in reply.body


async def test_answers_built_from_the_host_header_are_never_stored_by_a_shared_cache(
    gateway: Gateway, user: CreatedKey
) -> None:
    forged = {**key_header(user), "Host": "attacker.example"}
    catalogs = await call(gateway, "GET", "/api/v1/catalogs", headers=forged)
    metadata = await call(gateway, "GET", "/.well-known/oauth-authorization-server", headers=forged)
    assert "attacker.example" in catalogs.body.decode()  # public_url is unset here
    for reply in (catalogs, metadata):
        assert reply.status == 200
        assert reply.headers["Cache-Control"] == "no-store"
