"""The OAuth2 token endpoint (``POST /v1/oauth/tokens``), as real Iceberg clients call it.

Every test runs the real app, a real SQLite store and a recording fake upstream; time moves by
advancing the gateway's ``FakeClock``. Client shapes come from the wire captures in
``shared/reference/iceberg-clients-on-the-wire.md`` (Java, PyIceberg legacy and ``oauth2``,
DuckDB).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientResponse
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, KeySetSerialization
from multidict import CIMultiDict
from yarl import URL

# conftest registers aiohttp's legacy plugin, whose client fixtures run in a loop of their own
# ("Timeout context manager should be used inside a task"); these bind them to the test's loop.
from gateway.identity.models import ApiKey, generate_key
from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings, ServerSettings, TokenSettings

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer

FORM_TYPE = "application/x-www-form-urlencoded"
TOKEN_PATH = "/v1/oauth/tokens"
CATALOG_TOKEN_PATH = "/v1/default/v1/oauth/tokens"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
RFC6749_ERRORS = frozenset(
    {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
     "unsupported_grant_type", "invalid_scope"}
)  # fmt: skip
DEFAULT_MAX_FORM_BYTES = 65536

Form = Mapping[str, str] | Sequence[tuple[str, str]]


# -- helpers ---------------------------------------------------------------------------------


async def fresh_user(gateway: Gateway, **kwargs: Any) -> CreatedKey:
    """A service user with a name of its own (names are unique per tenant)."""
    return await gateway.user(f"etl-{uuid.uuid4().hex[:12]}", **kwargs)


def credentials(created: CreatedKey, **extra: str) -> dict[str, str]:
    """The Java / PyIceberg-legacy shape: client_credentials with both values in the form."""
    return {
        "grant_type": "client_credentials",
        "client_id": created.user.id,
        "client_secret": created.api_key.plaintext(),
        "scope": "catalog",
        **extra,
    }


def exchange(subject: str, **extra: str) -> dict[str, str]:
    """Java's refresh: RFC 8693 token exchange of the current token."""
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "scope": "catalog",
        **extra,
    }


def id_and_key(created: CreatedKey) -> str:
    return f"{created.user.id}:{created.api_key.plaintext()}"


def basic(value: str | bytes) -> dict[str, str]:
    """``Authorization: Basic`` with the raw value base64-encoded, as DuckDB and PyIceberg do."""
    raw = value.encode() if isinstance(value, str) else value
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def wrong_secret_for(created: CreatedKey) -> str:
    """A well-formed key with the right key id and a wrong secret."""
    return ApiKey(created.api_key.key_id, generate_key().secret).plaintext()


async def post_token(
    gateway: Gateway,
    form: Form | bytes,
    *,
    headers: Mapping[str, str] | None = None,
    path: str = TOKEN_PATH,
) -> ClientResponse:
    body = form if isinstance(form, bytes) else urlencode(form).encode()
    sent = CIMultiDict(headers or {})  # repeated headers stay repeated
    sent.setdefault("Content-Type", FORM_TYPE)
    return await gateway.client.post(path, data=body, headers=sent)


async def issued(resp: ClientResponse) -> dict[str, Any]:
    """The body of a successful token response, after checking its RFC 6749 shape."""
    text = await resp.text()
    assert resp.status == 200, text
    assert resp.content_type == "application/json"
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = json.loads(text)
    assert set(body) == {"access_token", "token_type", "expires_in", "issued_token_type", "scope"}
    assert body["token_type"] == "bearer"
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert type(body["expires_in"]) is int
    return body


