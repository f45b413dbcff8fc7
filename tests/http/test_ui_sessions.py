"""Logging in to the admin UI and what ends a session: the cookie's attributes, the login's
answers, pages without a session, the idle and absolute timeouts, and logout, a new password,
a deactivation and a deletion, each refusing the old cookie at once, on a second app over the
same store too."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.app import create_app
from gateway.identity.models import Role
from gateway.settings import ServerSettings, TokenSettings
from gateway.state import CONFIGURED
from gateway.store import AuditRecord, SqliteStore

from ..conftest import Gateway, GatewayTestServer, MakeGateway
from .management_support import NEW_PASSWORD, PASSWORD
from .ui_support import (
    COOKIE,
    HOST_COOKIE,
    UiSession,
    human,
    session_cookie,
    session_set_cookie,
    ui_login,
)

# Every page a GET reaches, with a made-up id where one is needed.
ID = "00000000-0000-0000-0000-000000000000"
PAGES = [
    "/ui/",
    "/ui/service-users",
    "/ui/service-users/new",
    f"/ui/service-users/{ID}",
    f"/ui/service-users/{ID}/rotate",
    f"/ui/service-users/{ID}/delete",
    "/ui/users",
    "/ui/users/new",
    f"/ui/users/{ID}/password",
    f"/ui/users/{ID}/delete",
    "/ui/tenants",
    "/ui/audit",
    "/ui/catalogs",
]


def attributes(header: str) -> dict[str, str]:
    """A Set-Cookie header's attributes, names lowercased (the first pair is the cookie)."""
    parts = [part.strip() for part in header.split(";")[1:]]
    return {
        name.lower(): value for name, _, value in (part.partition("=") for part in parts if part)
    }


async def assert_sent_to_login(session: UiSession, path: str = "/ui/service-users") -> None:
    page = await session.get(path)
    assert page.status == 303, (path, page.status, page.text)
    assert page.location == "/ui/login"
    assert "service user" not in page.text.lower()


@pytest.fixture
async def second_worker(gateway: Gateway, aiohttp_client: Any) -> AsyncIterator[Gateway]:
    """A second gateway app over the same store file (as a second worker would be)."""
    settings = gateway.app[CONFIGURED].settings
    store = SqliteStore(settings.store.path)
    await store.open()
    app = create_app(settings, store=store, clock=gateway.clock)
    client = await aiohttp_client(GatewayTestServer(app))
    yield Gateway(client, app, store, gateway.root, gateway.upstream, gateway.clock)
    await client.close()
    await store.close()


def on(worker: Gateway, session: UiSession) -> UiSession:
    """The same browser cookie, sent to another worker."""
    return UiSession(worker, session.cookie, session.cookie_name)


# -- logging in ------------------------------------------------------------------------------


async def test_the_login_page_is_served_without_a_session(gateway: Gateway) -> None:
    page = await UiSession(gateway, None).get("/ui/login")
    assert page.status == 200
    assert 'name="username"' in page.text and 'type="password"' in page.text
    assert page.set_cookies == []


async def test_a_wrong_password_gets_401_no_cookie_and_the_same_message_as_an_unknown_user(
    gateway: Gateway, login_delays: list[float]
) -> None:
    await human(gateway, "alice")
    anonymous = UiSession(gateway, None)
    wrong = await anonymous.post(
        "/ui/login", {"username": "alice", "password": "not it at all"}, csrf_from=None
    )
    unknown = await anonymous.post(
        "/ui/login", {"username": "nobody", "password": PASSWORD}, csrf_from=None
    )
    for page in (wrong, unknown):
        assert page.status == 401
        assert "Wrong username or password" in page.text
        assert page.set_cookies == []
        assert session_cookie(page) is None
    assert wrong.text.replace("alice", "nobody") == unknown.text


async def test_a_login_form_without_the_fields_is_refused(gateway: Gateway) -> None:
    page = await UiSession(gateway, None).post("/ui/login", {"username": "alice"}, csrf_from=None)
    assert page.status == 400
    assert page.set_cookies == []


