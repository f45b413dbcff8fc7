"""The management API (``/api/v1``) over HTTP: service users, human users and logins, tenants,
``/me``, the audit log and the OpenAPI document.

Every test drives the real app (real SQLite store, recording fake upstream) through its HTTP
client, never a handler directly. Time moves by advancing the gateway's ``FakeClock``. The only
stand-in is a spy for the login throttle's ``asyncio.sleep`` (it records the delay and does
not wait), so failed logins are observable without really sleeping.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import re
import types
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from multidict import CIMultiDictProxy
from yarl import URL

import gateway.identity.users as users_module
from gateway.identity.models import digest_key, generate_key, parse_key
from gateway.settings import ServerSettings, StoreSettings
from gateway.state import AUDIT

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer

Headers = Mapping[str, str]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "another long passphrase"
CATALOG = "/v1/namespaces"
CLIENT_ADDR = "127.0.0.1"
MAX_BODY = 64 * 1024
NO_BODY: Any = object()

# (method, path, body) of every endpoint that manages identities; "{id}" is filled in.
MANAGEMENT_ENDPOINTS = (
    ("POST", "/api/v1/service-users", {"name": "x"}),
    ("GET", "/api/v1/service-users", NO_BODY),
    ("GET", "/api/v1/service-users/{id}", NO_BODY),
    ("PUT", "/api/v1/service-users/{id}", {"description": "x"}),
    ("POST", "/api/v1/service-users/{id}/rotate", NO_BODY),
    ("DELETE", "/api/v1/service-users/{id}", NO_BODY),
    ("POST", "/api/v1/users", {"username": "x", "password": PASSWORD}),
    ("GET", "/api/v1/users", NO_BODY),
    ("GET", "/api/v1/users/{id}", NO_BODY),
    ("DELETE", "/api/v1/users/{id}", NO_BODY),
    ("PUT", "/api/v1/users/{id}/password", {"password": NEW_PASSWORD}),
    ("POST", "/api/v1/tenants", {"name": "x"}),
    ("DELETE", "/api/v1/tenants/{id}", NO_BODY),
    ("GET", "/api/v1/audit", NO_BODY),
)


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


@pytest.fixture(autouse=True)
def login_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Spy on the login throttle's sleep: record each delay, but do not wait."""
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(users_module, "asyncio", types.SimpleNamespace(sleep=sleep))
    return delays


# -- service users: lifecycle ------------------------------------------------------------------


async def test_create_returns_the_key_once_uncached_and_the_key_works_on_a_catalog_route(
    gateway: Gateway,
) -> None:
    reply = await call(
        gateway, "POST", "/api/v1/service-users", root(gateway),
        body={"name": "etl-pipeline", "description": "nightly loads"},
    )  # fmt: skip
    assert reply.status == 201, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    answer = reply.body
    assert set(answer) == {"service_user", "api_key"}
    user, api_key = answer["service_user"], answer["api_key"]
    assert reply.text.count(api_key) == 1
    assert uuid.UUID(user["id"])
    assert user["name"] == "etl-pipeline"
    assert user["role"] == "TenantUser"  # the default
    assert user["tenant"] == "default"
    assert user["description"] == "nightly loads"
    assert user["active"] is True
    assert user["created_by"] == gateway.root.user.id
    assert user["created_at"] == iso(gateway.clock.now)
    assert user["expires_at"] is None and user["last_used_at"] is None
    assert user["key_rotated_at"] is None and user["key_generation"] == 1
    assert_no_secrets(json.dumps(user), api_key)

    assert await catalog_status(gateway, key_auth(api_key)) == 200
    forwarded = gateway.upstream.last
    assert forwarded.raw_path == CATALOG
    assert forwarded.headers["X-Pangolin-Principal-Id"] == user["id"]
    assert "X-API-Key" not in forwarded.headers


async def test_create_sets_expiry_from_expires_in_or_an_iso_expires_at(gateway: Gateway) -> None:
    now = gateway.clock.now
    by_seconds, api_key = await create_service_user(
        gateway, root(gateway), "short-lived", expires_in=60
    )
    assert by_seconds["expires_at"] == iso(now + 60)
    at = "2031-01-31T00:00:00+00:00"
    by_time, _ = await create_service_user(gateway, root(gateway), "dated", expires_at=at)
    assert by_time["expires_at"] == "2031-01-31T00:00:00Z"

    assert await catalog_status(gateway, key_auth(api_key)) == 200
    gateway.clock.advance(61)
    assert await catalog_status(gateway, key_auth(api_key)) == 401


async def test_list_is_paginated_with_limit_offset_and_total(gateway: Gateway) -> None:
    for n in range(5):
        await create_service_user(gateway, root(gateway), f"svc-{n}")
    path = "/api/v1/service-users"
    everything = await ok(gateway, "GET", path, root(gateway))
    assert everything["total"] == 6  # with root
    assert (everything["limit"], everything["offset"]) == (100, 0)
    names = [u["name"] for u in everything["items"]]
    assert names == sorted(names)

    page = await ok(gateway, "GET", f"{path}?limit=2&offset=3", root(gateway))
    assert (page["total"], page["limit"], page["offset"]) == (6, 2, 3)
    assert [u["name"] for u in page["items"]] == names[3:5]
    past_the_end = await ok(gateway, "GET", f"{path}?offset=10", root(gateway))
    assert past_the_end["items"] == [] and past_the_end["total"] == 6


async def test_list_filters_by_active_and_role(gateway: Gateway) -> None:
    admin, _ = await create_service_user(gateway, root(gateway), "ops", role="TenantAdmin")
    sleeper, _ = await create_service_user(gateway, root(gateway), "sleeper")
    await ok(gateway, "PUT", f"/api/v1/service-users/{sleeper['id']}", root(gateway),
             body={"active": False})  # fmt: skip

    async def names(query: str) -> set[str]:
        answer = await ok(gateway, "GET", f"/api/v1/service-users?{query}", root(gateway))
        assert answer["total"] == len(answer["items"])
        return {u["name"] for u in answer["items"]}

    assert await names("active=false") == {"sleeper"}
    assert await names("active=true") == {"root", "ops"}
    assert await names("role=TenantAdmin") == {"ops"}
    assert await names("role=TenantUser&active=true") == set()
    assert await names("role=Root") == {"root"}


async def test_get_returns_the_service_user_without_key_material(gateway: Gateway) -> None:
    created, api_key = await create_service_user(gateway, root(gateway), "etl")
    reply = await call(gateway, "GET", f"/api/v1/service-users/{created['id']}", root(gateway))
    assert reply.status == 200
    assert reply.body == created
    assert reply.body["key_id"] == api_key.split("_")[1]  # only the public key id
    assert_no_secrets(reply.text, api_key)


async def test_update_changes_description_role_and_expiry_and_null_clears_the_expiry(
    gateway: Gateway,
) -> None:
    created, api_key = await create_service_user(gateway, root(gateway), "etl", expires_in=600)
    path = f"/api/v1/service-users/{created['id']}"
    updated = await ok(gateway, "PUT", path, root(gateway),
                       body={"description": "moved", "role": "TenantAdmin"})  # fmt: skip
    assert (updated["description"], updated["role"]) == ("moved", "TenantAdmin")
    assert updated["expires_at"] == created["expires_at"]
    # The role change applies to the very next request made with the unchanged key.
    assert (await me(gateway, key_auth(api_key)))["role"] == "TenantAdmin"

    later = await ok(gateway, "PUT", path, root(gateway), body={"expires_in": 3600})
    assert later["expires_at"] == iso(gateway.clock.now + 3600)
    cleared = await ok(gateway, "PUT", path, root(gateway), body={"expires_at": None})
    assert cleared["expires_at"] is None
    assert (await ok(gateway, "GET", path, root(gateway)))["expires_at"] is None
    gateway.clock.advance(10 * 365 * 86400)
    assert await catalog_status(gateway, key_auth(api_key)) == 200