async def oauth_error(
    resp: ClientResponse, status: int, error: str, *, never_shows: Sequence[str] = ()
) -> dict[str, Any]:
    """A flat RFC 6749 error answer, which repeats none of ``never_shows``."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/json"
    body: dict[str, Any] = json.loads(text)
    assert body["error"] == error, text
    assert error in RFC6749_ERRORS
    assert set(body) <= {"error", "error_description", "error_uri"}
    assert all(isinstance(value, str) for value in body.values())
    for secret in never_shows:
        assert secret not in text
        assert all(secret not in value for value in resp.headers.values())
    return body


def jwt_part(token: str, index: int) -> dict[str, Any]:
    """Header (0) or claims (1) of a compact JWT, unverified."""
    segment = token.split(".")[index]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return decoded


def b64url_json(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


async def published_keys(gateway: Gateway) -> KeySetSerialization:
    resp = await gateway.client.get("/.well-known/jwks.json")
    assert resp.status == 200
    jwks: KeySetSerialization = await resp.json()
    return jwks


async def list_namespaces(gateway: Gateway, token: str) -> ClientResponse:
    return await gateway.client.get("/v1/namespaces", headers=bearer(token))


async def assert_token_works(gateway: Gateway, token: str, owner: CreatedKey) -> None:
    """The token authenticates a catalog request, which reaches the upstream as its owner."""
    resp = await list_namespaces(gateway, token)
    assert resp.status == 200, await resp.text()
    forwarded = gateway.upstream.last
    assert forwarded.raw_path == "/v1/namespaces"
    assert forwarded.headers["X-Pangolin-Principal-Id"] == owner.user.id
    assert token not in forwarded.headers.get("Authorization", "")


async def assert_token_refused(gateway: Gateway, token: str) -> None:
    """The Iceberg 401 every dead credential gets on catalog routes; nothing is forwarded."""
    before = len(gateway.upstream.requests)
    resp = await list_namespaces(gateway, token)
    assert resp.status == 401, await resp.text()
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "code"}
    assert body["error"]["type"] == "NotAuthorizedException"
    assert body["error"]["code"] == 401
    assert len(gateway.upstream.requests) == before


def comparable(resp: ClientResponse, body: bytes) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers, minus the headers that differ on every response."""
    headers = sorted(
        (name.lower(), value)
        for name, value in resp.headers.items()
        if name.lower() not in ("date", "x-request-id")
    )
    return resp.status, body, headers


async def let_the_gateway_run() -> None:
    """Yield to the event loop (no time passes) so the gateway consumes what was sent so far."""
    for _ in range(50):
        await asyncio.sleep(0)


async def in_pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    """A chunked request body that arrives piece by piece, as from a slow client or proxy."""
    for piece in pieces:
        yield piece
        await let_the_gateway_run()


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


# -- token exchange (Java's refresh) ----------------------------------------------------------


@pytest.mark.parametrize("path", [TOKEN_PATH, CATALOG_TOKEN_PATH])
async def test_exchange_of_a_valid_token_sent_as_bearer_returns_a_fresh_token_for_the_same_user(
    gateway: Gateway, path: str
) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    gateway.clock.advance(3300)  # Java refreshes at 55 of 60 minutes
    body = await issued(await post_token(gateway, exchange(old), headers=bearer(old), path=path))
    new = body["access_token"]
    assert new != old
    claims = jwt_part(new, 1)
    assert claims["sub"] == created.user.id
    assert claims["exp"] == int(gateway.clock.now) + 3600
    assert body["scope"] == "catalog"
    gateway.clock.advance(600)  # the old token is dead by now, the new one is not
    await assert_token_refused(gateway, old)
    await assert_token_works(gateway, new, created)