async def test_a_right_password_gets_a_strict_http_only_cookie_over_plain_http(
    gateway: Gateway,
) -> None:
    await human(gateway, "alice")
    page = await UiSession(gateway, None).post(
        "/ui/login", {"username": "alice", "password": PASSWORD}, csrf_from=None
    )
    assert page.status == 303
    assert page.location == "/ui/service-users"
    header = session_set_cookie(page)
    assert header is not None and header.startswith(f"{COOKIE}=pgs_")
    flags = attributes(header)
    assert "httponly" in flags
    assert flags["samesite"] == "Strict"
    assert flags["path"] == "/"
    assert "secure" not in flags  # a browser would drop a Secure cookie over plain http
    assert "domain" not in flags
    assert int(flags["max-age"]) == TokenSettings().session_lifetime_seconds


async def test_behind_an_https_public_url_the_cookie_is_host_prefixed_and_secure(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        server=dataclasses.replace(ServerSettings(), public_url="https://gw.example")
    )
    await human(gw, "alice")
    page = await UiSession(gw, None).post(
        "/ui/login", {"username": "alice", "password": PASSWORD}, csrf_from=None
    )
    assert page.status == 303
    header = session_set_cookie(page)
    assert header is not None and header.startswith(f"{HOST_COOKIE}=pgs_")
    flags = attributes(header)
    assert "secure" in flags and "httponly" in flags
    assert flags["path"] == "/" and "domain" not in flags
    assert flags["samesite"] == "Strict"
    cookie = session_cookie(page)
    assert (await UiSession(gw, cookie, HOST_COOKIE).get("/ui/service-users")).status == 200
    # Over HTTPS only the prefixed cookie counts: the unprefixed name could be set by a
    # sibling subdomain or a plain-http page.
    await assert_sent_to_login(UiSession(gw, cookie, COOKIE))


async def test_over_https_logout_clears_the_cookie_with_the_attributes_it_was_set_with(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        server=dataclasses.replace(ServerSettings(), public_url="https://gw.example")
    )
    await human(gw, "alice")
    alice = await ui_login(gw, "alice")
    page = await alice.post("/ui/logout", {})
    assert page.status == 303
    header = session_set_cookie(page)
    assert header is not None and header.startswith(f'{HOST_COOKIE}="";')
    # A browser ignores a __Host- cookie without Secure: the clearing would be dropped.
    flags = attributes(header)
    assert "secure" in flags and flags["path"] == "/"
    assert flags["max-age"] == "0"


async def test_the_session_cookie_never_appears_in_any_page_or_location(gateway: Gateway) -> None:
    await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    created = await alice.post("/ui/service-users", {"name": "nightly", "expiry": "30"})
    some_id = created.service_user_id()
    for path in [*PAGES, f"/ui/service-users/{some_id}", f"/ui/service-users/{some_id}/rotate"]:
        await alice.get(path)
    await alice.post(f"/ui/service-users/{some_id}/active", {"active": "false"})
    assert alice.cookie is not None
    assert len(alice.history) > len(PAGES)
    for page in alice.history:
        assert alice.cookie not in page.text, page.path
        assert alice.cookie not in page.location, page.path
        assert all(alice.cookie not in header for header in page.set_cookies), page.path
        assert alice.cookie.removeprefix("pgs_") not in page.text, page.path


async def test_a_logged_in_admin_going_to_the_login_page_is_sent_to_the_list(
    gateway: Gateway,
) -> None:
    await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    page = await alice.get("/ui/login")
    assert page.status == 303 and page.location == "/ui/service-users"


# -- pages without a session -----------------------------------------------------------------


@pytest.mark.parametrize("path", PAGES)
async def test_a_page_without_a_session_redirects_to_login(gateway: Gateway, path: str) -> None:
    await assert_sent_to_login(UiSession(gateway, None), path)


