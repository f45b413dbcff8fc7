"""The management rules in the admin UI: a TenantAdmin sees and manages its own tenant only and
never grants above its own role; a TenantUser gets a refusal page (never an empty list); the
Tenants page is Root's."""

from __future__ import annotations

import pytest

from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey

from ..conftest import Gateway
from .management_support import (
    NEW_PASSWORD,
    PASSWORD,
    catalog_status,
    key_auth,
    mint_token,
    ok,
    root,
    stored_state,
)
from .ui_support import UiSession, human, service_user_named, ui_login


async def acme_admin(gw: Gateway) -> UiSession:
    await ok(gw, "POST", "/api/v1/tenants", root(gw), status=201, body={"name": "acme"})
    await human(gw, "acmeadmin", Role.TENANT_ADMIN, "acme")
    return await ui_login(gw, "acmeadmin")


async def both_tenants(gw: Gateway) -> tuple[CreatedKey, CreatedKey]:
    """A service user in default and one in acme."""
    return await gw.user("default-etl"), await gw.user("acme-etl", tenant="acme")


# -- TenantAdmin -----------------------------------------------------------------------------


async def test_a_tenant_admin_sees_only_its_tenants_service_users(gateway: Gateway) -> None:
    acme = await acme_admin(gateway)
    await both_tenants(gateway)
    page = await acme.get("/ui/service-users")
    assert page.status == 200
    assert set(page.rows()) == {"acme-etl"}
    assert "default-etl" not in page.text and "root" not in page.rows()
    assert "1 service user<" in page.text
    # Searching or filtering does not reach past the tenant either.
    assert (await acme.get("/ui/service-users?q=default")).rows() == {}
    assert set((await acme.get("/ui/service-users?role=Root")).rows()) == set()


async def test_a_tenant_admin_sees_only_its_tenants_users(gateway: Gateway) -> None:
    await human(gateway, "alice")
    acme = await acme_admin(gateway)
    await human(gateway, "acme-other", Role.TENANT_USER, "acme")
    page = await acme.get("/ui/users")
    assert page.status == 200
    assert set(page.rows()) == {"acmeadmin", "acme-other"}
    assert "alice" not in page.text


@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("GET", "/ui/service-users/{id}", None),
        ("GET", "/ui/service-users/{id}/rotate", None),
        ("GET", "/ui/service-users/{id}/delete", None),
        ("POST", "/ui/service-users/{id}/rotate", {"generation": "1"}),
        ("POST", "/ui/service-users/{id}/delete", {"confirm_name": "default-etl"}),
        ("POST", "/ui/service-users/{id}/active", {"active": "false"}),
    ],
)
async def test_another_tenants_service_user_is_not_found_for_a_tenant_admin(
    gateway: Gateway, method: str, path: str, form: dict[str, str] | None
) -> None:
    acme = await acme_admin(gateway)
    other, _ = await both_tenants(gateway)
    url = path.format(id=other.user.id)
    page = await acme.get(url) if form is None else await acme.post(url, form)
    # Exactly as for an id that does not exist: the UUID's existence is not revealed.
    page.assert_refused(404, "Not found", "No such service user")
    assert other.user.name not in page.text
    after = await gateway.admin.get(other.user.id)
    assert after.active and after.key_generation == other.user.key_generation
    assert await catalog_status(gateway, key_auth(other.api_key.plaintext())) == 200


async def test_a_tenant_admin_manages_its_own_tenants_service_users(gateway: Gateway) -> None:
    acme = await acme_admin(gateway)
    _, own = await both_tenants(gateway)
    detail = await acme.get(f"/ui/service-users/{own.user.id}")
    assert detail.status == 200, detail.text
    rotated = await acme.post(
        f"/ui/service-users/{own.user.id}/rotate", {"generation": str(own.user.key_generation)}
    )
    assert rotated.status == 200
    # acme has no catalog here: the page says so rather than offering the default one's.
    assert "No catalog is configured for this service user's tenant" in rotated.text
    assert (await mint_token(gateway, own.user.id, rotated.key())).status == 200
    assert (await mint_token(gateway, own.user.id, own.api_key.plaintext())).status == 401


async def test_the_create_form_offers_a_tenant_admin_no_role_above_its_own(
    gateway: Gateway,
) -> None:
    acme = await acme_admin(gateway)
    page = await acme.get("/ui/service-users/new")
    assert page.status == 200
    assert ">TenantAdmin</option>" in page.text and ">TenantUser</option>" in page.text
    assert ">Root</option>" not in page.text
    assert 'name="tenant"' not in page.text  # its own tenant only: nothing to choose
    users_form = await acme.get("/ui/users/new")
    assert ">Root</option>" not in users_form.text


async def test_a_tenant_admin_creating_a_service_user_gets_it_in_its_own_tenant(
    gateway: Gateway,
) -> None:
    acme = await acme_admin(gateway)
    page = await acme.post(
        "/ui/service-users", {"name": "loader", "expiry": "30", "role": "TenantAdmin"}
    )
    assert page.status == 200, page.text
    created = await gateway.admin.get(page.service_user_id())
    assert (created.tenant_name, created.role) == ("acme", Role.TENANT_ADMIN)


