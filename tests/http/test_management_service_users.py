"""Management API: the service-user lifecycle (create, list, update, rotate, delete)."""

from __future__ import annotations

import json
import uuid

import pytest

from ..conftest import ENGINES, Gateway
from .management_support import (
    CATALOG,
    NO_BODY,
    PASSWORD,
    assert_error,
    assert_no_secrets,
    call,
    catalog_status,
    create_human,
    create_service_user,
    iso,
    key_auth,
    me,
    mint_token,
    ok,
    root,
    session,
    token_for,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),  # the login throttle never sleeps
    # Creating, rotating and deleting service users on both stores (issue 13).
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]


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