async def test_exchanged_token_can_be_exchanged_again_using_the_returned_issued_token_type(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    token, token_type = await gateway.token(created), ACCESS_TOKEN_TYPE
    for _ in range(3):
        gateway.clock.advance(3300)
        form = exchange(token, subject_token_type=token_type)
        body = await issued(await post_token(gateway, form, headers=bearer(token)))
        token, token_type = body["access_token"], body["issued_token_type"]
    await assert_token_works(gateway, token, created)


async def test_exchange_accepts_the_jwt_subject_token_type(gateway: Gateway) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    form = exchange(old, subject_token_type="urn:ietf:params:oauth:token-type:jwt")
    await issued(await post_token(gateway, form))


async def test_exchange_of_an_expired_token_without_client_credentials_is_invalid_grant(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    gateway.clock.advance(3600 + 10)
    resp = await post_token(gateway, exchange(old), headers=bearer(old))
    await oauth_error(resp, 400, "invalid_grant")


@pytest.mark.parametrize("auth", ["basic", "form"])
async def test_exchange_of_an_expired_token_with_its_owners_credentials_succeeds(
    gateway: Gateway, auth: str
) -> None:
    """Java's refreshExpiredToken: the same exchange, with Basic <credential>."""
    created = await gateway.user()
    old = await gateway.token(created)
    gateway.clock.advance(3600 + 10)
    if auth == "basic":
        resp = await post_token(gateway, exchange(old), headers=basic(id_and_key(created)))
    else:
        form = exchange(old, client_id=created.user.id, client_secret=created.api_key.plaintext())
        resp = await post_token(gateway, form)
    new = (await issued(resp))["access_token"]
    assert jwt_part(new, 1)["sub"] == created.user.id
    await assert_token_works(gateway, new, created)


@pytest.mark.parametrize("expired", [True, False], ids=["expired-subject", "valid-subject"])
async def test_exchange_with_credentials_of_a_different_user_is_invalid_grant(
    gateway: Gateway, expired: bool
) -> None:
    created = await gateway.user()
    other = await gateway.user("other")
    old = await gateway.token(created)
    if expired:
        gateway.clock.advance(3600 + 10)
    resp = await post_token(gateway, exchange(old), headers=basic(id_and_key(other)))
    await oauth_error(resp, 400, "invalid_grant", never_shows=[other.api_key.plaintext()])


async def test_exchange_with_a_wrong_client_secret_is_invalid_client(gateway: Gateway) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    gateway.clock.advance(3600 + 10)
    wrong = wrong_secret_for(created)
    resp = await post_token(gateway, exchange(old), headers=basic(f"{created.user.id}:{wrong}"))
    await oauth_error(resp, 401, "invalid_client", never_shows=[wrong])


def _tampered(token: str, created: CreatedKey, gateway: Gateway) -> str:
    """Our header and signature around claims that now say Root."""
    header, _, signature = token.split(".")
    claims = {**jwt_part(token, 1), "sub": gateway.root.user.id, "role": "Root"}
    return f"{header}.{b64url_json(claims)}.{signature}"


def _unsigned(token: str, created: CreatedKey, gateway: Gateway) -> str:
    return f"{b64url_json({'alg': 'none', 'typ': 'JWT'})}.{b64url_json(jwt_part(token, 1))}."


def _signed_by_a_stranger_with_our_kid(token: str, created: CreatedKey, gateway: Gateway) -> str:
    stranger = ECKey.generate_key("P-256")
    header = {"alg": "ES256", "kid": jwt_part(token, 0)["kid"]}
    return jwt.encode(header, jwt_part(token, 1), stranger, algorithms=["ES256"])


BAD_SUBJECTS: dict[str, Callable[[str, CreatedKey, Gateway], str]] = {
    "garbage": lambda token, created, gateway: "garbage",
    "three-garbage-parts": lambda token, created, gateway: "a.b.c",
    "truncated-signature": lambda token, created, gateway: token[:-10],
    "api-key-not-a-token": lambda token, created, gateway: created.api_key.plaintext(),
    "tampered-claims": _tampered,
    "alg-none": _unsigned,
    "foreign-signed-with-our-kid": _signed_by_a_stranger_with_our_kid,
}


@pytest.mark.parametrize("make_subject", BAD_SUBJECTS.values(), ids=BAD_SUBJECTS.keys())
async def test_exchange_of_a_subject_token_that_is_not_ours_is_invalid_grant(
    gateway: Gateway, make_subject: Callable[[str, CreatedKey, Gateway], str]
) -> None:
    created = await gateway.user()
    subject = make_subject(await gateway.token(created), created, gateway)
    resp = await post_token(gateway, exchange(subject), headers=bearer(subject))
    await oauth_error(resp, 400, "invalid_grant", never_shows=[created.api_key.plaintext()])
    if subject != created.api_key.plaintext():  # "Bearer pgl_..." is a valid catalog credential
        await assert_token_refused(gateway, subject)


async def test_token_of_another_gateway_is_refused_for_exchange_and_on_catalog_routes(
    make_gateway: MakeGateway,
) -> None:
    ours, theirs = await make_gateway(), await make_gateway()
    foreign = await theirs.token(await theirs.user())
    await oauth_error(await post_token(ours, exchange(foreign)), 400, "invalid_grant")
    await assert_token_refused(ours, foreign)


async def test_exchange_of_an_oversized_subject_token_is_refused_before_parsing(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    token = await gateway.token(created)
    oversized = token + "A" * (8 * 1024)
    await oauth_error(await post_token(gateway, exchange(oversized)), 400, "invalid_request")


@pytest.mark.parametrize("subject", [None, ""], ids=["absent", "empty"])
async def test_exchange_without_subject_token_is_invalid_request(
    gateway: Gateway, subject: str | None
) -> None:
    token = await gateway.token(await gateway.user())
    form = exchange(subject or "")
    if subject is None:
        del form["subject_token"]
    resp = await post_token(gateway, form, headers=bearer(token))
    await oauth_error(resp, 400, "invalid_request")


@pytest.mark.parametrize(
    "subject_type",
    ["urn:ietf:params:oauth:token-type:refresh_token", "urn:ietf:params:oauth:token-type:saml2",
     "access_token", "", None],
)  # fmt: skip
async def test_exchange_with_unsupported_subject_token_type_is_invalid_request(
    gateway: Gateway, subject_type: str | None
) -> None:
    token = await gateway.token(await gateway.user())
    form = exchange(token, subject_token_type=subject_type or "")
    if subject_type is None:
        del form["subject_token_type"]
    await oauth_error(await post_token(gateway, form), 400, "invalid_request")


# -- errors: shape and status -----------------------------------------------------------------


async def test_missing_grant_type_is_invalid_request(gateway: Gateway) -> None:
    created = await gateway.user()
    form = credentials(created)
    del form["grant_type"]
    resp = await post_token(gateway, form)
    await oauth_error(resp, 400, "invalid_request", never_shows=[created.api_key.plaintext()])


@pytest.mark.parametrize(
    "grant_type", ["password", "authorization_code", "refresh_token", "CLIENT_CREDENTIALS", 'ü"']
)
async def test_other_grant_types_are_unsupported_grant_type(
    gateway: Gateway, grant_type: str
) -> None:
    created = await gateway.user()
    resp = await post_token(gateway, credentials(created, grant_type=grant_type))
    await oauth_error(
        resp, 400, "unsupported_grant_type", never_shows=[created.api_key.plaintext()]
    )


async def _wrong_secret(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway)
    return credentials(created, client_secret=wrong_secret_for(created))


async def _unknown_client_id(gateway: Gateway) -> dict[str, str]:
    key = generate_key().plaintext()
    return {
        "grant_type": "client_credentials",
        "client_id": str(uuid.uuid4()),
        "client_secret": key,
    }


async def _client_id_of_another_user(gateway: Gateway) -> dict[str, str]:
    return credentials(await fresh_user(gateway), client_id=gateway.root.user.id)


async def _malformed_key(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway)
    return credentials(created, client_secret=created.api_key.plaintext() + "x")


async def _no_secret(gateway: Gateway) -> dict[str, str]:
    form = credentials(await fresh_user(gateway))
    del form["client_secret"]
    return form


async def _deactivated(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway)
    await gateway.token(created)  # warm every cache first
    await gateway.admin.deactivate(created.user.id, actor="test")
    return credentials(created)


async def _expired(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway, expires_at=gateway.clock.now + 60)
    await gateway.token(created)
    gateway.clock.advance(61)
    return credentials(created)


async def _deleted(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway)
    await gateway.token(created)
    await gateway.admin.delete(created.user.id, actor="test")
    return credentials(created)


async def _rotated_away(gateway: Gateway) -> dict[str, str]:
    created = await fresh_user(gateway)
    await gateway.token(created)
    await gateway.admin.rotate(created.user.id, actor="test")
    return credentials(created)


REFUSED_CLIENTS: dict[str, Callable[[Gateway], Awaitable[dict[str, str]]]] = {
    "wrong-secret": _wrong_secret,
    "unknown-client-id": _unknown_client_id,
    "client-id-of-another-user": _client_id_of_another_user,
    "malformed-key": _malformed_key,
    "no-secret": _no_secret,
    "deactivated": _deactivated,
    "expired": _expired,
    "deleted": _deleted,
    "rotated-away": _rotated_away,
}


@pytest.mark.parametrize("refused_form", REFUSED_CLIENTS.values(), ids=REFUSED_CLIENTS.keys())
@pytest.mark.parametrize("auth", ["form", "basic"])
async def test_refused_client_credentials_are_invalid_client_401_without_the_secret(
    gateway: Gateway, refused_form: Callable[[Gateway], Awaitable[dict[str, str]]], auth: str
) -> None:
    form = await refused_form(gateway)
    secret = form.get("client_secret", "")
    if auth == "basic":
        id_and_secret = f"{form.pop('client_id', '')}:{form.pop('client_secret', '')}"
        resp = await post_token(gateway, form, headers=basic(id_and_secret))
    else:
        resp = await post_token(gateway, form)
    body = await oauth_error(resp, 401, "invalid_client", never_shows=[secret] if secret else [])
    assert body["error_description"] == "Client authentication failed"
    if auth == "basic":  # RFC 6749 5.2: answer a failed Basic with a Basic challenge
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    assert gateway.upstream.requests == []


async def test_unknown_client_id_wrong_secret_and_dead_keys_get_identical_answers(
    gateway: Gateway,
) -> None:
    answers = []
    for make_form in (_unknown_client_id, _wrong_secret, _deactivated, _rotated_away):
        resp = await post_token(gateway, await make_form(gateway))
        answers.append(comparable(resp, await resp.read()))
    assert answers[0][0] == 401
    assert all(answer == answers[0] for answer in answers)


async def test_no_client_credentials_at_all_is_invalid_client(gateway: Gateway) -> None:
    resp = await post_token(gateway, {"grant_type": "client_credentials", "scope": "catalog"})
    await oauth_error(resp, 401, "invalid_client")


@pytest.mark.parametrize(
    "authorization",
    ["Basic !!!not-base64!!!", "Basic YWJj", "Basic " + base64.b64encode(b"\xff\xfe:\xfd").decode(),
     "Basic", "Basic   "],
    ids=["not-base64", "bad-padding", "not-utf8", "no-value", "blank-value"],
)  # fmt: skip
async def test_unusable_basic_header_is_invalid_client(
    gateway: Gateway, authorization: str
) -> None:
    resp = await post_token(
        gateway, {"grant_type": "client_credentials"}, headers={"Authorization": authorization}
    )
    await oauth_error(resp, 401, "invalid_client")


async def test_basic_and_form_credentials_together_are_invalid_request(gateway: Gateway) -> None:
    created, other = await gateway.user("a"), await gateway.user("b")
    other_basic = basic(f"{other.user.id}:{other.api_key.plaintext()}")
    secret_only = {"grant_type": "client_credentials", "client_secret": "x"}
    for form in (
        credentials(created),
        secret_only,
        {"grant_type": "client_credentials", "client_id": "x"},
    ):
        resp = await post_token(gateway, form, headers=other_basic)
        await oauth_error(resp, 400, "invalid_request", never_shows=[other.api_key.plaintext()])


async def test_two_authorization_headers_at_the_token_endpoint_are_invalid_request(
    gateway: Gateway,
) -> None:
    created, other = await gateway.user("a"), await gateway.user("b")
    headers = CIMultiDict(
        [
            *basic(f"{created.user.id}:{created.api_key.plaintext()}").items(),
            *basic(f"{other.user.id}:{other.api_key.plaintext()}").items(),
        ]
    )
    resp = await post_token(gateway, {"grant_type": "client_credentials"}, headers=headers)
    await oauth_error(resp, 400, "invalid_request")


async def test_basic_credentials_are_form_decoded_as_rfc_6749_says(gateway: Gateway) -> None:
    created = await gateway.user()
    client_id = created.user.id.replace("-", "%2D")
    secret = created.api_key.plaintext().replace("_", "%5F")
    raw = f"{client_id}:{secret}".encode()
    headers = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
    body = await issued(
        await post_token(gateway, {"grant_type": "client_credentials"}, headers=headers)
    )
    await assert_token_works(gateway, body["access_token"], created)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b'{"grant_type": "client_credentials", "client_secret": "%s"}'),
        ("text/plain", b"grant_type=client_credentials&client_secret=%s"),
        ("multipart/form-data; boundary=x", b"grant_type=client_credentials&client_secret=%s"),
        ("application/octet-stream", b"grant_type=client_credentials&client_secret=%s"),
    ],
)
async def test_body_that_is_not_form_encoded_is_invalid_request(
    gateway: Gateway, content_type: str, body: bytes
) -> None:
    key = (await gateway.user()).api_key.plaintext()
    resp = await post_token(gateway, body % key.encode(), headers={"Content-Type": content_type})
    await oauth_error(resp, 400, "invalid_request", never_shows=[key])