async def test_deactivation_stops_key_and_tokens_at_once_and_reactivation_restores_the_key(
    gateway: Gateway,
) -> None:
    created, api_key = await create_service_user(gateway, root(gateway), "etl")
    token = await token_for(gateway, created["id"], api_key)
    path = f"/api/v1/service-users/{created['id']}"
    off = await ok(gateway, "PUT", path, root(gateway), body={"active": False})
    assert off["active"] is False
    assert await catalog_status(gateway, key_auth(api_key)) == 401
    assert await catalog_status(gateway, token) == 401
    assert (await mint_token(gateway, created["id"], api_key)).status == 401

    on = await ok(gateway, "PUT", path, root(gateway), body={"active": True})
    assert on["active"] is True
    assert await catalog_status(gateway, key_auth(api_key)) == 200


async def test_rotate_answers_the_new_key_once_and_refuses_the_old_key_and_its_token_at_once(
    gateway: Gateway,
) -> None:
    created, old_key = await create_service_user(gateway, root(gateway), "etl")
    old_token = await token_for(gateway, created["id"], old_key)
    assert await catalog_status(gateway, old_token) == 200
    gateway.clock.advance(5)

    reply = await call(
        gateway, "POST", f"/api/v1/service-users/{created['id']}/rotate", root(gateway)
    )
    assert reply.status == 200, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    new_key = reply.body["api_key"]
    rotated = reply.body["service_user"]
    assert new_key != old_key and reply.text.count(new_key) == 1
    assert_no_secrets(reply.text, old_key)
    assert rotated["id"] == created["id"]
    assert rotated["key_generation"] == 2
    assert rotated["key_rotated_at"] == iso(gateway.clock.now)
    assert rotated["key_id"] != created["key_id"]

    assert await catalog_status(gateway, key_auth(old_key)) == 401
    assert await catalog_status(gateway, old_token) == 401
    assert (await mint_token(gateway, created["id"], old_key)).status == 401
    assert await catalog_status(gateway, key_auth(new_key)) == 200
    assert await catalog_status(gateway, await token_for(gateway, created["id"], new_key)) == 200


async def test_delete_answers_204_and_the_key_and_its_tokens_stop_working(
    gateway: Gateway,
) -> None:
    created, api_key = await create_service_user(gateway, root(gateway), "etl")
    token = await token_for(gateway, created["id"], api_key)
    path = f"/api/v1/service-users/{created['id']}"
    reply = await call(gateway, "DELETE", path, root(gateway))
    assert (reply.status, reply.text) == (204, "")
    assert await catalog_status(gateway, key_auth(api_key)) == 401
    assert await catalog_status(gateway, token) == 401
    assert_error(await call(gateway, "GET", path, root(gateway)), 404)
    assert_error(await call(gateway, "DELETE", path, root(gateway)), 404)


async def test_last_used_at_shows_a_use_that_is_not_yet_flushed(gateway: Gateway) -> None:
    created, api_key = await create_service_user(gateway, root(gateway), "etl")
    gateway.clock.advance(42)
    assert await catalog_status(gateway, key_auth(api_key)) == 200
    stored = await gateway.store.service_user(created["id"])
    assert stored is not None and stored.last_used_at is None  # nothing written yet

    path = f"/api/v1/service-users/{created['id']}"
    assert (await ok(gateway, "GET", path, root(gateway)))["last_used_at"] == iso(gateway.clock.now)
    listed = await ok(gateway, "GET", "/api/v1/service-users?role=TenantUser", root(gateway))
    assert listed["items"][0]["last_used_at"] == iso(gateway.clock.now)

    await gateway.flush()
    assert (await ok(gateway, "GET", path, root(gateway)))["last_used_at"] == iso(gateway.clock.now)


async def test_no_answer_or_audit_record_carries_a_digest_a_password_hash_or_a_spent_key(
    gateway: Gateway,
) -> None:
    created, first_key = await create_service_user(gateway, root(gateway), "etl")
    sid = created["id"]
    rotated = await ok(gateway, "POST", f"/api/v1/service-users/{sid}/rotate", root(gateway))
    second_key = rotated["api_key"]
    alice = await create_human(gateway, root(gateway), "alice")
    alice_session = await session(gateway, "alice")
    await catalog_status(gateway, key_auth(second_key))
    await catalog_status(gateway, key_auth(first_key))  # refused, and audited

    texts = [
        (await call(gateway, method, path, auth, body=body)).text
        for method, path, auth, body in (
            ("GET", "/api/v1/service-users", root(gateway), NO_BODY),
            ("GET", f"/api/v1/service-users/{sid}", root(gateway), NO_BODY),
            ("PUT", f"/api/v1/service-users/{sid}", root(gateway), {"description": "d"}),
            ("GET", "/api/v1/users", root(gateway), NO_BODY),
            ("GET", f"/api/v1/users/{alice['id']}", root(gateway), NO_BODY),
            ("GET", "/api/v1/me", alice_session, NO_BODY),
            ("GET", "/api/v1/me", key_auth(second_key), NO_BODY),
            ("GET", "/api/v1/tenants", root(gateway), NO_BODY),
            ("GET", "/api/v1/audit?limit=1000", root(gateway), NO_BODY),
            ("DELETE", f"/api/v1/service-users/{sid}", root(gateway), NO_BODY),
        )
    ]
    for text in texts:
        assert_no_secrets(text, first_key, second_key, gateway.root.api_key.plaintext())
    stored_audit = repr(await gateway.store.audit_records())
    assert_no_secrets(stored_audit, first_key, second_key, gateway.root.api_key.plaintext())
    assert PASSWORD not in stored_audit and all(PASSWORD not in text for text in texts)


# -- service users: who may do what -----------------------------------------------------------


