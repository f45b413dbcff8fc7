"""Deactivating a human administrator: through the API and the UI, their sessions end at once
and they cannot log in until activated again; nobody deactivates themselves or a higher role."""

from __future__ import annotations

import pytest

from gateway.identity.models import Role

from ..conftest import Gateway
from .management_support import (
    assert_error,
    call,
    create_human,
    login,
    make_acme,
    me,
    ok,
    root,
    session,
    stored_state,
)
from .ui_support import human, ui_login

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


async def test_deactivating_a_user_ends_their_sessions_and_logins_until_activated(
    gateway: Gateway,
) -> None:
    ivy = await create_human(gateway, root(gateway), "ivy")
    ivy_session = await session(gateway, "ivy")
    path = f"/api/v1/users/{ivy['id']}"
    off = await ok(gateway, "PUT", path, root(gateway), body={"active": False})
    assert off["active"] is False
    assert (await call(gateway, "GET", "/api/v1/me", ivy_session)).status == 401
    assert (await login(gateway, "ivy")).status == 401
    on = await ok(gateway, "PUT", path, root(gateway), body={"active": True})
    assert on["active"] is True
    assert (await me(gateway, await session(gateway, "ivy")))["name"] == "ivy"


async def test_nobody_deactivates_themselves_or_a_role_above_their_own(gateway: Gateway) -> None:
    boss = await create_human(gateway, root(gateway), "boss", role="Root")
    boss_session = await session(gateway, "boss")
    acme = await make_acme(gateway)
    before = await stored_state(gateway)
    own = await call(gateway, "PUT", f"/api/v1/users/{boss['id']}", boss_session,
                     body={"active": False})  # fmt: skip
    assert_error(own, 400, "yourself")
    # Another tenant's TenantAdmin: as if the user did not exist.
    above = await call(gateway, "PUT", f"/api/v1/users/{boss['id']}", acme.auth,
                       body={"active": False})  # fmt: skip
    assert_error(above, 404)
    bad = await call(gateway, "PUT", f"/api/v1/users/{boss['id']}", root(gateway),
                     body={"active": "no"})  # fmt: skip
    assert_error(bad, 400, "active")
    assert await stored_state(gateway) == before


async def test_the_ui_toggle_deactivates_a_user_and_their_cookie_stops_working(
    gateway: Gateway,
) -> None:
    await human(gateway, "alice")
    bob = await human(gateway, "bob", Role.TENANT_ADMIN)
    alice = await ui_login(gateway, "alice")
    bob_browser = await ui_login(gateway, "bob")
    assert (await bob_browser.get("/ui/service-users")).status == 200
    listing = await alice.get("/ui/users")
    assert f'action="/ui/users/{bob.id}/active"' in listing.text
    done = await alice.post(f"/ui/users/{bob.id}/active", {"active": "false"},
                            csrf_from="/ui/users")  # fmt: skip
    assert done.status == 303 and "deactivated" in done.location
    refused = await bob_browser.get("/ui/service-users")
    assert refused.status == 303 and refused.location == "/ui/login"
    again = await alice.post(f"/ui/users/{bob.id}/active", {"active": "true"},
                             csrf_from="/ui/users")  # fmt: skip
    assert again.status == 303
    assert (await (await ui_login(gateway, "bob")).get("/ui/service-users")).status == 200
