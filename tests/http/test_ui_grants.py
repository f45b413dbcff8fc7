"""Least privilege in the admin UI: the Access section of a TenantUser service user's page
(default access per catalog, roles, its grants, its roles' grants), adding a grant through its
form (with the management API's input model and catalog rule, audited; bad input shown again
with the error), revoking, giving and taking roles, the CSRF check on each form, a TenantAdmin
confined to its own tenant, Root and TenantAdmin service users shown full access without
forms, and Identity → Roles."""

from __future__ import annotations

import html
import re

import pytest

from gateway.identity.grants import AccessRole, Grant
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings
from gateway.state import GRANTS

from ..conftest import Gateway, MakeGateway
from .management_support import audit, key_auth, me, ok, root
from .ui_support import Page, UiSession, human, ui_login, user_named

_ALERT = re.compile(r'class="error" role="alert">([^<]*)<')


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    """Tenant default with catalogs default (read without a grant) and lake (nothing without
    one); tenant acme with its own catalog (everything without a grant)."""
    gateway = await make_gateway(
        catalogs={
            "default": CatalogSettings(default_access="read"),
            "lake": CatalogSettings(default_access="none"),
            "acme": CatalogSettings(tenant="acme"),
        }
    )
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    return gateway


async def alice(gw: Gateway) -> UiSession:
    """A Root administrator, logged in."""
    await human(gw, "alice")
    return await ui_login(gw, "alice")


async def acme_admin(gw: Gateway) -> UiSession:
    await human(gw, "acmeadmin", Role.TENANT_ADMIN, "acme")
    return await ui_login(gw, "acmeadmin")


async def role(gw: Gateway, name: str, tenant: str = "default") -> AccessRole:
    return await gw.app[GRANTS].create_role(name=name, tenant=tenant, actor="test")


async def grants_of(gw: Gateway, created: CreatedKey) -> list[tuple[str, tuple[str, ...], str]]:
    found = await gw.app[GRANTS].grants(service_user_id=created.user.id)
    return [(g.catalog, g.resource, g.action) for g in found]


async def roles_of(gw: Gateway, created: CreatedKey) -> list[str]:
    return [r.name for r in await gw.app[GRANTS].roles_of(created.user.id)]


def page_of(created: CreatedKey) -> str:
    return f"/ui/service-users/{created.user.id}"


def access_part(page: Page) -> str:
    """The page's Access section."""
    return page.text.split('<h2 id="access">Access</h2>')[1].split("</section>")[0]


def alert(page: Page) -> str:
    found = _ALERT.search(page.text)
    assert found is not None, page.text
    return html.unescape(found.group(1))


