"""Management API: human users, logins, sessions, passwords and the login throttle."""

from __future__ import annotations

import dataclasses
import json

import pytest

import gateway.identity.users as users_module
from gateway.settings import ServerSettings

from ..conftest import ENGINES, Gateway, MakeGateway
from ..helpers import bearer
from .management_support import (
    CLIENT_ADDR,
    NEW_PASSWORD,
    NO_BODY,
    PASSWORD,
    assert_error,
    assert_no_secrets,
    audit,
    call,
    catalog_status,
    create_human,
    create_service_user,
    iso,
    login,
    make_acme,
    matching,
    me,
    ok,
    root,
    session,
    stored_state,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),  # the login throttle never sleeps
    # Human users created, changed and deleted on both stores (issue 13).
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]


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
        "tenant": "default", "access": {"default": "full"}, "grants": [],
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
