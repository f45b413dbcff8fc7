"""Token endpoint: every spelling is answered by the gateway; lookalikes are refused."""

from __future__ import annotations

import pytest
from yarl import URL

from gateway.settings import CatalogSettings

from ..conftest import Gateway, MakeGateway
from .token_support import (
    CATALOG_TOKEN_PATH,
    TOKEN_PATH,
    credentials,
    issued,
    jwt_part,
    oauth_error,
    post_token,
    wrong_secret_for,
)

# -- routing: answered here, never forwarded --------------------------------------------------


TOKEN_ENDPOINT_SPELLINGS = [
    TOKEN_PATH,
    CATALOG_TOKEN_PATH,
    TOKEN_PATH + "?client=java",
    "/v1/%6Fauth/tokens",  # %6F is "o": the same path (RFC 3986 normalisation)
    "/v1/default/v1/%6Fauth/tok%65ns",
    "/v1/unknown-catalog/v1/oauth/tokens",
]
# Forms a lenient server could read as its token endpoint: refused (400), never forwarded.
TOKEN_ENDPOINT_LOOKALIKES = [
    TOKEN_PATH + "/",
    CATALOG_TOKEN_PATH + "/",
    "/v1/OAUTH/tokens",
    "/v1/default/v1/OAuth/Tokens",
    "/v1/oauth%2Ftokens",
    "/v1/default/v1/oauth%2Ftokens",
    "/v1/default/v1/oauth%2ftokens",
    "/v1//oauth/tokens",
    "/v1/default/v1//oauth/tokens",
    # JAX-RS and servlet containers ignore ";" path parameters when routing.
    TOKEN_PATH + ";x=1",
    CATALOG_TOKEN_PATH + ";",
    "/v1/oauth;x/tokens",
    # Suffix matching (Spring), decoded "#" and "?", overlong UTF-8 and fullwidth slashes.
    CATALOG_TOKEN_PATH + ".json",
    CATALOG_TOKEN_PATH + "%2e",
    CATALOG_TOKEN_PATH + "%23",
    CATALOG_TOKEN_PATH + "%3F",
    "/v1/default/v1/oauth%c0%aftokens",
    "/v1/default/v1/oauth%ef%bc%8ftokens",
    "/v1/default/v1/oauth/tokens%00",
]


@pytest.mark.parametrize("path", TOKEN_ENDPOINT_LOOKALIKES)
@pytest.mark.parametrize("catalog", [CatalogSettings(), CatalogSettings(warehouse="wh")])
async def test_token_endpoint_lookalikes_are_refused_and_never_forwarded(
    make_gateway: MakeGateway, path: str, catalog: CatalogSettings
) -> None:
    gateway = await make_gateway(catalogs={"default": catalog})
    created = await gateway.user()
    api_key = {"X-API-Key": created.api_key.plaintext()}
    for method in ("POST", "GET"):
        resp = await gateway.client.request(
            method, URL(path, encoded=True), data=credentials(created), headers=api_key
        )
        assert resp.status == 400, await resp.text()
        assert (await resp.json())["error"]["type"] == "BadRequestException"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize("path", TOKEN_ENDPOINT_SPELLINGS)
async def test_every_spelling_of_the_token_endpoint_is_answered_here_and_never_forwarded(
    gateway: Gateway, path: str
) -> None:
    created = await gateway.user()
    # An X-API-Key authenticates the caller, so a mis-routed request would be forwarded.
    api_key = {"X-API-Key": created.api_key.plaintext()}
    body = await issued(await post_token(gateway, credentials(created), headers=api_key, path=path))
    assert jwt_part(body["access_token"], 1)["iss"] == "pangolin-gateway"
    refused = await post_token(
        gateway,
        credentials(created, client_secret=wrong_secret_for(created)),
        headers=api_key,
        path=path,
    )
    await oauth_error(refused, 401, "invalid_client")
    await oauth_error(await gateway.client.get(path, headers=api_key), 405, "invalid_request")
    assert gateway.upstream.requests == []


async def test_doubled_slash_inside_the_token_path_is_not_forwarded(gateway: Gateway) -> None:
    created = await gateway.user()
    api_key = {"X-API-Key": created.api_key.plaintext()}
    await post_token(gateway, credentials(created), headers=api_key, path="/v1/oauth//tokens")
    assert gateway.upstream.requests == []