@pytest.mark.parametrize(
    "cookie",
    ["garbage", "pgs_" + "A" * 43, "pgs_" + "A" * 42 + "é", "", "pgl_" + "0" * 16 + "_" + "A" * 43],
    ids=["garbage", "well-formed-unknown", "non-ascii", "empty", "an-api-key"],
)
async def test_a_garbage_or_unknown_cookie_redirects_to_login(
    gateway: Gateway, cookie: str
) -> None:
    await assert_sent_to_login(UiSession(gateway, cookie))


async def test_an_api_key_or_bearer_header_is_no_ui_session(gateway: Gateway) -> None:
    anonymous = UiSession(gateway, None)
    root_key = gateway.root.api_key.plaintext()
    for headers in ({"X-API-Key": root_key}, {"Authorization": f"Bearer {root_key}"}):
        page = await anonymous.get("/ui/service-users", headers=headers)
        assert page.status == 303 and page.location == "/ui/login"


async def test_a_post_without_a_session_is_refused_and_creates_nothing(gateway: Gateway) -> None:
    page = await UiSession(gateway, None).post(
        "/ui/service-users", {"name": "forged", "expiry": "30", "csrf": "x"}, csrf_from=None
    )
    page.assert_refused(403)
    users, _ = await gateway.admin.list(limit=1000)
    assert [user.name for user in users] == ["root"]


# -- timeouts --------------------------------------------------------------------------------

IDLE = 600
LIFETIME = 3000


async def timed_gateway(make_gateway: MakeGateway) -> Gateway:
    gw = await make_gateway(
        tokens=dataclasses.replace(
            TokenSettings(), session_idle_seconds=IDLE, session_lifetime_seconds=LIFETIME
        )
    )
    await human(gw, "alice")
    return gw


async def test_a_session_unused_for_the_idle_time_ends(make_gateway: MakeGateway) -> None:
    gw = await timed_gateway(make_gateway)
    alice = await ui_login(gw, "alice")
    # Used within the idle time, it lives on (the idle clock restarts with each use).
    for _ in range(3):
        gw.clock.advance(IDLE - 61)
        assert (await alice.get("/ui/service-users")).status == 200
    gw.clock.advance(IDLE)
    await assert_sent_to_login(alice)


async def test_a_session_ends_at_its_absolute_lifetime_however_busy(
    make_gateway: MakeGateway,
) -> None:
    gw = await timed_gateway(make_gateway)
    alice = await ui_login(gw, "alice")
    used = 0
    while used + 300 < LIFETIME:
        gw.clock.advance(300)
        used += 300
        assert (await alice.get("/ui/service-users")).status == 200, used
    gw.clock.advance(LIFETIME - used)
    await assert_sent_to_login(alice)


async def test_the_cookie_lives_no_longer_than_the_session(make_gateway: MakeGateway) -> None:
    gw = await timed_gateway(make_gateway)
    page = await UiSession(gw, None).post(
        "/ui/login", {"username": "alice", "password": PASSWORD}, csrf_from=None
    )
    header = session_set_cookie(page)
    assert header is not None
    assert int(attributes(header)["max-age"]) == LIFETIME


# -- what ends a session ---------------------------------------------------------------------


async def test_after_logout_the_old_cookie_is_refused_on_every_worker(
    gateway: Gateway, second_worker: Gateway
) -> None:
    await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    assert (await on(second_worker, alice).get("/ui/service-users")).status == 200
    page = await alice.post("/ui/logout", {})
    assert page.status == 303 and page.location == "/ui/login"
    header = session_set_cookie(page)
    assert header is not None and attributes(header)["max-age"] == "0"
    await assert_sent_to_login(alice)
    await assert_sent_to_login(on(second_worker, alice))


async def test_logging_in_twice_gives_two_sessions_and_logout_ends_only_one(
    gateway: Gateway,
) -> None:
    await human(gateway, "alice")
    laptop = await ui_login(gateway, "alice")
    phone = await ui_login(gateway, "alice")
    assert laptop.cookie != phone.cookie
    await laptop.post("/ui/logout", {})
    await assert_sent_to_login(laptop)
    assert (await phone.get("/ui/service-users")).status == 200