def padded_to(form: Mapping[str, str], size: int) -> bytes:
    """The form, with an ignored ``pad`` field making the body exactly ``size`` bytes."""
    body = urlencode(form).encode() + b"&pad="
    return body + b"x" * (size - len(body))


@pytest.mark.parametrize("limit", [DEFAULT_MAX_FORM_BYTES, 2048], ids=["default", "configured"])
async def test_form_body_up_to_max_form_bytes_is_read_and_one_byte_more_is_413(
    make_gateway: MakeGateway, limit: int
) -> None:
    changes = (
        {} if limit == DEFAULT_MAX_FORM_BYTES else {"server": ServerSettings(max_form_bytes=limit)}
    )
    gateway = await make_gateway(**changes)
    created = await gateway.user()
    await issued(await post_token(gateway, padded_to(credentials(created), limit)))
    resp = await post_token(gateway, padded_to(credentials(created), limit + 1))
    await oauth_error(resp, 413, "invalid_request", never_shows=[created.api_key.plaintext()])


async def test_chunked_form_body_over_max_form_bytes_is_413(gateway: Gateway) -> None:
    created = await gateway.user()
    body = padded_to(credentials(created), DEFAULT_MAX_FORM_BYTES + 1)
    half = len(body) // 2
    resp = await gateway.client.post(
        TOKEN_PATH, data=in_pieces(body[:half], body[half:]), headers={"Content-Type": FORM_TYPE}
    )
    await oauth_error(resp, 413, "invalid_request")


