"""Token endpoint: RFC 6749 error answers for bad grants, clients, forms and methods."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import ClientResponse
from multidict import CIMultiDict

from gateway.identity.models import generate_key
from gateway.identity.service_users import CreatedKey
from gateway.settings import ServerSettings

from ..conftest import Gateway, MakeGateway
from .token_support import (
    CATALOG_TOKEN_PATH,
    FORM_TYPE,
    TOKEN_PATH,
    assert_token_works,
    basic,
    credentials,
    issued,
    oauth_error,
    post_token,
    wrong_secret_for,
)

DEFAULT_MAX_FORM_BYTES = 65536


# -- helpers ---------------------------------------------------------------------------------


async def fresh_user(gateway: Gateway, **kwargs: Any) -> CreatedKey:
    """A service user with a name of its own (names are unique per tenant)."""
    return await gateway.user(f"etl-{uuid.uuid4().hex[:12]}", **kwargs)


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
