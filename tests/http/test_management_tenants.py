"""Management API: tenants, and /api/v1/me."""

from __future__ import annotations

import uuid

import pytest

from ..conftest import Gateway
from .management_support import (
    assert_error,
    call,
    create_human,
    create_service_user,
    iso,
    key_auth,
    make_acme,
    me,
    ok,
    root,
    session,
    stored_state,
    token_for,
)

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


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
        "tenant": "default", "access": {"default": "write"}, "grants": [],
    }  # fmt: skip
    assert await me(gateway, await token_for(gateway, worker["id"], api_key)) == await me(
        gateway, key_auth(api_key)
    )
    assert await me(gateway, root(gateway)) == {
        "id": gateway.root.user.id, "name": "root", "type": "service_user", "role": "Root",
        "tenant": "default", "access": {"default": "full"}, "grants": [],
    }  # fmt: skip
    human = await create_human(gateway, root(gateway), "grace", role="TenantUser")
    assert await me(gateway, await session(gateway, "grace")) == {
        "id": human["id"], "name": "grace", "type": "user", "role": "TenantUser",
        "tenant": "default", "access": {"default": "write"}, "grants": [],
    }  # fmt: skip