async def test_form_body_arriving_in_pieces_is_read_whole(gateway: Gateway) -> None:
    created = await gateway.user()
    body = urlencode(credentials(created)).encode()
    cut = body.index(b"client_secret") + len("client_se")
    resp = await gateway.client.post(
        TOKEN_PATH, data=in_pieces(body[:cut], body[cut:]), headers={"Content-Type": FORM_TYPE}
    )
    await assert_token_works(gateway, (await issued(resp))["access_token"], created)


@pytest.mark.parametrize("name", ["grant_type", "client_secret", "scope", "pad", 'a"b', "ü"])
async def test_repeated_parameter_is_invalid_request(gateway: Gateway, name: str) -> None:
    created = await gateway.user()
    form = credentials(created)
    value = form.pop(name, "1")  # even the very same value twice is refused
    resp = await post_token(gateway, [*form.items(), (name, value), (name, value)])
    await oauth_error(resp, 400, "invalid_request", never_shows=[created.api_key.plaintext()])


async def test_too_many_form_fields_is_invalid_request(gateway: Gateway) -> None:
    created = await gateway.user()
    form = [*credentials(created).items(), *((f"f{i}", "") for i in range(64))]
    await oauth_error(await post_token(gateway, form), 400, "invalid_request")


@pytest.mark.parametrize(
    "bad_scope",
    [b"%FF", b"\xff", b"%E2%82", b"catalog%ZZ", b"catalog%", b"catalog%4", b"%C0%AF"],
    ids=["escaped-invalid-utf8", "raw-invalid-utf8", "truncated-utf8", "bad-escape-digits",
         "bare-percent", "short-escape", "overlong-utf8"],
)  # fmt: skip
async def test_malformed_percent_encoding_or_invalid_utf8_is_invalid_request(
    gateway: Gateway, bad_scope: bytes
) -> None:
    created = await gateway.user()
    form = credentials(created)
    del form["scope"]
    body = urlencode(form).encode() + b"&scope=" + bad_scope
    await oauth_error(await post_token(gateway, body), 400, "invalid_request")


