"""Token endpoint: client_credentials as real clients send it, and the token it answers."""

from __future__ import annotations

import pytest
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization

from gateway.settings import TokenSettings

from ..conftest import ENGINES, Gateway, MakeGateway
from ..helpers import bearer
from .token_support import (
    ACCESS_TOKEN_TYPE,
    CATALOG_TOKEN_PATH,
    FORM_TYPE,
    TOKEN_PATH,
    assert_token_works,
    basic,
    credentials,
    id_and_key,
    issued,
    jwt_part,
    post_token,
)

# Tokens issued and refused on both stores (issue 13).
pytestmark = pytest.mark.parametrize("store_engine", ENGINES, indirect=True)


async def published_keys(gateway: Gateway) -> KeySetSerialization:
    resp = await gateway.client.get("/.well-known/jwks.json")
    assert resp.status == 200
    jwks: KeySetSerialization = await resp.json()
    return jwks


# -- client_credentials: the shapes real clients send -----------------------------------------


async def test_form_credentials_with_catalog_scope_get_a_token_for_the_key_owner(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    body = await issued(await post_token(gateway, credentials(created)))
    assert body["scope"] == "catalog"
    assert jwt_part(body["access_token"], 1)["sub"] == created.user.id
    await assert_token_works(gateway, body["access_token"], created)


async def test_basic_credentials_with_duckdb_principal_role_scope_get_a_token_and_the_scope_back(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    form = {"grant_type": "client_credentials", "scope": "PRINCIPAL_ROLE:ALL"}
    body = await issued(await post_token(gateway, form, headers=basic(id_and_key(created))))
    assert body["scope"] == "PRINCIPAL_ROLE:ALL"
    await assert_token_works(gateway, body["access_token"], created)


async def test_basic_credentials_without_scope_like_pyiceberg_oauth2_get_the_catalog_scope(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    form = {"grant_type": "client_credentials"}
    body = await issued(await post_token(gateway, form, headers=basic(id_and_key(created))))
    assert body["scope"] == "catalog"
    await assert_token_works(gateway, body["access_token"], created)


async def test_client_secret_alone_without_client_id_is_enough_because_the_key_names_its_owner(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    form = {"grant_type": "client_credentials", "client_secret": created.api_key.plaintext()}
    body = await issued(await post_token(gateway, form))
    await assert_token_works(gateway, body["access_token"], created)


@pytest.mark.parametrize("value", ["{key}", ":{key}"], ids=["no-colon", "empty-client-id"])
async def test_basic_value_without_client_id_is_the_whole_secret(
    gateway: Gateway, value: str
) -> None:
    created = await gateway.user()
    headers = basic(value.format(key=created.api_key.plaintext()))
    body = await issued(
        await post_token(gateway, {"grant_type": "client_credentials"}, headers=headers)
    )
    await assert_token_works(gateway, body["access_token"], created)


@pytest.mark.parametrize(
    "content_type",
    [f"{FORM_TYPE}; charset=UTF-8", f"{FORM_TYPE}; charset=ISO-8859-1", FORM_TYPE.upper()],
)
async def test_form_content_type_parameters_and_case_are_accepted(
    gateway: Gateway, content_type: str
) -> None:
    created = await gateway.user()
    resp = await post_token(gateway, credentials(created), headers={"Content-Type": content_type})
    await issued(resp)


@pytest.mark.parametrize("stray", ["not-a-token", "None", "other-user-token", "other-user-key"])
async def test_stray_bearer_header_alongside_form_credentials_is_ignored(
    gateway: Gateway, stray: str
) -> None:
    created = await gateway.user()
    other = await gateway.user("other")
    values = {
        "other-user-token": await gateway.token(other),
        "other-user-key": other.api_key.plaintext(),
    }
    resp = await post_token(gateway, credentials(created), headers=bearer(values.get(stray, stray)))
    body = await issued(resp)
    assert jwt_part(body["access_token"], 1)["sub"] == created.user.id


async def test_unknown_form_fields_are_ignored(gateway: Gateway) -> None:
    created = await gateway.user()
    extra = {
        "audience": "https://elsewhere.example",
        "resource": "urn:thing",
        "requested_token_type": "urn:ietf:params:oauth:token-type:id_token",
        "actor_token_type": ACCESS_TOKEN_TYPE,
        "surprise": "",
    }
    body = await issued(await post_token(gateway, credentials(created, **extra)))
    await assert_token_works(gateway, body["access_token"], created)


@pytest.mark.parametrize(
    "scope", ["catalog", "PRINCIPAL_ROLE:ALL", "catalog sql:read", "x" * 1024, "ünïcode"]
)
async def test_any_scope_is_echoed_in_the_response_and_the_token(
    gateway: Gateway, scope: str
) -> None:
    created = await gateway.user()
    body = await issued(await post_token(gateway, credentials(created, scope=scope)))
    assert body["scope"] == scope
    assert jwt_part(body["access_token"], 1)["scope"] == scope


# -- the success answer and the token ---------------------------------------------------------


async def test_success_answer_has_bearer_type_lifetime_issued_type_and_no_refresh_token(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    resp = await post_token(gateway, credentials(created))
    body = await issued(resp)  # checks the exact field set and Cache-Control: no-store
    assert body["expires_in"] == 3600
    assert "refresh_token" not in body


async def test_expires_in_and_token_lifetime_follow_the_configured_lifetime(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(tokens=TokenSettings(lifetime_seconds=120))
    created = await gateway.user()
    body = await issued(await post_token(gateway, credentials(created)))
    claims = jwt_part(body["access_token"], 1)
    assert body["expires_in"] == 120
    assert claims["exp"] - claims["iat"] == 120
    assert claims["iat"] == int(gateway.clock.now)


async def test_token_is_an_es256_jwt_whose_kid_is_published_and_which_verifies_with_the_jwks(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    token = (await issued(await post_token(gateway, credentials(created))))["access_token"]
    header = jwt_part(token, 0)
    jwks = await published_keys(gateway)
    assert header["alg"] == "ES256"
    assert header["kid"] in [key["kid"] for key in jwks["keys"]]
    assert all("d" not in key for key in jwks["keys"]), "the JWKS must hold public keys only"

    decoded = jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert decoded.header["kid"] == header["kid"]
    assert decoded.claims["sub"] == created.user.id
    assert decoded.claims["tenant"] == created.user.tenant_id
    assert decoded.claims["role"] == "TenantUser"
    assert decoded.claims["kgen"] == created.user.key_generation


@pytest.mark.parametrize("path", [TOKEN_PATH, CATALOG_TOKEN_PATH])
async def test_token_from_either_token_path_works_as_bearer_on_catalog_routes(
    gateway: Gateway, path: str
) -> None:
    created = await gateway.user()
    body = await issued(await post_token(gateway, credentials(created), path=path))
    await assert_token_works(gateway, body["access_token"], created)