async def test_changing_ones_own_password_needs_the_current_one(gateway: Gateway) -> None:
    alice_user = await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    path = f"/ui/users/{alice_user.id}/password"
    form = await alice.get(path)
    assert form.status == 200 and 'name="current_password"' in form.text
    for current in ("not my password", ""):
        page = await alice.post(
            path, {"current_password": current, "password": NEW_PASSWORD}, csrf_from=path
        )
        assert page.status == 403, page.text
        assert "current_password" in page.text
    # Nothing changed: the session lives, the old password still logs in.
    assert (await alice.get("/ui/service-users")).status == 200
    await ui_login(gateway, "alice")


async def test_after_changing_ones_own_password_the_old_cookie_is_refused_everywhere(
    gateway: Gateway, second_worker: Gateway, login_delays: list[float]
) -> None:
    alice_user = await human(gateway, "alice")
    alice = await ui_login(gateway, "alice")
    other_tab = await ui_login(gateway, "alice")
    path = f"/ui/users/{alice_user.id}/password"
    page = await alice.post(
        path, {"current_password": PASSWORD, "password": NEW_PASSWORD}, csrf_from=path
    )
    assert page.status == 303 and page.location == "/ui/login"
    for session in (alice, other_tab, on(second_worker, alice)):
        await assert_sent_to_login(session)
    # The new password logs in; the old one no longer does.
    await ui_login(gateway, "alice", NEW_PASSWORD)
    old = await UiSession(gateway, None).post(
        "/ui/login", {"username": "alice", "password": PASSWORD}, csrf_from=None
    )
    assert old.status == 401


async def test_after_a_root_resets_a_password_that_users_cookie_is_refused_everywhere(
    gateway: Gateway, second_worker: Gateway
) -> None:
    await human(gateway, "alice")
    bob_user = await human(gateway, "bob", Role.TENANT_ADMIN)
    alice = await ui_login(gateway, "alice")
    bob = await ui_login(gateway, "bob")
    path = f"/ui/users/{bob_user.id}/password"
    form = await alice.get(path)
    assert form.status == 200 and 'name="current_password"' not in form.text
    page = await alice.post(path, {"password": NEW_PASSWORD}, csrf_from=path)
    assert page.status == 303 and page.location == "/ui/users?done=password"
    await assert_sent_to_login(bob)
    await assert_sent_to_login(on(second_worker, bob))
    assert (await alice.get("/ui/service-users")).status == 200  # the resetter's lives on
    await ui_login(gateway, "bob", NEW_PASSWORD)


async def test_after_the_user_is_deleted_their_cookie_is_refused_everywhere(
    gateway: Gateway, second_worker: Gateway
) -> None:
    await human(gateway, "alice")
    bob_user = await human(gateway, "bob", Role.TENANT_ADMIN)
    alice = await ui_login(gateway, "alice")
    bob = await ui_login(gateway, "bob")
    page = await alice.post(f"/ui/users/{bob_user.id}/delete", {})
    assert page.status == 303, page.text
    await assert_sent_to_login(bob)
    await assert_sent_to_login(on(second_worker, bob))


async def test_after_the_user_is_deactivated_their_cookie_is_refused_everywhere(
    gateway: Gateway, second_worker: Gateway, login_delays: list[float]
) -> None:
    # Neither the UI nor the API deactivates a human yet; the store can, and its sessions
    # must end with it.
    bob_user = await human(gateway, "bob", Role.TENANT_ADMIN)
    bob = await ui_login(gateway, "bob")
    record = AuditRecord(
        at=gateway.clock(),
        actor="test",
        action="user.update",
        target_type="user",
        target_id=bob_user.id,
        tenant_id=bob_user.tenant_id,
        outcome="success",
    )
    assert await gateway.store.update_user(bob_user.id, {"active": False}, record)
    await assert_sent_to_login(bob)
    await assert_sent_to_login(on(second_worker, bob))
    # A deactivated user cannot log in again either.
    page = await UiSession(gateway, None).post(
        "/ui/login", {"username": "bob", "password": PASSWORD}, csrf_from=None
    )
    assert page.status == 401 and page.set_cookies == []