@pytest.mark.parametrize(
    "scope", ["x" * 1025, "catalog\x00", "catalog\nx"], ids=["long", "nul", "newline"]
)
async def test_oversized_or_unprintable_scope_is_invalid_request(
    gateway: Gateway, scope: str
) -> None:
    created = await gateway.user()
    resp = await post_token(gateway, credentials(created, scope=scope))
    await oauth_error(resp, 400, "invalid_request")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
@pytest.mark.parametrize("path", [TOKEN_PATH, CATALOG_TOKEN_PATH])
async def test_methods_other_than_post_get_405_with_allow_post(
    gateway: Gateway, method: str, path: str
) -> None:
    resp = await gateway.client.request(method, path)
    await oauth_error(resp, 405, "invalid_request")
    assert resp.headers["Allow"] == "POST"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize("method", ["PUT", "PATCH", "TRACE"])
@pytest.mark.parametrize("path", [TOKEN_PATH, CATALOG_TOKEN_PATH])
async def test_methods_iceberg_never_uses_get_405_before_the_token_endpoint(
    gateway: Gateway, method: str, path: str
) -> None:
    resp = await gateway.client.request(method, path)
    assert resp.status == 405
    assert (await resp.json())["error"]["code"] == 405
    assert "PUT" not in resp.headers["Allow"]
    assert gateway.upstream.requests == []


