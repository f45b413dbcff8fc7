"""Helpers shared by the test_management_* files: calls, identities, audit queries.

From the module these were split out of (test_management_api.py):

The management API (``/api/v1``) over HTTP: service users, human users and logins, tenants,
``/me``, the audit log and the OpenAPI document.

Every test drives the real app (real SQLite store, recording fake upstream) through its HTTP
client, never a handler directly. Time moves by advancing the gateway's ``FakeClock``. The only
stand-in is a spy for the login throttle's ``asyncio.sleep`` (it records the delay and does
not wait), so failed logins are observable without really sleeping.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from multidict import CIMultiDictProxy
from yarl import URL

from gateway.identity.models import digest_key, parse_key

from ..conftest import Gateway
from ..helpers import bearer

Headers = Mapping[str, str]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another long passphrase"
CATALOG = "/v1/namespaces"
CLIENT_ADDR = "127.0.0.1"
NO_BODY: Any = object()


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def body(self) -> Any:
        return json.loads(self.text)


def key_auth(api_key: str) -> dict[str, str]:
    return {"X-API-Key": api_key}


def root(gw: Gateway) -> dict[str, str]:
    return key_auth(gw.root.api_key.plaintext())


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


async def call(
    gw: Gateway,
    method: str,
    path: str,
    auth: Headers | None = None,
    *,
    body: Any = NO_BODY,
    raw: bytes | None = None,
    headers: Headers | None = None,
) -> Reply:
    """One request; ``path`` is sent exactly as written (no normalization or re-quoting)."""
    url = URL(str(gw.client.make_url("/")).rstrip("/") + path, encoded=True)
    all_headers = {**(auth or {}), **(headers or {})}
    data = raw
    if body is not NO_BODY:
        data = json.dumps(body).encode()
    if data is not None:
        all_headers.setdefault("Content-Type", "application/json")
    async with gw.client.session.request(method, url, headers=all_headers, data=data) as resp:
        return Reply(resp.status, resp.headers, await resp.text())


async def ok(
    gw: Gateway,
    method: str,
    path: str,
    auth: Headers | None,
    *,
    status: int = 200,
    body: Any = NO_BODY,
) -> Any:
    """The JSON answer of a request that must succeed with ``status``."""
    reply = await call(gw, method, path, auth, body=body)
    assert reply.status == status, reply.text
    return reply.body if reply.text else None


def assert_error(reply: Reply, status: int, *words: str) -> str:
    """An Iceberg-style JSON error with ``status`` whose message names every one of ``words``."""
    assert reply.status == status, reply.text
    assert reply.headers["Content-Type"].startswith("application/json")
    error = reply.body["error"]
    assert set(error) == {"message", "type", "code"}
    assert error["code"] == status
    for word in words:
        assert word in error["message"], error["message"]
    message: str = error["message"]
    return message


async def create_service_user(
    gw: Gateway, auth: Headers, name: str, **fields: Any
) -> tuple[dict[str, Any], str]:
    """POST a service user; (its JSON, its one-time API key)."""
    answer = await ok(
        gw, "POST", "/api/v1/service-users", auth, status=201, body={"name": name, **fields}
    )
    return answer["service_user"], answer["api_key"]


async def create_human(
    gw: Gateway, auth: Headers, username: str, password: str = PASSWORD, **fields: Any
) -> dict[str, Any]:
    body = {"username": username, "password": password, **fields}
    user: dict[str, Any] = await ok(gw, "POST", "/api/v1/users", auth, status=201, body=body)
    return user


async def login(gw: Gateway, username: str, password: str = PASSWORD) -> Reply:
    return await call(
        gw, "POST", "/api/v1/login", body={"username": username, "password": password}
    )


async def session(gw: Gateway, username: str, password: str = PASSWORD) -> dict[str, str]:
    reply = await login(gw, username, password)
    assert reply.status == 200, reply.text
    return bearer(reply.body["token"])


async def mint_token(gw: Gateway, client_id: str, api_key: str) -> Reply:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": api_key}
    async with gw.client.post("/v1/oauth/tokens", data=form) as resp:
        return Reply(resp.status, resp.headers, await resp.text())


async def token_for(gw: Gateway, client_id: str, api_key: str) -> dict[str, str]:
    reply = await mint_token(gw, client_id, api_key)
    assert reply.status == 200, reply.text
    return bearer(reply.body["access_token"])


async def catalog_status(gw: Gateway, auth: Headers) -> int:
    return (await call(gw, "GET", CATALOG, auth)).status


async def me(gw: Gateway, auth: Headers) -> dict[str, Any]:
    answer: dict[str, Any] = await ok(gw, "GET", "/api/v1/me", auth)
    return answer


async def audit(gw: Gateway, auth: Headers | None = None, **query: str) -> list[dict[str, Any]]:
    """Audit records (newest first) as Root sees them, or as ``auth`` does."""
    path = "/api/v1/audit?" + urlencode({"limit": "1000", **query})
    answer = await ok(gw, "GET", path, auth or root(gw))
    assert answer["total"] == len(answer["items"])
    items: list[dict[str, Any]] = answer["items"]
    return items


def matching(records: list[dict[str, Any]], **fields: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r[k] == v for k, v in fields.items())]


async def total(gw: Gateway, path: str) -> int:
    count: int = (await ok(gw, "GET", path, root(gw)))["total"]
    return count


async def stored_state(gw: Gateway) -> tuple[int, ...]:
    """What a refused request must leave unchanged: identities, tenants, successes."""
    return (
        await total(gw, "/api/v1/service-users"),
        await total(gw, "/api/v1/users"),
        await total(gw, "/api/v1/tenants"),
        await total(gw, "/api/v1/audit?outcome=success"),
    )


def secret_forms(api_key: str) -> list[str]:
    """The plaintext key and its stored digest in the encodings an answer could carry."""
    parsed = parse_key(api_key)
    assert parsed is not None
    digest = digest_key(parsed)
    return [api_key, parsed.secret, digest.hex(), base64.b64encode(digest).decode()]


def assert_no_secrets(text: str, *api_keys: str) -> None:
    lowered = text.lower()
    assert "digest" not in lowered
    assert "argon2" not in lowered
    assert "password_hash" not in lowered
    for api_key in api_keys:
        for form in secret_forms(api_key):
            assert form not in text


@dataclass
class Acme:
    """Tenant ``acme`` (created by Root) and a TenantAdmin service user in it."""

    tenant: dict[str, Any]
    admin: dict[str, Any]
    auth: dict[str, str]


async def make_acme(gw: Gateway) -> Acme:
    tenant = await ok(gw, "POST", "/api/v1/tenants", root(gw), status=201, body={"name": "acme"})
    admin, api_key = await create_service_user(
        gw, root(gw), "acme-admin", role="TenantAdmin", tenant="acme"
    )
    return Acme(tenant, admin, key_auth(api_key))