async def test_a_forged_post_for_a_root_service_user_is_refused_and_creates_nothing(
    gateway: Gateway,
) -> None:
    acme = await acme_admin(gateway)
    before = await stored_state(gateway)
    page = await acme.post("/ui/service-users", {"name": "forged", "expiry": "30", "role": "Root"})
    page.assert_refused(403, "Not allowed", "above your own")
    assert await stored_state(gateway) == before
    assert await service_user_named(gateway, "forged") is None


async def test_a_forged_post_for_another_tenant_is_refused_and_creates_nothing(
    gateway: Gateway,
) -> None:
    acme = await acme_admin(gateway)
    before = await stored_state(gateway)
    page = await acme.post(
        "/ui/service-users", {"name": "forged", "expiry": "30", "tenant": "default"}
    )
    page.assert_refused(404, "tenant")
    assert await stored_state(gateway) == before


async def test_a_forged_post_for_a_root_user_is_refused_and_creates_nothing(
    gateway: Gateway,
) -> None:
    acme = await acme_admin(gateway)
    before = await stored_state(gateway)
    page = await acme.post(
        "/ui/users",
        {"username": "mallory", "role": "Root", "password": "a long enough password"},
        csrf_from="/ui/users/new",
    )
    page.assert_refused(403, "above your own")
    assert await stored_state(gateway) == before


async def test_a_tenant_admin_cannot_touch_another_tenants_human(gateway: Gateway) -> None:
    alice = await human(gateway, "alice", Role.TENANT_ADMIN)
    acme = await acme_admin(gateway)
    for path in (f"/ui/users/{alice.id}/password", f"/ui/users/{alice.id}/delete"):
        (await acme.get(path)).assert_refused(404)
        page = await acme.post(path, {"password": "a long enough password"})
        page.assert_refused(404)
    await ui_login(gateway, "alice")  # the password is unchanged, the user still there


async def test_a_tenant_admin_cannot_reset_a_root_in_its_tenant(gateway: Gateway) -> None:
    acme = await acme_admin(gateway)
    boss = await human(gateway, "acme-root", Role.ROOT, "acme")
    page = await acme.post(f"/ui/users/{boss.id}/password", {"password": "a long enough one!"})
    page.assert_refused(403, "above your own")
    page = await acme.post(f"/ui/users/{boss.id}/delete", {})
    page.assert_refused(403)
    await ui_login(gateway, "acme-root")


async def test_a_tenant_admin_sees_only_its_tenants_audit_records(gateway: Gateway) -> None:
    acme = await acme_admin(gateway)
    other, own = await both_tenants(gateway)
    page = await acme.get("/ui/audit")
    assert page.status == 200
    assert own.user.id in page.text
    assert other.user.id not in page.text


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_tenants_page_is_refused_to_a_tenant_admin(gateway: Gateway, method: str) -> None:
    acme = await acme_admin(gateway)
    before = await stored_state(gateway)
    if method == "GET":
        page = await acme.get("/ui/tenants")
    else:
        page = await acme.post("/ui/tenants", {"name": "forged"})
    page.assert_refused(403, "Not allowed", "Root")
    assert await stored_state(gateway) == before
    nav = await acme.get("/ui/service-users")
    assert 'href="/ui/tenants"' not in nav.text  # not offered in the header either


async def test_a_tenant_admin_cannot_delete_a_tenant(gateway: Gateway) -> None:
    acme = await acme_admin(gateway)
    tenants = await ok(gateway, "GET", "/api/v1/tenants", root(gateway))
    other = next(t for t in tenants["items"] if t["name"] == "acme")
    page = await acme.post(f"/ui/tenants/{other['id']}/delete", {})
    page.assert_refused(403)


# -- TenantUser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/ui/service-users",
        "/ui/service-users/new",
        "/ui/users",
        "/ui/users/new",
        "/ui/audit",
        "/ui/tenants",
        "/ui/",
    ],
)
async def test_a_tenant_user_gets_a_refusal_page_never_an_empty_list(
    gateway: Gateway, path: str
) -> None:
    await gateway.user("etl")
    await human(gateway, "tina", Role.TENANT_USER)
    tina = await ui_login(gateway, "tina")
    page = await tina.get(path)
    if path == "/ui/":
        assert page.status == 303
        page = await tina.get(page.location)
    page.assert_refused(403, "Not allowed")
    assert "No service user matches" not in page.text
    assert "<table" not in page.text
    assert "etl" not in page.text


async def test_a_tenant_user_may_see_the_catalogs_and_change_its_own_password(
    gateway: Gateway,
) -> None:
    tina_user = await human(gateway, "tina", Role.TENANT_USER)
    tina = await ui_login(gateway, "tina")
    assert (await tina.get("/ui/catalogs")).status == 200
    path = f"/ui/users/{tina_user.id}/password"
    assert (await tina.get(path)).status == 200
    page = await tina.post(
        path,
        {"current_password": PASSWORD, "password": NEW_PASSWORD},
        csrf_from=path,
    )
    assert page.status == 303 and page.location == "/ui/login"
    await ui_login(gateway, "tina", NEW_PASSWORD)


async def test_a_tenant_user_cannot_change_anyone_elses_password(gateway: Gateway) -> None:
    other = await human(gateway, "other", Role.TENANT_USER)
    await human(gateway, "tina", Role.TENANT_USER)
    tina = await ui_login(gateway, "tina")
    page = await tina.post(
        f"/ui/users/{other.id}/password",
        {"password": NEW_PASSWORD},
        csrf_from="/ui/catalogs",
    )
    page.assert_refused(403)
    await ui_login(gateway, "other")
