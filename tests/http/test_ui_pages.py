"""The admin UI's other pages: Users (create, change a password, delete), Tenants (create,
delete, refusals), Audit (filters, a bad filter), Catalogs (with client settings), the header,
and ``[ui] enabled = false``."""

from __future__ import annotations

import html

import pytest

from gateway.identity.models import Role
from gateway.settings import CatalogSettings, UiSettings

from ..conftest import Gateway, MakeGateway
from .management_support import NEW_PASSWORD, PASSWORD, audit, call, iso, ok, root, stored_state
from .ui_support import UiSession, human, ui_login, user_named


async def admin(gw: Gateway) -> UiSession:
    await human(gw, "alice")
    return await ui_login(gw, "alice")


# -- the header ------------------------------------------------------------------------------


async def test_the_header_shows_who_is_logged_in_with_a_logout_button(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await alice.get("/ui/catalogs")
    header = page.text.split("</header>")[0]
    assert 'alice <span class="pill">Root</span> in default' in header
    assert 'action="/ui/logout"' in header and "Log out" in header
    for link in ("/ui/service-users", "/ui/users", "/ui/tenants", "/ui/audit", "/ui/catalogs"):
        assert f'href="{link}"' in header
    assert 'href="/ui/catalogs" aria-current="page"' in header


async def test_the_home_page_goes_to_the_service_users(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await alice.get("/ui/")
    assert page.status == 303 and page.location == "/ui/service-users"


# -- Users -----------------------------------------------------------------------------------


async def test_the_users_page_lists_the_humans_with_their_role_and_tenant(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    await human(gateway, "bob", Role.TENANT_ADMIN)
    page = await alice.get("/ui/users")
    assert page.status == 200
    rows = page.rows()
    assert set(rows) == {"alice", "bob"}
    assert "(you)" in rows["alice"] and "(you)" not in rows["bob"]
    assert "TenantAdmin" in rows["bob"] and "<td>default</td>" in rows["bob"]
    assert "/delete" in rows["bob"] and "/delete" not in rows["alice"]
    assert "Change password" in rows["alice"]


async def test_a_root_creates_a_human_who_can_then_log_in(gateway: Gateway) -> None:
    alice = await admin(gateway)
    form = await alice.get("/ui/users/new")
    assert form.status == 200 and ">Root</option>" in form.text
    page = await alice.post(
        "/ui/users",
        {"username": "carol", "password": PASSWORD, "role": "TenantAdmin"},
        csrf_from="/ui/users/new",
    )
    assert page.status == 303 and page.location == "/ui/users?done=created"
    listed = await alice.get(page.location)
    assert "User created." in listed.text and "carol" in listed.rows()
    assert (await user_named(gateway, "carol")).role is Role.TENANT_ADMIN
    await ui_login(gateway, "carol")
    assert PASSWORD not in "".join(p.text for p in alice.history)


@pytest.mark.parametrize(
    ("fields", "status", "word"),
    [
        ({"username": "carol", "password": "short"}, 400, "password"),
        ({"username": "", "password": PASSWORD}, 400, "username"),
        ({"username": "bob", "password": PASSWORD}, 409, "username"),
        ({"username": "carol", "password": PASSWORD, "tenant": "nowhere"}, 404, "tenant"),
    ],
    ids=["short-password", "no-username", "taken", "unknown-tenant"],
)
async def test_a_bad_new_user_is_refused_naming_the_field(
    gateway: Gateway, fields: dict[str, str], status: int, word: str
) -> None:
    alice = await admin(gateway)
    await human(gateway, "bob")
    before = await stored_state(gateway)
    page = await alice.post("/ui/users", fields)
    assert page.status == status, page.text
    assert word in page.text
    assert await stored_state(gateway) == before
    assert len(await audit(gateway, action="user.create", outcome="failure")) == 1


async def test_a_tenant_admin_creates_humans_only_up_to_its_own_role_in_its_tenant(
    gateway: Gateway,
) -> None:
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    await human(gateway, "acmeadmin", Role.TENANT_ADMIN, "acme")
    acme = await ui_login(gateway, "acmeadmin")
    page = await acme.post(
        "/ui/users", {"username": "dave", "password": PASSWORD, "role": "TenantUser"}
    )
    assert page.status == 303, page.text
    dave = await user_named(gateway, "dave")
    assert (dave.role, dave.tenant_name) == (Role.TENANT_USER, "acme")


async def test_a_root_changes_another_users_password(gateway: Gateway) -> None:
    alice = await admin(gateway)
    bob = await human(gateway, "bob", Role.TENANT_ADMIN)
    path = f"/ui/users/{bob.id}/password"
    form = await alice.get(path)
    assert form.status == 200 and "Change the password of bob" in form.text
    short = await alice.post(path, {"password": "short"}, csrf_from=path)
    assert short.status == 400 and "password" in short.text
    page = await alice.post(path, {"password": NEW_PASSWORD}, csrf_from=path)
    assert page.status == 303 and page.location == "/ui/users?done=password"
    assert "Password changed" in (await alice.get(page.location)).text
    await ui_login(gateway, "bob", NEW_PASSWORD)
    changes = await audit(gateway, action="user.change_password", outcome="success")
    assert [record["target_id"] for record in changes] == [bob.id]


async def test_a_root_deletes_another_user_but_not_itself(gateway: Gateway) -> None:
    alice = await admin(gateway)
    alice_user = await user_named(gateway, "alice")
    bob = await human(gateway, "bob", Role.TENANT_ADMIN)
    confirm = await alice.get(f"/ui/users/{bob.id}/delete")
    assert confirm.status == 200 and "Delete user “bob”?" in confirm.text
    page = await alice.post(f"/ui/users/{bob.id}/delete", {})
    assert page.status == 303 and page.location == "/ui/users?done=deleted"
    listed = await alice.get(page.location)
    assert "User deleted." in listed.text and "bob" not in listed.rows()
    myself = await alice.post(f"/ui/users/{alice_user.id}/delete", {})
    myself.assert_refused(400, "cannot delete yourself")
    assert (await user_named(gateway, "alice")).id == alice_user.id
    assert (await alice.get("/ui/users")).status == 200


async def test_an_unknown_user_is_a_404_page(gateway: Gateway) -> None:
    alice = await admin(gateway)
    missing = "00000000-0000-0000-0000-000000000000"
    (await alice.get(f"/ui/users/{missing}/password")).assert_refused(404)
    (await alice.post(f"/ui/users/{missing}/delete", {})).assert_refused(404)


# -- Tenants ---------------------------------------------------------------------------------


async def tenant_id(gw: Gateway, name: str) -> str:
    tenants = await ok(gw, "GET", "/api/v1/tenants", root(gw))
    found: str = next(t["id"] for t in tenants["items"] if t["name"] == name)
    return found


async def test_a_root_creates_a_tenant(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await alice.post("/ui/tenants", {"name": "analytics"}, csrf_from="/ui/tenants")
    assert page.status == 303 and page.location == "/ui/tenants"
    listed = await alice.get("/ui/tenants")
    assert set(listed.rows()) == {"default", "analytics"}
    assert "Delete tenant analytics" in listed.rows()["analytics"]
    assert "Delete" not in listed.rows()["default"]  # the default tenant is always there
    await tenant_id(gateway, "analytics")


@pytest.mark.parametrize(
    ("name", "status"), [("Bad Name!", 400), ("", 400), ("x" * 64, 400), ("default", 409)]
)
async def test_a_bad_tenant_name_is_refused_with_a_message(
    gateway: Gateway, name: str, status: int
) -> None:
    alice = await admin(gateway)
    before = await stored_state(gateway)
    page = await alice.post("/ui/tenants", {"name": name})
    assert page.status == status, page.text
    assert 'class="error" role="alert">name' in page.text
    assert '<form method="post" action="/ui/tenants"' in page.text
    assert await stored_state(gateway) == before


async def test_a_root_deletes_an_empty_tenant(gateway: Gateway) -> None:
    alice = await admin(gateway)
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "old"})
    page = await alice.post(f"/ui/tenants/{await tenant_id(gateway, 'old')}/delete", {})
    assert page.status == 303 and page.location == "/ui/tenants"
    assert "old" not in (await alice.get("/ui/tenants")).rows()
    assert len(await audit(gateway, action="tenant.delete", outcome="success")) == 1


async def test_deleting_a_tenant_that_still_has_identities_is_a_409_page(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    await gateway.user("etl", tenant="acme")
    page = await alice.post(f"/ui/tenants/{await tenant_id(gateway, 'acme')}/delete", {})
    page.assert_refused(409, "Not possible now")
    assert "acme" in (await alice.get("/ui/tenants")).rows()
    default = await alice.post(f"/ui/tenants/{await tenant_id(gateway, 'default')}/delete", {})
    default.assert_refused(409, "default")


# -- Audit -----------------------------------------------------------------------------------


async def test_the_audit_page_lists_records_and_its_filters_work(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    await gateway.admin.rotate(etl.user.id, actor="test")
    bad = await alice.post("/ui/service-users", {"name": "", "expiry": "30"})
    assert bad.status == 400

    everything = await alice.get("/ui/audit")
    assert everything.status == 200
    for action in ("service_user.create", "service_user.rotate", "login"):
        assert f"<td>{action}</td>" in everything.text
    rotations = await alice.get("/ui/audit?action=service_user.rotate")
    assert rotations.text.count("<td>service_user.rotate</td>") == 1
    assert "<td>service_user.create</td>" not in rotations.text
    assert "1 record," in rotations.text
    assert 'name="action" value="service_user.rotate"' in rotations.text
    failures = await alice.get("/ui/audit?outcome=failure")
    assert '">failure</td>' in failures.text and '">success</td>' not in failures.text
    assert "<option selected>failure</option>" in failures.text
    by_target = await alice.get(f"/ui/audit?target={etl.user.id}")
    assert by_target.text.count(f"<code>{etl.user.id}</code>") == 2
    alice_id = (await user_named(gateway, "alice")).id
    by_actor = await alice.get(f"/ui/audit?actor={alice_id}")
    assert "<td>login</td>" in by_actor.text and "<td>service_user.rotate</td>" not in by_actor.text
    gateway.clock.advance(60)
    later = await alice.get(f"/ui/audit?since={iso(gateway.clock() - 1)}&action=")
    assert later.status == 200, later.text
    assert "0 records" in later.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=yesterday", "since"),
        ("outcome=maybe", "outcome"),
        ("offset=-1", "offset"),
        ("colour=red", "colour"),
    ],
)
async def test_a_bad_audit_filter_is_a_400_page_naming_the_field(
    gateway: Gateway, query: str, field: str
) -> None:
    alice = await admin(gateway)
    page = await alice.get(f"/ui/audit?{query}")
    page.assert_refused(400, field)


async def test_the_audit_page_pages_by_50(gateway: Gateway) -> None:
    for number in range(55):
        await gateway.user(f"bulk-{number:02}")
    alice = await admin(gateway)
    first = await alice.get("/ui/audit?action=service_user.create")
    assert first.text.count("<td>service_user.create</td>") == 50
    assert "Older" in first.text and "Newer" not in first.text
    second = await alice.get("/ui/audit?action=service_user.create&offset=50")
    # bulk-00..54 and the Root service user made by init.
    assert second.text.count("<td>service_user.create</td>") == 6
    assert "Newer" in second.text and "Older" not in second.text
    assert "action=service_user.create" in html.unescape(second.text)


# -- Catalogs --------------------------------------------------------------------------------


async def test_the_catalogs_page_lists_the_catalogs_the_caller_may_use_with_snippets(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        catalogs={
            "default": CatalogSettings(upstream=""),
            "lake": CatalogSettings(upstream="", tenant="acme"),
        }
    )
    await ok(gw, "POST", "/api/v1/tenants", root(gw), status=201, body={"name": "acme"})
    base = str(gw.client.make_url("")).rstrip("/")
    alice = await admin(gw)
    page = await alice.get("/ui/catalogs")
    assert page.status == 200
    text = html.unescape(page.text)
    for name in ("default", "lake"):
        assert f"<h2>{name}" in text
        assert f"{base}/v1/{name}/v1/oauth/tokens" in text
        assert f'"uri": "{base}/v1/{name}/"' in text
    assert '"credential": "<service-user-id>:<api-key>"' in text
    assert "CREATE SECRET pangolin" in text
    assert "<h2>default <span" in page.text  # marked as the default catalog

    await human(gw, "acmeadmin", Role.TENANT_ADMIN, "acme")
    acme = await ui_login(gw, "acmeadmin")
    theirs = html.unescape((await acme.get("/ui/catalogs")).text)
    assert "<h2>lake" in theirs and "<h2>default" not in theirs
    assert f"{base}/v1/default/" not in theirs


async def test_a_tenant_without_a_catalog_is_told_so(gateway: Gateway) -> None:
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    await human(gateway, "acmeuser", Role.TENANT_USER, "acme")
    acme = await ui_login(gateway, "acmeuser")
    page = await acme.get("/ui/catalogs")
    assert page.status == 200 and "No catalog is configured for your tenant." in page.text


# -- [ui] enabled = false --------------------------------------------------------------------


async def test_with_the_ui_disabled_its_paths_are_404_and_the_api_still_works(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(ui=UiSettings(enabled=False))
    await human(gw, "alice")
    for method, path in (
        ("GET", "/ui/"),
        ("GET", "/ui/login"),
        ("POST", "/ui/login"),
        ("GET", "/ui/service-users"),
        ("GET", "/ui/static/ui.js"),
    ):
        reply = await call(gw, method, path)
        assert reply.status == 404, (path, reply.text)
        assert "Log in" not in reply.text
    me = await ok(gw, "GET", "/api/v1/me", root(gw))
    assert me["name"] == "root"
    login = await call(
        gw, "POST", "/api/v1/login", body={"username": "alice", "password": PASSWORD}
    )
    assert login.status == 200


async def test_unknown_ui_paths_are_a_not_found_page_with_the_ui_headers(gateway: Gateway) -> None:
    visitor = UiSession(gateway, None)
    for path in ("/ui/no-such-page", "/ui/service-users/x/y/z"):
        page = await visitor.get(path)
        assert page.status == 404 and "Not found" in page.text
        assert page.headers["Content-Type"].startswith("text/html")
    bare = await visitor.get("/ui")
    assert bare.status == 303 and bare.location == "/ui/login"


async def test_the_favicon_is_served_by_the_gateway(gateway: Gateway) -> None:
    icon = await UiSession(gateway, None).get("/ui/static/favicon.svg")
    assert icon.status == 200 and icon.headers["Content-Type"].startswith("image/svg+xml")