# -- revocation reaches tokens ----------------------------------------------------------------


async def test_rotation_kills_tokens_minted_before_it_on_the_very_next_request(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    await assert_token_works(gateway, old, created)  # caches are warm

    rotated = await gateway.admin.rotate(created.user.id, actor="test")

    await assert_token_refused(gateway, old)
    await oauth_error(
        await post_token(gateway, exchange(old), headers=bearer(old)), 400, "invalid_grant"
    )
    new = await gateway.token(rotated)
    assert jwt_part(new, 1)["kgen"] == jwt_part(old, 1)["kgen"] + 1
    await assert_token_works(gateway, new, rotated)


async def test_exchange_of_a_pre_rotation_token_with_the_new_key_is_invalid_grant(
    gateway: Gateway,
) -> None:
    created = await gateway.user()
    old = await gateway.token(created)
    rotated = await gateway.admin.rotate(created.user.id, actor="test")
    resp = await post_token(gateway, exchange(old), headers=basic(id_and_key(rotated)))
    await oauth_error(resp, 400, "invalid_grant")


@pytest.mark.parametrize("change", ["deactivate", "delete", "expire"])
async def test_deactivation_deletion_and_expiry_kill_existing_tokens_and_their_refresh(
    gateway: Gateway, change: str
) -> None:
    created = await gateway.user()
    token = await gateway.token(created)
    await assert_token_works(gateway, token, created)

    await getattr(gateway.admin, change)(created.user.id, actor="test")

    await assert_token_refused(gateway, token)
    resp = await post_token(gateway, exchange(token), headers=bearer(token))
    await oauth_error(resp, 400, "invalid_grant")


async def test_token_works_until_its_exp_and_is_a_plain_401_after_it(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(tokens=TokenSettings(lifetime_seconds=300))
    created = await gateway.user()
    token = await gateway.token(created)
    await assert_token_works(gateway, token, created)
    gateway.clock.advance(300 - 1)
    await assert_token_works(gateway, token, created)
    gateway.clock.advance(1 + 10)
    await assert_token_refused(gateway, token)
    # A fresh token from the same, still valid key works.
    await assert_token_works(gateway, await gateway.token(created), created)
