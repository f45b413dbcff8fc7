"""Management API: who may manage which service users, and unauthenticated callers."""

from __future__ import annotations

import uuid

import pytest

from gateway.identity.models import generate_key

from ..conftest import Gateway
from ..helpers import bearer
from .management_support import (
    NEW_PASSWORD,
    NO_BODY,
    PASSWORD,
    assert_error,
    call,
    catalog_status,
    create_service_user,
    key_auth,
    make_acme,
    me,
    ok,
    root,
    stored_state,
)

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


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
