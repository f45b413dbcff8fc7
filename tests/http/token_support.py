"""Helpers shared by the test_token_* files: posting forms, checking answers and JWTs.

From the module these were split out of (test_token_endpoint.py):

The OAuth2 token endpoint (``POST /v1/oauth/tokens``), as real Iceberg clients call it.

Every test runs the real app, a real SQLite store and a recording fake upstream; time moves by
advancing the gateway's ``FakeClock``. Client shapes come from the wire captures in
``shared/reference/iceberg-clients-on-the-wire.md`` (Java, PyIceberg legacy and ``oauth2``,
DuckDB).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from aiohttp import ClientResponse
from multidict import CIMultiDict

# conftest registers aiohttp's legacy plugin, whose client fixtures run in a loop of their own
# ("Timeout context manager should be used inside a task"); these bind them to the test's loop.
from gateway.identity.models import ApiKey, generate_key
from gateway.identity.service_users import CreatedKey

from ..conftest import Gateway
from ..helpers import bearer

FORM_TYPE = "application/x-www-form-urlencoded"
TOKEN_PATH = "/v1/oauth/tokens"
CATALOG_TOKEN_PATH = "/v1/default/v1/oauth/tokens"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
RFC6749_ERRORS = frozenset(
    {"invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
     "unsupported_grant_type", "invalid_scope"}
)  # fmt: skip

Form = Mapping[str, str] | Sequence[tuple[str, str]]


def credentials(created: CreatedKey, **extra: str) -> dict[str, str]:
    """The Java / PyIceberg-legacy shape: client_credentials with both values in the form."""
    return {
        "grant_type": "client_credentials",
        "client_id": created.user.id,
        "client_secret": created.api_key.plaintext(),
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