def row(text: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr {attribute}="{re.escape(value)}">(.*?)</tr>', text, re.DOTALL)
    assert found is not None, (attribute, value, text)
    return found.group(1)


def options(text: str, select_id: str) -> list[str]:
    found = re.search(rf'<select id="{select_id}"[^>]*>(.*?)</select>', text, re.DOTALL)
    assert found is not None, select_id
    return re.findall(r'<option value="([^"]*)"', found.group(1))


# -- the section -----------------------------------------------------------------------------


async def test_the_access_section_shows_default_access_roles_own_grants_and_roles_grants(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    access = gw.app[GRANTS]
    readers = await role(gw, "readers")
    writers = await role(gw, "writers")
    await role(gw, "acme-readers", tenant="acme")
    await access.grant(readers, catalog="lake", resource=["sales"], action="read", actor="t")
    await access.assign(readers, etl.user, actor="t")
    own = await access.grant(
        etl.user, catalog="default", resource=["sales", "orders"], action="write", actor="t"
    )

    page = await session.get(page_of(etl))
    assert page.status == 200, page.text
    section = access_part(page)
    # Without a grant: per catalog of its tenant (acme's catalog is not among them).
    assert '<span class="pill">read</span>' in row(section, "data-catalog", "default")
    assert '<span class="pill">none</span>' in row(section, "data-catalog", "lake")
    assert 'data-catalog="acme"' not in section
    # Its roles, each with a remove button; the add-role select offers the others of its
    # tenant only.
    held = row(section, "data-role", "readers")
    assert f'action="/ui/service-users/{etl.user.id}/roles/{readers.id}/remove"' in held
    assert 'aria-label="Remove role readers"' in held
    assert options(section, "add-role") == [writers.id]
    # Its own grant, shown as catalog:namespace.table, with a revoke button.
    mine = row(section, "data-grant", own.id)
    assert "<code>default:sales.orders</code>" in mine and "<td>write</td>" in mine
    assert f'action="/ui/service-users/{etl.user.id}/grants/{own.id}/revoke"' in mine
    # Its role's grant, read-only, naming the role.
    (from_role,) = await access.grants(role_id=readers.id)
    inherited = row(section, "data-role-grant", from_role.id)
    assert "<code>lake:sales</code>" in inherited and "<td>readers</td>" in inherited
    assert "<form" not in inherited
    # The add-grant form: every catalog of its tenant or all of them, every action.
    assert f'action="/ui/service-users/{etl.user.id}/grants"' in section
    assert options(section, "grant-catalog") == ["*", "default", "lake"]
    assert options(section, "grant-action") == ["read", "write", "create", "drop", "manage"]
    assert 'name="resource"' in section and 'name="csrf"' in section


async def test_a_service_user_without_roles_or_grants_is_told_so(gw: Gateway) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    section = access_part(await session.get(page_of(etl)))
    assert "It holds no role." in section and "No grants of its own." in section
    assert "From its roles" not in section
    # No role in its tenant yet: the page says where roles are made.
    assert 'href="/ui/roles"' in section and 'id="add-role"' not in section


@pytest.mark.parametrize("subject_role", [Role.ROOT, Role.TENANT_ADMIN])
async def test_root_and_tenant_admin_service_users_show_full_access_and_no_forms(
    gw: Gateway, subject_role: Role
) -> None:
    session = await alice(gw)
    subject = await gw.user("boss", subject_role)
    page = await session.get(page_of(subject))
    assert page.status == 200, page.text
    section = access_part(page)
    assert f"A {subject_role.value} has full access" in section
    assert "<form" not in section and "<table" not in section
    # A forged form is refused by GrantAdmin's rule, shown on the page; nothing is granted.
    forged = await session.post(
        f"{page_of(subject)}/grants", {"catalog": "default", "resource": "", "action": "read"}
    )
    assert forged.status == 400, forged.text
    assert "grants and roles are for TenantUser service users" in alert(forged)
    assert await grants_of(gw, subject) == []


# -- adding a grant --------------------------------------------------------------------------


async def test_adding_a_grant_through_the_form_creates_it_enforces_it_and_audits_it(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    answer = await session.post(
        f"{page_of(etl)}/grants",
        {"catalog": "default", "resource": " sales.orders ", "action": "write"},
    )
    # Post/Redirect/Get: back to its page, at the section, with a notice.
    assert answer.status == 303, answer.text
    assert answer.location == f"{page_of(etl)}?done=granted#access"
    assert await grants_of(gw, etl) == [("default", ("sales", "orders"), "write")]
    shown = await session.get(answer.location.split("#")[0])
    section = access_part(shown)
    assert '<p class="notice" role="status">Grant added.</p>' in section
    assert "<code>default:sales.orders</code>" in section
    # Enforced at once: the service user's next request holds it.
    held = (await me(gw, key_auth(etl.api_key.plaintext())))["grants"]
    assert [(g["on"], g["action"]) for g in held] == [("default:sales.orders", "write")]
    (record,) = await audit(gw, action="grant.create", outcome="success")
    assert record["actor"] == (await user_named(gw, "alice")).id
    assert (record["target_type"], record["target_id"]) == ("service_user", etl.user.id)
    assert record["detail"].startswith("write on default:sales.orders (grant ")


async def test_a_blank_resource_grants_the_whole_catalog_and_star_every_catalog(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    for catalog in ("lake", "*"):
        answer = await session.post(
            f"{page_of(etl)}/grants", {"catalog": catalog, "resource": "", "action": "manage"}
        )
        assert answer.status == 303, answer.text
    assert sorted(await grants_of(gw, etl)) == [("*", (), "manage"), ("lake", (), "manage")]


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"resource": "a*b"}, 400, ("resource", "may not contain *")),
        ({"resource": "sales..orders"}, 400, ("resource", "must not be empty")),
        ({"catalog": "acme"}, 400, ("catalog", "no catalog 'acme' belongs to tenant 'default'")),
        ({"catalog": "nowhere"}, 400, ("catalog", "no catalog 'nowhere'")),
        ({"action": "own"}, 400, ("action", "must be read, write, create, drop or manage")),
    ],
    ids=["glob", "empty-level", "other-tenants-catalog", "unknown-catalog", "unknown-action"],
)
async def test_a_bad_grant_shows_the_page_again_with_the_error_and_creates_nothing(
    gw: Gateway, fields: dict[str, str], status: int, words: tuple[str, ...]
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    typed = {"catalog": "default", "resource": "sales", "action": "read", **fields}
    page = await session.post(f"{page_of(etl)}/grants", typed)
    assert page.status == status, page.text
    error = alert(page)
    for word in words:
        assert word in error, (word, error)
    # The service user's page, with the form as it was typed.
    assert "<h1>etl</h1>" in page.text
    section = access_part(page)
    assert f'value="{html.escape(typed["resource"])}"' in section
    assert await grants_of(gw, etl) == []
    (failure,) = await audit(gw, action="grant.create", outcome="failure")
    assert failure["actor"] == (await user_named(gw, "alice")).id
    assert failure["target_id"] == etl.user.id
    assert await audit(gw, action="grant.create", outcome="success") == []


async def test_a_grant_it_already_holds_is_refused_as_a_conflict(gw: Gateway) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    form = {"catalog": "lake", "resource": "sales", "action": "read"}
    assert (await session.post(f"{page_of(etl)}/grants", form)).status == 303
    again = await session.post(f"{page_of(etl)}/grants", form)
    assert again.status == 409, again.text
    assert "already holds this grant" in alert(again)
    assert await grants_of(gw, etl) == [("lake", ("sales",), "read")]


# -- revoking, roles -------------------------------------------------------------------------


async def test_revoking_a_grant_removes_it_and_audits_it(gw: Gateway) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    grant = await gw.app[GRANTS].grant(
        etl.user, catalog="lake", resource=["sales"], action="read", actor="t"
    )
    answer = await session.post(f"{page_of(etl)}/grants/{grant.id}/revoke", {})
    assert answer.status == 303, answer.text
    assert answer.location == f"{page_of(etl)}?done=revoked#access"
    assert await grants_of(gw, etl) == []
    assert "Grant revoked." in access_part(await session.get(answer.location.split("#")[0]))
    (record,) = await audit(gw, action="grant.delete", outcome="success")
    assert (record["target_id"], record["detail"]) == (
        etl.user.id,
        f"read on lake:sales (grant {grant.id})",
    )
    # Revoking it again: not found, recorded as a refusal.
    again = await session.post(f"{page_of(etl)}/grants/{grant.id}/revoke", {})
    again.assert_refused(404, "No such grant")
    assert len(await audit(gw, action="grant.delete", outcome="failure")) == 1


async def test_only_the_service_users_own_grants_are_revoked_from_its_page(gw: Gateway) -> None:
    session = await alice(gw)
    etl, other = await gw.user("etl"), await gw.user("other")
    readers = await role(gw, "readers")
    access = gw.app[GRANTS]
    theirs = await access.grant(other.user, catalog="lake", resource=[], action="read", actor="t")
    inherited = await access.grant(readers, catalog="lake", resource=[], action="read", actor="t")
    await access.assign(readers, etl.user, actor="t")
    for grant in (theirs, inherited):
        page = await session.post(f"{page_of(etl)}/grants/{grant.id}/revoke", {})
        page.assert_refused(404, "No such grant")
    assert await grants_of(gw, other) == [("lake", (), "read")]
    assert len(await access.grants(role_id=readers.id)) == 1


async def test_giving_and_taking_away_a_role_through_the_page(gw: Gateway) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    readers = await role(gw, "readers")
    given = await session.post(f"{page_of(etl)}/roles", {"role": readers.id})
    assert given.status == 303, given.text
    assert given.location == f"{page_of(etl)}?done=role-added#access"
    assert await roles_of(gw, etl) == ["readers"]
    section = access_part(await session.get(given.location.split("#")[0]))
    assert "Role given." in section and 'data-role="readers"' in section
    assert len(await audit(gw, action="role.assign", outcome="success")) == 1

    taken = await session.post(f"{page_of(etl)}/roles/{readers.id}/remove", {})
    assert taken.status == 303, taken.text
    assert taken.location == f"{page_of(etl)}?done=role-removed#access"
    assert await roles_of(gw, etl) == []
    assert len(await audit(gw, action="role.unassign", outcome="success")) == 1
    again = await session.post(f"{page_of(etl)}/roles/{readers.id}/remove", {})
    again.assert_refused(404, "No such role held by the service user")
    assert len(await audit(gw, action="role.unassign", outcome="failure")) == 1


async def test_a_role_cannot_be_given_to_a_root_or_tenant_admin_service_user(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    boss = await gw.user("boss", Role.TENANT_ADMIN)
    readers = await role(gw, "readers")
    page = await session.post(f"{page_of(boss)}/roles", {"role": readers.id})
    page.assert_refused(400, "grants and roles are for TenantUser service users")
    assert await roles_of(gw, boss) == []
    assert len(await audit(gw, action="role.assign", outcome="failure")) == 1


# -- CSRF and tenants ------------------------------------------------------------------------


def access_forms(etl: CreatedKey, grant: Grant, held: AccessRole, spare: AccessRole) -> list[
    tuple[str, dict[str, str]]
]:  # fmt: skip
    base = page_of(etl)
    return [
        (f"{base}/grants", {"catalog": "lake", "resource": "x", "action": "read"}),
        (f"{base}/grants/{grant.id}/revoke", {}),
        (f"{base}/roles", {"role": spare.id}),
        (f"{base}/roles/{held.id}/remove", {}),
    ]


async def test_every_access_form_without_the_csrf_token_is_refused_and_changes_nothing(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    access = gw.app[GRANTS]
    held, spare = await role(gw, "held"), await role(gw, "spare")
    await access.assign(held, etl.user, actor="t")
    grant = await access.grant(etl.user, catalog="lake", resource=[], action="read", actor="t")
    for path, form in access_forms(etl, grant, held, spare):
        for csrf in (None, "A" * 43):
            fields = form if csrf is None else {**form, "csrf": csrf}
            page = await session.post(path, fields, csrf_from=None)
            page.assert_refused(403, "the form is stale or was sent from elsewhere")
    assert await grants_of(gw, etl) == [("lake", (), "read")]
    assert await roles_of(gw, etl) == ["held"]


async def test_another_tenants_service_user_access_is_not_found_for_a_tenant_admin(
    gw: Gateway,
) -> None:
    acme = await acme_admin(gw)
    etl = await gw.user("etl")  # of tenant default
    access = gw.app[GRANTS]
    held, spare = await role(gw, "held"), await role(gw, "spare")
    await access.assign(held, etl.user, actor="t")
    grant = await access.grant(etl.user, catalog="lake", resource=[], action="read", actor="t")
    # Exactly as for an id that does not exist: the UUID's existence is not revealed.
    (await acme.get(page_of(etl))).assert_refused(404, "No such service user")
    for path, form in access_forms(etl, grant, held, spare):
        page = await acme.post(path, form)
        page.assert_refused(404, "No such service user")
        assert "lake" not in page.text and "held" not in page.text
    assert await grants_of(gw, etl) == [("lake", (), "read")]
    assert await roles_of(gw, etl) == ["held"]


async def test_a_tenant_admin_manages_its_own_tenants_access_with_its_own_roles_only(
    gw: Gateway,
) -> None:
    acme = await acme_admin(gw)
    loader = await gw.user("loader", tenant="acme")
    default_role = await role(gw, "readers")
    acme_role = await role(gw, "acme-readers", tenant="acme")
    section = access_part(await acme.get(page_of(loader)))
    assert options(section, "grant-catalog") == ["*", "acme"]
    assert '<span class="pill">write</span>' in row(section, "data-catalog", "acme")
    assert options(section, "add-role") == [acme_role.id]
    # Another tenant's role is not found, as in the API.
    page = await acme.post(f"{page_of(loader)}/roles", {"role": default_role.id})
    page.assert_refused(404, "No such role")
    # Nor is another tenant's catalog one it may grant.
    refused = await acme.post(
        f"{page_of(loader)}/grants", {"catalog": "lake", "resource": "", "action": "read"}
    )
    assert refused.status == 400 and "belongs to tenant 'acme'" in alert(refused)
    assert (await acme.post(f"{page_of(loader)}/roles", {"role": acme_role.id})).status == 303
    granted = await acme.post(
        f"{page_of(loader)}/grants", {"catalog": "acme", "resource": "raw", "action": "drop"}
    )
    assert granted.status == 303, granted.text
    assert await roles_of(gw, loader) == ["acme-readers"]
    assert await grants_of(gw, loader) == [("acme", ("raw",), "drop")]


# -- Identity → Roles ------------------------------------------------------------------------


async def test_a_role_made_on_the_roles_page_is_listed_audited_and_offered_to_service_users(
    gw: Gateway,
) -> None:
    session = await alice(gw)
    etl = await gw.user("etl")
    empty = await session.get("/ui/roles")
    assert empty.status == 200 and "No roles yet." in empty.text
    assert 'href="/ui/roles" aria-current="page"' in empty.text
    answer = await session.post(
        "/ui/roles", {"name": "readers", "description": "reads the lake", "tenant": "default"}
    )
    assert answer.status == 303, answer.text
    assert answer.location == "/ui/roles?done=created"
    made = await gw.app[GRANTS].role_by_name(etl.user.tenant_id, "readers")
    assert made.description == "reads the lake"
    listed = await session.get(answer.location)
    assert "Role created." in listed.text
    assert set(listed.rows()) == {"readers"}
    assert "<td>default</td>" in listed.rows()["readers"]
    (record,) = await audit(gw, action="role.create", outcome="success")
    assert record["actor"] == (await user_named(gw, "alice")).id
    assert options(access_part(await session.get(page_of(etl))), "add-role") == [made.id]


@pytest.mark.parametrize(
    ("name", "status", "word"),
    [("Bad Name", 400, "name"), ("", 400, "name"), ("taken", 409, "already exists")],
    ids=["not-lowercase", "empty", "duplicate"],
)
async def test_a_bad_role_name_shows_the_roles_page_again_with_the_error(
    gw: Gateway, name: str, status: int, word: str
) -> None:
    session = await alice(gw)
    await role(gw, "taken")
    page = await session.post("/ui/roles", {"name": name, "description": "kept"})
    assert page.status == status, page.text
    assert word in alert(page)
    assert 'value="kept"' in page.text
    assert [r.name for r in await gw.app[GRANTS].roles(tenant_id=None)] == ["taken"]
    assert len(await audit(gw, action="role.create", outcome="failure")) == 1


async def test_a_tenant_admin_sees_and_makes_roles_of_its_own_tenant_only(gw: Gateway) -> None:
    acme = await acme_admin(gw)
    await role(gw, "readers")
    page = await acme.get("/ui/roles")
    assert page.rows() == {} and 'name="tenant"' not in page.text
    refused = await acme.post("/ui/roles", {"name": "sneaky", "tenant": "default"})
    refused.assert_refused(404, "no such tenant")
    assert (await acme.post("/ui/roles", {"name": "loaders"})).status == 303
    assert set((await acme.get("/ui/roles")).rows()) == {"loaders"}
    assert [(r.tenant_name, r.name) for r in await gw.app[GRANTS].roles(tenant_id=None)] == [
        ("acme", "loaders"),
        ("default", "readers"),
    ]


async def test_the_roles_page_is_refused_to_a_tenant_user(gw: Gateway) -> None:
    await human(gw, "tina", Role.TENANT_USER)
    tina = await ui_login(gw, "tina")
    (await tina.get("/ui/roles")).assert_refused(403, "TenantAdmin or Root")
    page = await tina.post("/ui/roles", {"name": "mine"}, csrf_from="/ui/catalogs")
    page.assert_refused(403)
    assert await gw.app[GRANTS].roles(tenant_id=None) == []