async def test_root_manages_service_users_of_every_tenant(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    assert acme.admin["tenant"] == "acme" and acme.admin["role"] == "TenantAdmin"
    path = f"/api/v1/service-users/{acme.admin['id']}"
    assert (await ok(gateway, "GET", path, root(gateway)))["tenant"] == "acme"
    await ok(gateway, "PUT", path, root(gateway), body={"description": "by root"})
    rotated = await ok(gateway, "POST", f"{path}/rotate", root(gateway))
    assert (await me(gateway, key_auth(rotated["api_key"])))["tenant"] == "acme"
    in_acme = await ok(gateway, "GET", "/api/v1/service-users?tenant=acme", root(gateway))
    assert [u["name"] for u in in_acme["items"]] == ["acme-admin"]
    await ok(gateway, "DELETE", path, root(gateway), status=204)


async def test_tenant_admin_gets_404_for_another_tenants_service_user_and_changes_nothing(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    victim, victim_key = await create_service_user(gateway, root(gateway), "default-etl")
    path = f"/api/v1/service-users/{victim['id']}"
    unknown = f"/api/v1/service-users/{uuid.uuid4()}"
    for method, suffix, body in (
        ("GET", "", NO_BODY),
        ("PUT", "", {"description": "pwned"}),
        ("PUT", "", {"active": False}),
        ("POST", "/rotate", NO_BODY),
        ("DELETE", "", NO_BODY),
    ):
        reply = await call(gateway, method, path + suffix, acme.auth, body=body)
        missing = await call(gateway, method, unknown + suffix, acme.auth, body=body)
        # Exactly the answer for an id that does not exist: existence is not leaked.
        assert_error(reply, 404)
        assert (reply.status, reply.body) == (missing.status, missing.body)
        assert victim_key not in reply.text
    assert await ok(gateway, "GET", path, root(gateway)) == victim
    assert await catalog_status(gateway, key_auth(victim_key)) == 200


async def test_tenant_admin_lists_only_its_own_tenant_whatever_the_tenant_filter(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    await create_service_user(gateway, root(gateway), "default-etl")
    await create_service_user(gateway, acme.auth, "acme-etl")
    for query in ("", "?tenant=default", "?tenant=acme", "?role=Root"):
        answer = await ok(gateway, "GET", f"/api/v1/service-users{query}", acme.auth)
        assert {u["tenant"] for u in answer["items"]} <= {"acme"}
        assert answer["total"] == len(answer["items"])
    everything = await ok(gateway, "GET", "/api/v1/service-users", acme.auth)
    assert {u["name"] for u in everything["items"]} == {"acme-admin", "acme-etl"}


async def test_tenant_admin_can_never_create_or_raise_anyone_to_root(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    before = await stored_state(gateway)
    refused = await call(gateway, "POST", "/api/v1/service-users", acme.auth,
                         body={"name": "sneaky", "role": "Root"})  # fmt: skip
    assert_error(refused, 403, "role")
    worker, _ = await create_service_user(gateway, acme.auth, "worker")
    raise_ = await call(gateway, "PUT", f"/api/v1/service-users/{worker['id']}", acme.auth,
                        body={"role": "Root"})  # fmt: skip
    assert_error(raise_, 403, "role")
    raise_self = await call(gateway, "PUT", f"/api/v1/service-users/{acme.admin['id']}",
                            acme.auth, body={"role": "Root"})  # fmt: skip
    assert_error(raise_self, 403)
    human = await call(gateway, "POST", "/api/v1/users", acme.auth,
                       body={"username": "boss", "password": PASSWORD, "role": "Root"})  # fmt: skip
    assert_error(human, 403, "role")

    state = await stored_state(gateway)
    assert state[0] == before[0] + 1 and state[1:3] == before[1:3]  # only "worker" was added
    kept = await ok(gateway, "GET", f"/api/v1/service-users/{worker['id']}", root(gateway))
    assert kept["role"] == "TenantUser"


async def test_tenant_admin_cannot_rotate_deactivate_or_delete_a_root_identity_of_its_tenant(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    boss, boss_key = await create_service_user(gateway, root(gateway), "boss", role="Root",
                                               tenant="acme")  # fmt: skip
    path = f"/api/v1/service-users/{boss['id']}"
    assert (await ok(gateway, "GET", path, acme.auth))["role"] == "Root"  # visible: own tenant
    for method, suffix, body in (
        ("POST", "/rotate", NO_BODY),
        ("PUT", "", {"active": False}),
        ("PUT", "", {"description": "x"}),
        ("DELETE", "", NO_BODY),
    ):
        assert_error(await call(gateway, method, path + suffix, acme.auth, body=body), 403)
    assert await ok(gateway, "GET", path, root(gateway)) == boss
    assert (await me(gateway, key_auth(boss_key)))["role"] == "Root"


async def test_tenant_admin_manages_tenant_admins_and_users_in_its_own_tenant_only(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    peer, _ = await create_service_user(gateway, acme.auth, "peer", role="TenantAdmin")
    user, user_key = await create_service_user(gateway, acme.auth, "loader", role="TenantUser")
    assert (peer["tenant"], user["tenant"]) == ("acme", "acme")
    assert peer["created_by"] == acme.admin["id"]
    elsewhere = await call(gateway, "POST", "/api/v1/service-users", acme.auth,
                           body={"name": "x", "tenant": "default"})  # fmt: skip
    assert_error(elsewhere, 404, "tenant")

    path = f"/api/v1/service-users/{user['id']}"
    await ok(gateway, "PUT", path, acme.auth, body={"role": "TenantAdmin"})
    rotated = await ok(gateway, "POST", f"{path}/rotate", acme.auth)
    assert (await me(gateway, key_auth(rotated["api_key"])))["role"] == "TenantAdmin"
    assert (await call(gateway, "GET", "/api/v1/me", key_auth(user_key))).status == 401
    await ok(gateway, "DELETE", path, acme.auth, status=204)


async def test_tenant_user_is_refused_every_management_endpoint_but_may_ask_who_it_is(
    gateway: Gateway,
) -> None:
    worker, api_key = await create_service_user(gateway, root(gateway), "worker")
    auth = key_auth(api_key)
    before = await stored_state(gateway)
    for method, path, body in MANAGEMENT_ENDPOINTS:
        target = path.format(id=gateway.root.user.id)
        reply = await call(gateway, method, target, auth, body=body)
        assert_error(reply, 403)
        assert reply.body["error"]["type"] == "ForbiddenException"
    # Even on itself.
    own = f"/api/v1/service-users/{worker['id']}"
    assert_error(await call(gateway, "POST", f"{own}/rotate", auth), 403)
    assert_error(await call(gateway, "PUT", own, auth, body={"role": "Root"}), 403)

    assert (await me(gateway, auth))["role"] == "TenantUser"
    tenants = await ok(gateway, "GET", "/api/v1/tenants", auth)
    assert [t["name"] for t in tenants["items"]] == ["default"]
    assert await stored_state(gateway) == before


@pytest.mark.parametrize(
    "credential",
    [{}, key_auth(generate_key().plaintext()), key_auth("not-a-key"), bearer("not.a.jwt"),
     {"Authorization": "Basic Zm9vOmJhcg=="}],
    ids=["none", "unknown-key", "malformed-key", "bad-token", "basic"],
)  # fmt: skip
async def test_unauthenticated_requests_get_an_iceberg_401_with_www_authenticate(
    gateway: Gateway, credential: dict[str, str]
) -> None:
    before = await stored_state(gateway)
    endpoints = (*MANAGEMENT_ENDPOINTS, ("GET", "/api/v1/me", NO_BODY),
                 ("GET", "/api/v1/tenants", NO_BODY))  # fmt: skip
    for method, path, body in endpoints:
        reply = await call(gateway, method, path.format(id=gateway.root.user.id), credential,
                           body=body)  # fmt: skip
        assert_error(reply, 401)
        assert reply.body["error"]["type"] == "NotAuthorizedException"
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert await stored_state(gateway) == before


# -- human users and sessions ------------------------------------------------------------------


async def test_users_are_created_listed_fetched_and_deleted(gateway: Gateway) -> None:
    reply = await call(gateway, "POST", "/api/v1/users", root(gateway),
                       body={"username": "alice", "password": PASSWORD})  # fmt: skip
    assert reply.status == 201, reply.text
    alice = reply.body
    assert_no_secrets(reply.text)
    assert PASSWORD not in reply.text
    assert (alice["username"], alice["role"], alice["tenant"]) == ("alice", "TenantAdmin",
                                                                   "default")  # fmt: skip
    assert alice["active"] is True and alice["failed_logins"] == 0
    assert alice["last_login_at"] is None
    assert alice["created_by"] == gateway.root.user.id

    listed = await ok(gateway, "GET", "/api/v1/users", root(gateway))
    assert (listed["total"], listed["items"]) == (1, [alice])
    path = f"/api/v1/users/{alice['id']}"
    assert await ok(gateway, "GET", path, root(gateway)) == alice
    await ok(gateway, "DELETE", path, root(gateway), status=204)
    assert_error(await call(gateway, "GET", path, root(gateway)), 404)
    assert (await ok(gateway, "GET", "/api/v1/users", root(gateway)))["total"] == 0
    assert (await login(gateway, "alice")).status == 401


async def test_a_password_shorter_than_12_characters_is_refused_naming_password(
    gateway: Gateway,
) -> None:
    before = await stored_state(gateway)
    reply = await call(gateway, "POST", "/api/v1/users", root(gateway),
                       body={"username": "alice", "password": "elevenchars"})  # fmt: skip
    assert_error(reply, 400, "password", "12")
    assert await stored_state(gateway) == before


async def test_session_tokens_call_catalog_routes_only_when_the_setting_allows_it(
    make_gateway: MakeGateway,
) -> None:
    server = dataclasses.replace(ServerSettings(), allow_sessions_on_catalog_routes=True)
    gateway = await make_gateway(server=server)
    await create_human(gateway, root(gateway), "alice")
    auth = bearer((await login(gateway, "alice")).body["token"])
    assert await catalog_status(gateway, auth) == 200
    assert gateway.upstream.last.headers["X-Pangolin-Principal-Type"] == "user"


async def test_login_returns_a_session_token_for_the_management_api(gateway: Gateway) -> None:
    alice = await create_human(gateway, root(gateway), "alice")
    reply = await login(gateway, "alice")
    assert reply.status == 200, reply.text
    assert reply.headers["Cache-Control"] == "no-store"
    answer = reply.body
    assert answer["token_type"] == "bearer" and answer["expires_in"] == 8 * 3600
    assert answer["user"]["id"] == alice["id"]
    assert_no_secrets(reply.text)
    auth = bearer(answer["token"])
    assert await me(gateway, auth) == {
        "id": alice["id"], "name": "alice", "type": "user", "role": "TenantAdmin",
        "tenant": "default",
    }  # fmt: skip
    # Sessions are for the management API: catalog routes take service users only.
    assert await catalog_status(gateway, auth) == 403
    assert gateway.upstream.requests == []
    # A TenantAdmin session manages identities like a TenantAdmin key.
    created, _ = await create_service_user(gateway, auth, "made-by-alice")
    assert created["created_by"] == alice["id"]
    gateway.clock.advance(answer["expires_in"] + 60)  # past the 5 s leeway too
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)


async def test_own_password_change_needs_the_current_password_and_ends_every_session(
    gateway: Gateway,
) -> None:
    alice = await create_human(gateway, root(gateway), "alice", role="TenantUser")
    auth = await session(gateway, "alice")
    path = f"/api/v1/users/{alice['id']}/password"
    missing = await call(gateway, "PUT", path, auth, body={"password": NEW_PASSWORD})
    assert_error(missing, 403, "current_password")
    wrong = await call(
        gateway,
        "PUT",
        path,
        auth,
        body={"password": NEW_PASSWORD, "current_password": "not my password"},
    )
    assert_error(wrong, 403, "current_password")
    short = await call(gateway, "PUT", path, auth,
                       body={"password": "short", "current_password": PASSWORD})  # fmt: skip
    assert_error(short, 400, "password")
    assert (await me(gateway, auth))["id"] == alice["id"]  # nothing changed so far

    gateway.clock.advance(7)
    changed = await ok(
        gateway, "PUT", path, auth, body={"password": NEW_PASSWORD, "current_password": PASSWORD}
    )
    assert changed["password_changed_at"] == iso(gateway.clock.now)
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert (await login(gateway, "alice")).status == 401
    assert (await me(gateway, await session(gateway, "alice", NEW_PASSWORD)))["type"] == "user"


async def test_an_admin_resets_another_users_password_without_the_current_one(
    gateway: Gateway,
) -> None:
    bob = await create_human(gateway, root(gateway), "bob")
    bob_session = await session(gateway, "bob")
    await ok(gateway, "PUT", f"/api/v1/users/{bob['id']}/password", root(gateway),
             body={"password": NEW_PASSWORD})  # fmt: skip
    assert_error(await call(gateway, "GET", "/api/v1/me", bob_session), 401)
    assert (await login(gateway, "bob", NEW_PASSWORD)).status == 200


async def test_deleting_a_user_ends_its_session_and_a_user_cannot_delete_itself(
    gateway: Gateway,
) -> None:
    carol = await create_human(gateway, root(gateway), "carol")
    auth = await session(gateway, "carol")
    path = f"/api/v1/users/{carol['id']}"
    assert_error(await call(gateway, "DELETE", path, auth), 400, "yourself")
    await ok(gateway, "DELETE", path, root(gateway), status=204)
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert await catalog_status(gateway, auth) == 401


async def test_failed_logins_share_one_message_are_counted_audited_and_slowed(
    gateway: Gateway, login_delays: list[float]
) -> None:
    dave = await create_human(gateway, root(gateway), "dave")
    wrong = await login(gateway, "dave", "not the password")
    unknown = await login(gateway, "nobody", PASSWORD)
    for reply in (wrong, unknown):
        assert_error(reply, 401)
        assert reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert wrong.body == unknown.body
    for _ in range(4):
        assert (await login(gateway, "dave", "still not it")).status == 401

    counted = await ok(gateway, "GET", f"/api/v1/users/{dave['id']}", root(gateway))
    assert counted["failed_logins"] == 5
    # After a failure, each attempt of the same name from the same client waits longer before
    # its password is even checked (doubling), so parallel guesses are slowed too; the one
    # attempt at another name from here is not slowed by dave's failures.
    throttle = users_module.LoginThrottle
    assert login_delays == [0.0, 0.0] + [throttle.BASE_DELAY * 2**n for n in range(4)]
    for _ in range(3):
        await login(gateway, "dave", "still not it")
    # Capped before the check; and past USERNAME_FREE failures of the name, each failed answer
    # is held back as well (after the check: a correct password would not wait for it).
    assert login_delays[-6:] == [throttle.MAX_DELAY, 0.25, throttle.MAX_DELAY, 0.5,
                                 throttle.MAX_DELAY, 1.0]  # fmt: skip

    failures = await audit(gateway, action="login", outcome="failure")
    assert len(failures) == 9
    assert len(matching(failures, actor=dave["id"], target_id=dave["id"])) == 8
    (anonymous,) = matching(failures, actor="anonymous")
    assert anonymous["target_id"] is None and anonymous["client_addr"] == CLIENT_ADDR
    assert all("not the password" not in json.dumps(r) for r in failures)


async def test_failures_on_other_usernames_never_slow_a_victims_correct_login(
    gateway: Gateway, login_delays: list[float]
) -> None:
    # The review: four failures on other usernames from the same address slowed a victim's
    # correct login from 0.11 s to 2.1 s.
    await create_human(gateway, root(gateway), "victim")
    for name in ("alice", "bob", "carol", "dave"):
        assert (await login(gateway, name, "a wrong password")).status == 401
    login_delays.clear()
    assert (await login(gateway, "victim")).status == 200
    assert login_delays == [0.0]


async def test_failures_with_a_victims_name_from_elsewhere_never_slow_the_victims_login(
    make_gateway: MakeGateway, login_delays: list[float]
) -> None:
    # Behind a trusted proxy, each client is the address the proxy forwarded.
    gateway = await make_gateway(
        server=dataclasses.replace(ServerSettings(), trusted_proxies=(CLIENT_ADDR,))
    )
    await create_human(gateway, root(gateway), "victim")
    attacker = {"X-Forwarded-For": "203.0.113.66"}
    for _ in range(3 * users_module.LoginThrottle.USERNAME_FREE):
        reply = await call(
            gateway, "POST", "/api/v1/login", headers=attacker,
            body={"username": "victim", "password": "a wrong password"},
        )  # fmt: skip
        assert reply.status == 401
    assert max(login_delays) > 0  # the attacker is slowed
    login_delays.clear()
    reply = await call(
        gateway, "POST", "/api/v1/login", headers={"X-Forwarded-For": "198.51.100.7"},
        body={"username": "victim", "password": PASSWORD},
    )  # fmt: skip
    assert reply.status == 200
    assert login_delays == [0.0]  # neither before the check nor after it


async def test_password_spraying_from_one_address_is_slowed_and_a_valid_login_does_not_reset_it(
    gateway: Gateway, login_delays: list[float]
) -> None:
    await create_human(gateway, root(gateway), "mallory")
    throttle = users_module.LoginThrottle
    for n in range(throttle.ADDRESS_FREE + 2):
        await login(gateway, f"user{n}", "a wrong password")
    assert login_delays[-1] == throttle.BASE_DELAY  # past the address's free failures
    assert (await login(gateway, "mallory")).status == 200
    await login(gateway, "user-next", "a wrong password")
    assert login_delays[-1] > 0  # one valid account does not reset the spraying budget


async def test_a_successful_login_resets_the_failure_count_and_sets_last_login_at(
    gateway: Gateway, login_delays: list[float]
) -> None:
    erin = await create_human(gateway, root(gateway), "erin")
    for _ in range(2):
        await login(gateway, "erin", "wrong password!")
    gateway.clock.advance(30)
    assert (await login(gateway, "erin")).status == 200
    path = f"/api/v1/users/{erin['id']}"
    after = await ok(gateway, "GET", path, root(gateway))
    assert after["failed_logins"] == 0
    assert after["last_login_at"] == iso(gateway.clock.now)
    # The name's count is forgotten: erin's next attempt does not wait.
    await login(gateway, "erin", "wrong password!")
    assert login_delays[-1] == 0.0
    (success,) = await audit(gateway, action="login", outcome="success")
    assert (success["actor"], success["target_id"]) == (erin["id"], erin["id"])


async def test_a_tenant_admin_manages_only_users_of_its_own_tenant_and_rank(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    default_admin = await create_human(gateway, root(gateway), "frank")
    for method, suffix, body in (
        ("GET", "", NO_BODY),
        ("DELETE", "", NO_BODY),
        ("PUT", "/password", {"password": NEW_PASSWORD}),
    ):
        path = f"/api/v1/users/{default_admin['id']}{suffix}"
        assert_error(await call(gateway, method, path, acme.auth, body=body), 404)
    assert (await ok(gateway, "GET", "/api/v1/users", acme.auth))["total"] == 0
    assert (await login(gateway, "frank")).status == 200  # password untouched


# -- tenants -----------------------------------------------------------------------------------


async def test_root_creates_and_lists_tenants_and_duplicates_or_bad_names_are_refused(
    gateway: Gateway,
) -> None:
    reply = await call(gateway, "POST", "/api/v1/tenants", root(gateway), body={"name": "acme"})
    assert reply.status == 201, reply.text
    acme = reply.body
    assert acme["name"] == "acme" and uuid.UUID(acme["id"])
    assert acme["created_at"] == iso(gateway.clock.now)
    before = await stored_state(gateway)
    duplicate = await call(gateway, "POST", "/api/v1/tenants", root(gateway),
                           body={"name": "acme"})  # fmt: skip
    assert_error(duplicate, 409, "name")
    for bad in ("", "Acme", "has space", "a/b", "x" * 64, "-lead", "\x1b[2J"):
        reply = await call(gateway, "POST", "/api/v1/tenants", root(gateway), body={"name": bad})
        assert_error(reply, 400, "name")
    assert await stored_state(gateway) == before
    listed = await ok(gateway, "GET", "/api/v1/tenants", root(gateway))
    assert [t["name"] for t in listed["items"]] == ["acme", "default"]
    assert listed["total"] == 2


async def test_non_root_sees_only_its_tenant_and_may_not_create_or_delete_tenants(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    listed = await ok(gateway, "GET", "/api/v1/tenants", acme.auth)
    assert [t["name"] for t in listed["items"]] == ["acme"]
    assert_error(await call(gateway, "POST", "/api/v1/tenants", acme.auth,
                            body={"name": "other"}), 403)  # fmt: skip
    for target in (acme.tenant["id"], "acme", "default"):
        assert_error(await call(gateway, "DELETE", f"/api/v1/tenants/{target}", acme.auth), 403)
    assert (await ok(gateway, "GET", "/api/v1/tenants", root(gateway)))["total"] == 2


async def test_a_tenant_is_deleted_only_when_empty_and_never_the_default(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    by_id = f"/api/v1/tenants/{acme.tenant['id']}"
    assert_error(await call(gateway, "DELETE", by_id, root(gateway)), 409, "service users")
    await ok(gateway, "DELETE", f"/api/v1/service-users/{acme.admin['id']}", root(gateway),
             status=204)  # fmt: skip
    human = await create_human(gateway, root(gateway), "acme-human", tenant="acme")
    assert_error(await call(gateway, "DELETE", "/api/v1/tenants/acme", root(gateway)), 409,
                 "users")  # fmt: skip
    await ok(gateway, "DELETE", f"/api/v1/users/{human['id']}", root(gateway), status=204)

    await ok(gateway, "DELETE", by_id, root(gateway), status=204)
    assert_error(await call(gateway, "DELETE", by_id, root(gateway)), 404)
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "tmp"})
    await ok(gateway, "DELETE", "/api/v1/tenants/tmp", root(gateway), status=204)  # by name

    default = await call(gateway, "DELETE", "/api/v1/tenants/default", root(gateway))
    assert_error(default, 409, "default")
    listed = await ok(gateway, "GET", "/api/v1/tenants", root(gateway))
    assert [t["name"] for t in listed["items"]] == ["default"]


# -- who am I ----------------------------------------------------------------------------------


async def test_me_describes_a_service_user_root_and_a_human_session(gateway: Gateway) -> None:
    worker, api_key = await create_service_user(gateway, root(gateway), "worker")
    assert await me(gateway, key_auth(api_key)) == {
        "id": worker["id"], "name": "worker", "type": "service_user", "role": "TenantUser",
        "tenant": "default",
    }  # fmt: skip
    assert await me(gateway, await token_for(gateway, worker["id"], api_key)) == await me(
        gateway, key_auth(api_key)
    )
    assert await me(gateway, root(gateway)) == {
        "id": gateway.root.user.id, "name": "root", "type": "service_user", "role": "Root",
        "tenant": "default",
    }  # fmt: skip
    human = await create_human(gateway, root(gateway), "grace", role="TenantUser")
    assert await me(gateway, await session(gateway, "grace")) == {
        "id": human["id"], "name": "grace", "type": "user", "role": "TenantUser",
        "tenant": "default",
    }  # fmt: skip


# -- audit -------------------------------------------------------------------------------------


async def test_every_lifecycle_action_is_audited_with_actor_target_outcome_and_client(
    gateway: Gateway,
) -> None:
    agent = {"User-Agent": "pangolin-admin/1.0 " + "x" * 300}
    actor = gateway.root.user.id

    async def act(method: str, path: str, body: Any = NO_BODY, status: int = 200) -> Any:
        reply = await call(gateway, method, path, root(gateway), body=body, headers=agent)
        assert reply.status == status, reply.text
        return reply.body if reply.text else None

    created = (await act("POST", "/api/v1/service-users", {"name": "etl"}, 201))["service_user"]
    su = f"/api/v1/service-users/{created['id']}"
    await act("PUT", su, {"description": "d"})
    await act("PUT", su, {"active": False})
    await act("PUT", su, {"active": True})
    await act("POST", f"{su}/rotate")
    await act("DELETE", su, status=204)
    human = await act("POST", "/api/v1/users", {"username": "henry", "password": PASSWORD}, 201)
    await act("PUT", f"/api/v1/users/{human['id']}/password", {"password": NEW_PASSWORD})
    await act("DELETE", f"/api/v1/users/{human['id']}", status=204)
    tenant = await act("POST", "/api/v1/tenants", {"name": "acme"}, 201)
    await act("DELETE", f"/api/v1/tenants/{tenant['id']}", status=204)

    records = await audit(gateway, actor=actor)
    for action, target in (
        ("service_user.create", created["id"]),
        ("service_user.update", created["id"]),
        ("service_user.deactivate", created["id"]),
        ("service_user.activate", created["id"]),
        ("service_user.rotate", created["id"]),
        ("service_user.delete", created["id"]),
        ("user.create", human["id"]),
        ("user.change_password", human["id"]),
        ("user.delete", human["id"]),
        ("tenant.create", tenant["id"]),
        ("tenant.delete", tenant["id"]),
    ):
        (record,) = matching(records, action=action)
        assert record["target_id"] == target, record
        assert record["outcome"] == "success"
        assert record["client_addr"] == CLIENT_ADDR
        assert record["user_agent"] == agent["User-Agent"][:200]
        assert record["at"] == iso(gateway.clock.now)
    (update,) = matching(records, action="service_user.update")
    assert update["target_type"] == "service_user" and "description" in update["detail"]


async def test_logins_token_requests_and_authentication_failures_are_audited(
    gateway: Gateway,
) -> None:
    worker, api_key = await create_service_user(gateway, root(gateway), "worker")
    ivy = await create_human(gateway, root(gateway), "ivy")
    await session(gateway, "ivy")
    assert (await login(gateway, "ivy", "wrong password!")).status == 401
    await token_for(gateway, worker["id"], api_key)
    stranger = generate_key().plaintext()
    assert (await mint_token(gateway, worker["id"], stranger)).status == 401
    assert await catalog_status(gateway, key_auth(stranger)) == 401
    assert (await call(gateway, "GET", "/api/v1/me", key_auth(stranger))).status == 401
    assert (await call(gateway, "GET", "/api/v1/me", bearer("forged"))).status == 401

    records = await audit(gateway)
    assert matching(records, action="login", outcome="success", actor=ivy["id"],
                    target_id=ivy["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="login", outcome="failure", actor=ivy["id"],
                    target_id=ivy["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="token.issue", outcome="success", actor=worker["id"],
                    target_id=worker["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="token.issue", outcome="failure", actor="anonymous",
                    client_addr=CLIENT_ADDR)  # fmt: skip
    (on_catalog,) = matching(records, action="auth.failure", target_type="catalog")
    assert (on_catalog["outcome"], on_catalog["actor"]) == ("failure", "anonymous")
    assert on_catalog["target_id"] == "default" and CATALOG in on_catalog["detail"]
    on_api = matching(records, action="auth.failure", target_type="api")
    assert len(on_api) == 2 and all("/api/v1/me" in r["detail"] for r in on_api)
    assert all(r["client_addr"] == CLIENT_ADDR for r in on_api)
    assert_no_secrets(json.dumps(records), stranger, api_key)


async def test_a_refused_management_action_leaves_a_failure_record(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    await call(gateway, "POST", "/api/v1/service-users", acme.auth,
               body={"name": "sneaky", "role": "Root"})  # fmt: skip
    victim = gateway.root.user.id
    await call(gateway, "POST", f"/api/v1/service-users/{victim}/rotate", acme.auth)
    records = await audit(gateway, actor=acme.admin["id"], outcome="failure")
    (create,) = matching(records, action="service_user.create")
    assert create["detail"].startswith("403") and create["client_addr"] == CLIENT_ADDR
    (rotate,) = matching(records, action="service_user.rotate")
    assert rotate["target_id"] == victim and rotate["detail"].startswith("404")
    assert not await audit(gateway, action="service_user.create", actor=acme.admin["id"],
                           outcome="success")  # fmt: skip


async def test_audit_filters_by_actor_action_target_since_and_outcome_and_paginates(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    first, _ = await create_service_user(gateway, root(gateway), "first")
    gateway.clock.advance(100)
    since = iso(gateway.clock.now)
    second, _ = await create_service_user(gateway, acme.auth, "second")
    await ok(gateway, "PUT", f"/api/v1/service-users/{second['id']}", acme.auth,
             body={"active": False})  # fmt: skip
    await call(gateway, "DELETE", f"/api/v1/service-users/{uuid.uuid4()}", acme.auth)

    by_acme = await audit(gateway, actor=acme.admin["id"])
    newest_first = ["service_user.delete", "service_user.deactivate", "service_user.create"]
    assert [r["action"] for r in by_acme] == newest_first
    assert {r["target_id"] for r in await audit(gateway, target=first["id"])} == {first["id"]}
    assert [r["target_id"] for r in await audit(gateway, action="service_user.create",
                                                since=since)] == [second["id"]]  # fmt: skip
    assert {r["outcome"] for r in await audit(gateway, outcome="failure")} == {"failure"}
    assert len(await audit(gateway, since=since, outcome="success")) == 2
    assert await audit(gateway, actor="nobody") == []

    everything = await ok(gateway, "GET", "/api/v1/audit", root(gateway))
    page = await ok(gateway, "GET", "/api/v1/audit?limit=2&offset=1", root(gateway))
    assert (page["total"], page["limit"], page["offset"]) == (everything["total"], 2, 1)
    assert page["items"] == everything["items"][1:3]

    for query, field in (
        ("outcome=maybe", "outcome"),
        ("since=yesterday", "since"),
        ("since=2030-01-01T00:00:00", "since"),
        ("limit=0", "limit"),
    ):
        assert_error(await call(gateway, "GET", f"/api/v1/audit?{query}", root(gateway)), 400,
                     field)  # fmt: skip


async def test_a_tenant_admin_sees_only_its_tenants_audit_records(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    await create_service_user(gateway, root(gateway), "default-etl")
    own, _ = await create_service_user(gateway, acme.auth, "acme-etl")
    await login(gateway, "nobody", PASSWORD)  # an anonymous failure: no tenant
    seen = await audit(gateway, acme.auth)
    assert seen and all(r["tenant_id"] == acme.tenant["id"] for r in seen)
    assert matching(seen, action="service_user.create", target_id=own["id"])
    assert matching(seen, action="service_user.create", target_id=acme.admin["id"])
    # Root's actions in acme: creating the tenant itself, and its admin.
    filtered = await audit(gateway, acme.auth, actor=gateway.root.user.id)
    assert [(r["action"], r["target_id"]) for r in filtered] == [
        ("service_user.create", acme.admin["id"]),
        ("tenant.create", acme.tenant["id"]),
    ]


async def test_a_duplicate_create_leaves_no_row_and_no_success_record(gateway: Gateway) -> None:
    await create_service_user(gateway, root(gateway), "etl")
    await create_human(gateway, root(gateway), "jack")
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    before = await stored_state(gateway)
    for path, body, field in (
        ("/api/v1/service-users", {"name": "etl"}, "name"),
        ("/api/v1/service-users", {"name": "  etl  "}, "name"),  # the same name, once trimmed
        ("/api/v1/users", {"username": "jack", "password": PASSWORD}, "username"),
        ("/api/v1/tenants", {"name": "acme"}, "name"),
    ):
        assert_error(await call(gateway, "POST", path, root(gateway), body=body), 409, field)
    assert await stored_state(gateway) == before
    failures = await audit(gateway, outcome="failure")
    assert {r["action"] for r in failures} == {"service_user.create", "user.create",
                                               "tenant.create"}  # fmt: skip
    assert all(r["detail"].startswith("409") for r in failures)
    # The same name in another tenant is a different service user.
    await create_service_user(gateway, root(gateway), "etl", tenant="acme")


async def test_a_full_audit_queue_drops_and_counts_records_and_answers_normally(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # No background flush during the test, so what is queued, written and dropped is exact.
    store = StoreSettings(path=str(tmp_path / "quiet.db"), audit_flush_seconds=3600)
    gw = await make_gateway(store=store)
    queue = gw.app[AUDIT]
    queue._max_pending = 2
    bad = key_auth(generate_key().plaintext())
    for _ in range(5):
        assert_error(await call(gw, "GET", CATALOG, bad), 401)
    assert_error(await call(gw, "GET", "/api/v1/me", bad), 401)
    assert (queue.pending, queue.dropped) == (2, 4)
    assert await catalog_status(gw, root(gw)) == 200  # the gateway still works

    records = await audit(gw, action="auth.failure")  # flushes the queue first
    assert len(records) == 2 and queue.pending == 0
    assert queue.dropped == 4


async def test_a_shutdown_during_an_audit_write_waits_for_it_and_loses_nothing(
    make_gateway: MakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StoreSettings(path=str(tmp_path / "slow.db"), audit_flush_seconds=0.01)
    gw = await make_gateway(store=store)
    writing, release = asyncio.Event(), asyncio.Event()
    real_insert = gw.store.insert_audit_records

    async def slow_insert(records: Any) -> None:  # a spy: the real write, only later
        writing.set()
        await release.wait()
        await real_insert(records)

    monkeypatch.setattr(gw.store, "insert_audit_records", slow_insert)
    assert_error(await call(gw, "GET", CATALOG, key_auth(generate_key().plaintext())), 401)
    async with asyncio.timeout(10):
        await writing.wait()  # the writer is inside its write
        closing = asyncio.create_task(gw.client.close())
        (writer,) = (t for t in asyncio.all_tasks() if t.get_name() == "pangolin-audit-writer")
        while not writer.cancelling():  # the shutdown has cancelled the writer mid-write
            await asyncio.sleep(0)
        release.set()
        await closing
    stored = [r for r in await gw.store.audit_records() if r.action == "auth.failure"]
    assert len(stored) == 1


# -- bad input ---------------------------------------------------------------------------------

BAD_CREATES = [
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"name": "   "}, "name", id="whitespace-name"),
    pytest.param({"name": "n" * 129}, "name", id="129-char-name"),
    pytest.param({"name": "a\x00b"}, "name", id="nul"),
    pytest.param({"name": "a\x1b[31mb"}, "name", id="esc"),
    pytest.param({"name": "a\u009bb"}, "name", id="c1-csi"),
    pytest.param({"name": "a\nb"}, "name", id="newline"),
    pytest.param({}, "name", id="missing-name"),
    pytest.param({"name": None}, "name", id="null-name"),
    pytest.param({"name": 7}, "name", id="number-name"),
    pytest.param({"name": "ok", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"name": "ok", "role": 5}, "role", id="numeric-role"),
    pytest.param({"name": "ok", "role": "Boss"}, "role", id="unknown-role"),
    pytest.param({"name": "ok", "description": "d\x1b"}, "description", id="esc-description"),
    pytest.param({"name": "ok", "description": "d" * 1025}, "description", id="long-description"),
    pytest.param({"name": "ok", "expires_in": True}, "expires_in", id="boolean-expires-in"),
    pytest.param({"name": "ok", "expires_in": "60"}, "expires_in", id="string-expires-in"),
    pytest.param({"name": "ok", "expires_in": 0}, "expires_in", id="zero-expires-in"),
    pytest.param({"name": "ok", "expires_in": -5}, "expires_in", id="negative-expires-in"),
    pytest.param({"name": "ok", "expires_in": 1e300}, "expires_in", id="huge-expires-in"),
    pytest.param({"name": "ok", "expires_at": "2031-01-31T00:00:00"}, "expires_at", id="naive"),
    pytest.param({"name": "ok", "expires_at": "2001-01-31T00:00:00Z"}, "expires_at", id="past"),
    pytest.param({"name": "ok", "expires_at": "soon"}, "expires_at", id="not-a-time"),
    pytest.param({"name": "ok", "expires_at": 1999999999}, "expires_at", id="epoch-number"),
    pytest.param(
        {"name": "ok", "expires_at": "2031-01-31T00:00:00Z", "expires_in": 5},
        "expires_at",
        id="both-expiries",
    ),  # fmt: skip
    pytest.param({"name": "ok", "tenant": 1}, "tenant", id="numeric-tenant"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
async def test_a_bad_create_is_a_400_naming_the_field_and_stores_nothing(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    before = await stored_state(gateway)
    reply = await call(gateway, "POST", "/api/v1/service-users", root(gateway), body=body)
    assert_error(reply, 400, field)
    assert "api_key" not in reply.text
    assert await stored_state(gateway) == before


async def test_a_create_in_an_unknown_tenant_is_a_404_naming_the_tenant(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    for path, body in (
        ("/api/v1/service-users", {"name": "etl", "tenant": "nowhere"}),
        ("/api/v1/users", {"username": "kim", "password": PASSWORD, "tenant": "nowhere"}),
    ):
        assert_error(await call(gateway, "POST", path, root(gateway), body=body), 404, "tenant")
    assert await stored_state(gateway) == before


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"name": "etl"', ("JSON",)),
        (b"name=etl", ("JSON",)),
        (b'["etl"]', ("object",)),
        (b'"etl"', ("object",)),
        (b"null", ("object",)),
        (b"\xff\xfe\x00", ("JSON",)),
        (b"[" * 5000 + b"]" * 5000, ()),
    ],
    ids=["truncated", "form", "array", "string", "null", "not-utf8", "deeply-nested"],
)
async def test_a_body_that_is_not_a_json_object_is_a_400_and_stores_nothing(
    gateway: Gateway, raw: bytes, words: tuple[str, ...]
) -> None:
    before = await stored_state(gateway)
    for path in ("/api/v1/service-users", "/api/v1/users", "/api/v1/tenants", "/api/v1/login"):
        assert_error(await call(gateway, "POST", path, root(gateway), raw=raw), 400, *words)
    assert await stored_state(gateway) == before


async def test_text_that_is_not_valid_unicode_is_a_400_naming_the_field(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    lone_surrogate = b'"a\\ud800b"'
    for path, template, field in (
        ("/api/v1/service-users", b'{"name": %s}', "name"),
        ("/api/v1/service-users", b'{"name": "ok", "description": %s}', "description"),
        ("/api/v1/users", b'{"username": "kim", "password": %s}', "password"),
        ("/api/v1/tenants", b'{"name": %s}', "name"),
        ("/api/v1/login", b'{"username": "kim", "password": %s}', "password"),
    ):
        reply = await call(gateway, "POST", path, root(gateway), raw=template % lone_surrogate)
        assert_error(reply, 400, field)
    assert await stored_state(gateway) == before


async def test_hostile_text_in_a_refused_request_cannot_corrupt_or_jam_the_audit_log(
    gateway: Gateway,
) -> None:
    # An unknown field's name and a path id are client text that ends up in failure records.
    for raw in (b'{"\\ud800": 1}', b'{"\\u001b[2J\\u001b[31mred": 1}'):
        reply = await call(gateway, "POST", "/api/v1/service-users", root(gateway), raw=raw)
        assert assert_error(reply, 400, "unknown field").isprintable()
    missing = await call(gateway, "PUT", "/api/v1/service-users/%1B%5B2Jx", root(gateway),
                         body={"description": "x"})  # fmt: skip
    assert_error(missing, 404)

    records = await audit(gateway, outcome="failure")  # the queue flushes fine
    assert len(records) == 3
    for record in records:
        for value in (record["detail"], record["target_id"] or ""):
            assert value.isprintable(), value
    # And the queue keeps working afterwards.
    assert (await login(gateway, "nobody", PASSWORD)).status == 401
    assert len(await audit(gateway, action="login")) == 1


async def test_bad_updates_are_400_naming_the_field_and_change_nothing(gateway: Gateway) -> None:
    created, _ = await create_service_user(gateway, root(gateway), "etl", description="keep")
    path = f"/api/v1/service-users/{created['id']}"
    before = await stored_state(gateway)
    for body, field in (
        ({"active": "yes"}, "active"),
        ({"active": 1}, "active"),
        ({"role": 5}, "role"),
        ({"role": "root"}, "role"),
        ({"expires_in": True}, "expires_in"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2031-01-31T00:00:00"}, "expires_at"),
        ({"description": "x\x00"}, "description"),
        ({"description": None}, "description"),
        ({"name": "renamed"}, "name"),
        ({"key_digest": "00"}, "key_digest"),
        ({"description": "new", "tenant": "acme"}, "tenant"),
        ({}, "description"),
    ):
        assert_error(await call(gateway, "PUT", path, root(gateway), body=body), 400, field)
    assert await stored_state(gateway) == before
    assert await ok(gateway, "GET", path, root(gateway)) == created


async def test_a_body_over_64_kib_is_refused_with_413_and_stores_nothing(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    created, _ = await create_service_user(gateway, root(gateway), "etl")
    huge = {"name": "big", "description": "d" * (MAX_BODY + 1)}
    for method, path in (
        ("POST", "/api/v1/service-users"),
        ("PUT", f"/api/v1/service-users/{created['id']}"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/tenants"),
        ("POST", "/api/v1/login"),
    ):
        assert_error(await call(gateway, method, path, root(gateway), body=huge), 413)
    state = await stored_state(gateway)
    assert state[0] == before[0] + 1  # only "etl"
    unchanged = await ok(gateway, "GET", f"/api/v1/service-users/{created['id']}", root(gateway))
    assert unchanged == created


async def test_a_time_outside_years_1_to_9999_in_utc_is_a_400_and_never_breaks_the_list(
    gateway: Gateway,
) -> None:
    created, _ = await create_service_user(gateway, root(gateway), "etl")
    path = f"/api/v1/service-users/{created['id']}"
    before = await stored_state(gateway)
    for at in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        create = await call(gateway, "POST", "/api/v1/service-users", root(gateway),
                            body={"name": "far", "expires_at": at})  # fmt: skip
        assert_error(create, 400, "expires_at")
        update = await call(gateway, "PUT", path, root(gateway), body={"expires_at": at})
        assert_error(update, 400, "expires_at")
        since = await call(gateway, "GET", "/api/v1/audit?" + urlencode({"since": at}),
                           root(gateway))  # fmt: skip
        assert_error(since, 400, "since")
    assert await stored_state(gateway) == before
    assert (await ok(gateway, "GET", path, root(gateway)))["expires_at"] is None
    # The extremes themselves are fine.
    last = await ok(
        gateway, "PUT", path, root(gateway), body={"expires_at": "9999-12-31T23:59:59Z"}
    )
    assert last["expires_at"] == "9999-12-31T23:59:59Z"
    first = await ok(
        gateway, "PUT", path, root(gateway), body={"expires_at": "0001-01-01T00:00:00Z"}
    )
    assert first["expires_at"] == "0001-01-01T00:00:00Z"
    assert (await ok(gateway, "GET", "/api/v1/service-users", root(gateway)))["total"] == 2


async def test_unknown_paths_and_methods_answer_json_errors(gateway: Gateway) -> None:
    assert_error(await call(gateway, "GET", "/api/v1/nothing-here", root(gateway)), 404)
    wrong_method = await call(gateway, "PATCH", "/api/v1/service-users", root(gateway),
                              body={"name": "x"})  # fmt: skip
    assert_error(wrong_method, 405)
    assert set(wrong_method.headers["Allow"].split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize("path", ["/api/v1/service-users", "/api/v1/users", "/api/v1/audit"])
async def test_bad_pagination_or_filter_queries_are_400_naming_the_parameter(
    gateway: Gateway, path: str
) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("limit=%C2%B2", "limit"),  # "²": a digit to str.isdigit(), not to int()
        ("offset=%C2%B2", "offset"),
    ):
        assert_error(await call(gateway, "GET", f"{path}?{query}", root(gateway)), 400, field)
    assert (await ok(gateway, "GET", f"{path}?limit=1000&offset=0", root(gateway)))["limit"] == 1000


async def test_bad_service_user_list_filters_are_400_naming_the_parameter(
    gateway: Gateway,
) -> None:
    for query, field in (("active=yes", "active"), ("active=1", "active"), ("role=Boss", "role")):
        reply = await call(gateway, "GET", f"/api/v1/service-users?{query}", root(gateway))
        assert_error(reply, 400, field)


@pytest.mark.parametrize(
    "target",
    [str(uuid.uuid4()), "../x", "..%2Fx", "%2E%2E%2Fx", "not-a-uuid", "%00", quote("ü" * 40)],
    ids=["random-uuid", "dotdot", "encoded-dotdot", "encoded-dots", "word", "nul", "unicode"],
)
async def test_unknown_ids_are_404_everywhere_and_store_nothing(
    gateway: Gateway, target: str
) -> None:
    before = await stored_state(gateway)
    for method, path, body in (
        ("GET", "/api/v1/service-users/{id}", NO_BODY),
        ("PUT", "/api/v1/service-users/{id}", {"description": "x"}),
        ("POST", "/api/v1/service-users/{id}/rotate", NO_BODY),
        ("DELETE", "/api/v1/service-users/{id}", NO_BODY),
        ("GET", "/api/v1/users/{id}", NO_BODY),
        ("DELETE", "/api/v1/users/{id}", NO_BODY),
        ("PUT", "/api/v1/users/{id}/password", {"password": NEW_PASSWORD}),
        ("DELETE", "/api/v1/tenants/{id}", NO_BODY),
    ):
        reply = await call(gateway, method, path.format(id=target), root(gateway), body=body)
        assert_error(reply, 404)
    assert await stored_state(gateway) == before


# -- OpenAPI -----------------------------------------------------------------------------------


async def test_the_openapi_document_describes_exactly_the_api_v1_routes(gateway: Gateway) -> None:
    reply = await call(gateway, "GET", "/api/v1/openapi.json")  # public, no credential
    assert reply.status == 200, reply.text
    document = reply.body
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    registered = {
        (route.method, route.resource.canonical)
        for route in gateway.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }
    assert documented == registered

    # Every reference resolves, and every operation answers something.
    schemas = document["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', reply.text)
    assert refs and set(refs) <= set(schemas)
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["responses"] and operation["summary"]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PUT", {"active": False}),
        ("PUT", {"role": "TenantAdmin"}),
        ("PUT", {"expires_at": "2000-01-01T00:00:00Z"}),
        ("PUT", {"expires_in": 2}),
        ("PUT", {"expires_at": "2999-01-01T00:00:00Z"}),
        ("DELETE", NO_BODY),
    ],
    ids=["deactivate", "demote", "expire", "expire-soon", "expire-one-day", "delete"],
)
async def test_the_last_root_cannot_be_retired(gateway: Gateway, method: str, body: Any) -> None:
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    refused = await call(gateway, method, path, root(gateway), body=body)
    assert_error(refused, 409, "Root")
    assert (await ok(gateway, "GET", "/api/v1/me", root(gateway)))["role"] == "Root"
    assert not await audit(gateway, action="service_user.update", outcome="success")


async def test_a_root_can_be_retired_once_another_root_exists(gateway: Gateway) -> None:
    second, key = await create_service_user(gateway, root(gateway), "second-root", role="Root")
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    await ok(gateway, "DELETE", path, root(gateway), status=204)
    await ok(gateway, "GET", "/api/v1/me", key_auth(key))
    last = await call(gateway, "DELETE", f"/api/v1/service-users/{second['id']}", key_auth(key))
    assert_error(last, 409, "Root")


async def test_an_expiry_is_allowed_on_a_root_while_another_root_never_expires(
    gateway: Gateway,
) -> None:
    second, key = await create_service_user(gateway, root(gateway), "second-root", role="Root")
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    expiring = await ok(gateway, "PUT", path, root(gateway), body={"expires_in": 3600})
    assert expiring["expires_at"] is not None
    # Now the second Root is the last one without an expiry: it must stay that way.
    refused = await call(
        gateway, "PUT", f"/api/v1/service-users/{second['id']}", key_auth(key),
        body={"expires_in": 7200},
    )  # fmt: skip
    assert_error(refused, 409, "expiry")
    # Changes that keep a permanent Root are fine, on either.
    await ok(gateway, "PUT", path, root(gateway), body={"description": "expires in an hour"})
    await ok(gateway, "PUT", path, root(gateway), body={"expires_at": None})


# -- strict JSON (RFC 8259) ----------------------------------------------------------------------


STRICT_JSON_CASES = [
    # (raw body, Content-Type, status, words in the message)
    (b'{"name": "a", "role": "TenantUser", "role": "TenantAdmin"}', "application/json", 400,
     ("role", "more than once")),
    (b'{"name": "a", "name": "b"}', "application/json", 400, ("name", "more than once")),
    ('{"name": "a"}'.encode("utf-16"), "application/json", 400, ("UTF-8",)),
    ('{"name": "a"}'.encode("utf-16-be"), "application/json", 400, ("Malformed JSON",)),
    ('{"name": "a"}'.encode("utf-32"), "application/json", 400, ("UTF-8",)),
    (b'\xef\xbb\xbf{"name": "a"}', "application/json", 400, ("byte order mark",)),
    (b'{"name": "a"}', "text/plain", 415, ("application/json",)),
    (b'{"name": "a"}', "application/x-www-form-urlencoded", 415, ("application/json",)),
    (b'{"name": "a"}', "application/json; charset=utf-16", 415, ("UTF-8",)),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "content_type", "status", "words"), STRICT_JSON_CASES)
async def test_management_bodies_must_be_unambiguous_utf8_json_or_nothing_changes(
    gateway: Gateway, raw: bytes, content_type: str, status: int, words: tuple[str, ...]
) -> None:
    victim, _ = await create_service_user(gateway, root(gateway), "victim")
    before = (await gateway.admin.list())[0]
    for method, path in (
        ("POST", "/api/v1/service-users"),
        ("PUT", f"/api/v1/service-users/{victim['id']}"),
        ("POST", "/api/v1/tenants"),  # a body of a tenant's fields: "name" fits here too
    ):
        reply = await call(
            gateway, method, path, root(gateway), raw=raw, headers={"Content-Type": content_type}
        )
        assert_error(reply, status, *words)
    assert (await gateway.admin.list())[0] == before
    assert [t.name for t in await gateway.store.list_tenants()] == ["default"]


async def test_a_body_without_content_type_is_415(gateway: Gateway) -> None:
    url = gateway.client.make_url("/api/v1/service-users")
    async with gateway.client.session.post(
        url, data=b'{"name": "a"}', headers={**root(gateway), "Content-Type": ""}
    ) as resp:
        assert resp.status == 415
    assert [u.name for u in (await gateway.admin.list())[0]] == ["root"]


async def test_json_with_a_utf8_charset_parameter_is_accepted(gateway: Gateway) -> None:
    reply = await call(
        gateway, "POST", "/api/v1/service-users", root(gateway), raw=b'{"name": "ok"}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )  # fmt: skip
    assert reply.status == 201, reply.text
