"""Token endpoint: token exchange (Java's refresh), and revocation reaching issued tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from gateway.identity.service_users import CreatedKey
from gateway.settings import TokenSettings

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer
from .token_support import (
    ACCESS_TOKEN_TYPE,
    CATALOG_TOKEN_PATH,
    TOKEN_PATH,
    assert_token_works,
    basic,
    id_and_key,
    issued,
    jwt_part,
    list_namespaces,
    oauth_error,
    post_token,
    wrong_secret_for,
)

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


def exchange(subject: str, **extra: str) -> dict[str, str]:
    """Java's refresh: RFC 8693 token exchange of the current token."""
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": subject,
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "scope": "catalog",
        **extra,
    }


def b64url_json(value: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


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
