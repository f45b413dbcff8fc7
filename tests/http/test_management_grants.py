"""Management API: grants and roles (least privilege for TenantUser service users), through the
real app: who may manage them, what is refused and how, the audit trail, and enforcement on the
catalog routes, in this process and in another one sharing the store."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.identity import grant_admin
from gateway.settings import CatalogSettings
from gateway.state import AUTHENTICATOR, GRANTS

from ..conftest import ENGINES, Gateway, MakeGateway
from .conftest import Worker
from .management_support import (
    NO_BODY,
    Acme,
    Headers,
    assert_error,
    audit,
    call,
    create_service_user,
    key_auth,
    make_acme,
    matching,
    me,
    ok,
    root,
    token_for,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),  # the login throttle never sleeps
    # Grants and roles kept and checked the same on both stores (issue 13).
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]

SALES = "/v1/namespaces/sales"
GRANT_TABLES = ("access_roles", "role_members", "grants")
# Catalog "default" belongs to tenant default, "lake" to tenant acme.
CATALOGS = {"default": CatalogSettings(), "lake": CatalogSettings(tenant="acme")}


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(catalogs=CATALOGS)


@pytest.fixture
async def acme(gw: Gateway) -> Acme:
    return await make_acme(gw)


@pytest.fixture
async def confined(make_gateway: MakeGateway) -> Gateway:
    """A gateway whose only catalog gives TenantUsers nothing without a grant."""
    return await make_gateway(catalogs={"default": CatalogSettings(default_access="none")})


async def new_user(
    gw: Gateway, auth: Headers, name: str = "etl", **fields: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """A TenantUser service user (unless ``fields`` say otherwise) and its key header."""
    user, api_key = await create_service_user(gw, auth, name, **fields)
    return user, key_auth(api_key)


async def new_role(
    gw: Gateway, auth: Headers, name: str = "analysts", **fields: Any
) -> dict[str, Any]:
    role: dict[str, Any] = await ok(
        gw, "POST", "/api/v1/roles", auth, status=201, body={"name": name, **fields}
    )
    return role


def grant_body(
    subject: dict[str, Any],
    *,
    to: str = "service_user",
    catalog: str = "default",
    resource: tuple[str, ...] = ("sales",),
    action: str = "read",
) -> dict[str, Any]:
    return {to: subject["id"], "catalog": catalog, "resource": list(resource), "action": action}


async def new_grant(gw: Gateway, auth: Headers, **body: Any) -> dict[str, Any]:
    grant: dict[str, Any] = await ok(gw, "POST", "/api/v1/grants", auth, status=201, body=body)
    return grant


async def access_of(gw: Gateway, user: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = await ok(
        gw, "GET", f"/api/v1/service-users/{user['id']}/access", root(gw)
    )
    return answer


async def grant_tables(gw: Gateway) -> dict[str, list[tuple[Any, ...]]]:
    """The committed rows of the grants tables."""
    return {
        table: sorted(await gw.committed_rows(f"SELECT * FROM {table}"), key=repr)
        for table in GRANT_TABLES
    }


async def failures(gw: Gateway, action: str) -> list[dict[str, Any]]:
    return await audit(gw, action=action, outcome="failure")


async def refused(
    gw: Gateway,
    method: str,
    path: str,
    auth: Headers,
    *,
    body: Any = NO_BODY,
    status: int,
    action: str | None,
    words: tuple[str, ...] = (),
) -> str:
    """A request that must be refused with ``status`` (a message naming ``words``), change no
    grants table, and (for a change, ``action``) leave exactly one failure record."""
    tables = await grant_tables(gw)
    before = len(await failures(gw, action)) if action else 0
    successes = len(await audit(gw, outcome="success"))

    reply = await call(gw, method, path, auth, body=body)

    message = assert_error(reply, status, *words)
    assert await grant_tables(gw) == tables
    assert len(await audit(gw, outcome="success")) == successes
    if action is not None:
        after = await failures(gw, action)
        new = after[: len(after) - before]  # newest first
        assert len(new) == 1, new
        assert new[0]["detail"] == f"{status}: {message}"
    return message


async def status_of(gw: Gateway, auth: Headers, path: str = SALES) -> int:
    return (await call(gw, "GET", path, auth)).status


# -- Root and TenantAdmin manage grants and roles ---------------------------------------------


async def test_root_creates_lists_and_deletes_grants_of_a_service_user_in_any_tenant(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, root(gw), "acme-etl", tenant="acme")

    grant = await new_grant(
        gw, root(gw), **grant_body(user, catalog="lake", resource=("sales", "orders"))
    )

    assert uuid.UUID(grant["id"])
    assert grant["tenant_id"] == acme.tenant["id"]
    assert (grant["subject_type"], grant["subject_id"]) == ("service_user", user["id"])
    assert (grant["catalog"], grant["resource"], grant["action"]) == (
        "lake", ["sales", "orders"], "read",
    )  # fmt: skip
    assert grant["on"] == "lake:sales.orders"
    assert grant["created_by"] == gw.root.user.id
    listed = await ok(gw, "GET", f"/api/v1/grants?service_user={user['id']}", root(gw))
    assert listed == {"items": [grant], "total": 1}
    assert (await ok(gw, "GET", "/api/v1/grants?catalog=lake", root(gw)))["items"] == [grant]
    assert (await ok(gw, "GET", "/api/v1/grants?catalog=default", root(gw)))["items"] == []
    assert (await access_of(gw, user))["grants"] == [grant]

    await ok(gw, "DELETE", f"/api/v1/grants/{grant['id']}", root(gw), status=204)

    assert (await ok(gw, "GET", "/api/v1/grants", root(gw)))["total"] == 0
    assert (await access_of(gw, user))["effective"] == []
    reply = await call(gw, "DELETE", f"/api/v1/grants/{grant['id']}", root(gw))
    assert_error(reply, 404, "No such grant")


async def test_root_creates_a_role_in_any_tenant_grants_it_and_deletes_it(
    gw: Gateway, acme: Acme
) -> None:
    role = await new_role(gw, root(gw), "analysts", tenant="acme", description="reads sales")

    assert role["tenant"] == "acme" and role["name"] == "analysts"
    assert role["description"] == "reads sales"
    assert role["members"] == [] and role["grants"] == []
    grant = await new_grant(gw, root(gw), **grant_body(role, to="role", catalog="lake"))
    assert (grant["subject_type"], grant["subject_id"]) == ("role", role["id"])
    shown = await ok(gw, "GET", f"/api/v1/roles/{role['id']}", root(gw))
    assert shown == {**role, "grants": [grant]}
    assert (await ok(gw, "GET", "/api/v1/roles?tenant=acme", root(gw)))["items"] == [shown]
    assert (await ok(gw, "GET", "/api/v1/roles?tenant=default", root(gw)))["items"] == []
    listed = await ok(gw, "GET", f"/api/v1/grants?role={role['id']}", root(gw))
    assert listed["items"] == [grant]

    await ok(gw, "DELETE", f"/api/v1/roles/{role['id']}", root(gw), status=204)

    assert_error(await call(gw, "GET", f"/api/v1/roles/{role['id']}", root(gw)), 404)
    assert (await ok(gw, "GET", "/api/v1/grants", root(gw)))["total"] == 0  # its grants too


async def test_a_tenant_admin_manages_grants_roles_and_members_in_its_own_tenant(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")
    role = await new_role(gw, acme.auth, "analysts")  # in its own tenant without saying so
    assert role["tenant"] == "acme"

    own = await new_grant(gw, acme.auth, **grant_body(user, catalog="lake", action="write"))
    roles = await new_grant(gw, acme.auth, **grant_body(role, to="role", catalog="*"))
    path = f"/api/v1/roles/{role['id']}/members/{user['id']}"
    await ok(gw, "PUT", path, acme.auth, status=204)

    access = await ok(gw, "GET", f"/api/v1/service-users/{user['id']}/access", acme.auth)
    assert access["grants"] == [own]
    assert [r["id"] for r in access["roles"]] == [role["id"]]
    assert access["roles"][0]["members"] == [user["id"]]
    assert access["roles"][0]["grants"] == [roles]
    assert sorted(g["id"] for g in access["effective"]) == sorted([own["id"], roles["id"]])

    await ok(gw, "DELETE", path, acme.auth, status=204)
    assert (await ok(gw, "GET", f"/api/v1/roles/{role['id']}", acme.auth))["members"] == []
    assert_error(
        await call(gw, "DELETE", path, acme.auth), 404, "No such role held by the service user"
    )
    await ok(gw, "DELETE", f"/api/v1/grants/{own['id']}", acme.auth, status=204)
    await ok(gw, "DELETE", f"/api/v1/roles/{role['id']}", acme.auth, status=204)
    assert await grant_tables(gw) == {table: [] for table in GRANT_TABLES}


async def test_assigning_a_role_twice_changes_nothing_the_second_time(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")
    role = await new_role(gw, acme.auth)
    path = f"/api/v1/roles/{role['id']}/members/{user['id']}"
    await ok(gw, "PUT", path, acme.auth, status=204)
    tables = await grant_tables(gw)

    await ok(gw, "PUT", path, acme.auth, status=204)

    assert await grant_tables(gw) == tables
    assert len(await audit(gw, action="role.assign")) == 1


async def test_a_tenant_admin_sees_only_its_tenants_grants_and_roles(
    gw: Gateway, acme: Acme
) -> None:
    theirs, _ = await new_user(gw, root(gw), "default-etl")
    await new_grant(gw, root(gw), **grant_body(theirs))
    await new_role(gw, root(gw), "default-role")
    mine, _ = await new_user(gw, acme.auth, "acme-etl")
    own = await new_grant(gw, acme.auth, **grant_body(mine, catalog="lake"))
    role = await new_role(gw, acme.auth, "acme-role")

    assert (await ok(gw, "GET", "/api/v1/grants", acme.auth))["items"] == [own]
    by_user = await ok(gw, "GET", f"/api/v1/grants?service_user={theirs['id']}", acme.auth)
    assert by_user == {"items": [], "total": 0}
    assert [r["id"] for r in (await ok(gw, "GET", "/api/v1/roles", acme.auth))["items"]] == [
        role["id"]
    ]
    assert (await ok(gw, "GET", "/api/v1/roles?tenant=default", acme.auth))["total"] == 0
    assert (await ok(gw, "GET", "/api/v1/grants", root(gw)))["total"] == 2
    assert (await ok(gw, "GET", "/api/v1/roles", root(gw)))["total"] == 2


# -- other tenants: 404, as if they did not exist ---------------------------------------------


async def test_a_tenant_admin_gets_404_for_another_tenants_service_users_roles_and_grants(
    gw: Gateway, acme: Acme
) -> None:
    theirs, _ = await new_user(gw, root(gw), "default-etl")
    their_role = await new_role(gw, root(gw), "default-role")
    their_grant = await new_grant(gw, root(gw), **grant_body(theirs))
    mine, _ = await new_user(gw, acme.auth, "acme-etl")
    my_role = await new_role(gw, acme.auth, "acme-role")
    unknown = str(uuid.uuid4())
    cases: list[tuple[str, str, Any, str | None, str]] = [
        ("POST", "/api/v1/grants", grant_body(theirs), "grant.create", "service user"),
        ("POST", "/api/v1/grants", grant_body(their_role, to="role"), "grant.create", "role"),
        ("DELETE", "/api/v1/grants/{}", NO_BODY, "grant.delete", "grant"),
        ("GET", "/api/v1/service-users/{}/access", NO_BODY, None, "service user"),
        ("GET", "/api/v1/roles/{}", NO_BODY, None, "role"),
        ("DELETE", "/api/v1/roles/{}", NO_BODY, "role.delete", "role"),
        ("PUT", f"/api/v1/roles/{my_role['id']}/members/{{}}", NO_BODY, "role.assign",
         "service user"),
        ("PUT", f"/api/v1/roles/{{}}/members/{mine['id']}", NO_BODY, "role.assign", "role"),
        ("DELETE", f"/api/v1/roles/{{}}/members/{mine['id']}", NO_BODY, "role.unassign",
         "role"),
    ]  # fmt: skip
    targets = {
        "service user": theirs["id"], "role": their_role["id"], "grant": their_grant["id"],
    }  # fmt: skip
    for method, template, body, action, what in cases:
        for id_ in (targets[what], unknown):
            if body is not NO_BODY:
                body = {**body, ("role" if what == "role" else "service_user"): id_}
            message = await refused(
                gw, method, template.format(id_), acme.auth, body=body, status=404,
                action=action,
            )  # fmt: skip
            # Another tenant's identity and one that does not exist answer alike.
            assert message == f"No such {what}", (method, template, id_)
    # Root still sees every one of them unchanged.
    assert (await ok(gw, "GET", "/api/v1/grants", root(gw)))["items"] == [their_grant]
    assert (await ok(gw, "GET", f"/api/v1/roles/{their_role['id']}", root(gw)))["members"] == []


async def test_a_tenant_admin_cannot_create_a_role_in_another_tenant(
    gw: Gateway, acme: Acme
) -> None:
    for tenant in ("default", "no-such-tenant"):
        message = await refused(
            gw, "POST", "/api/v1/roles", acme.auth, body={"name": "r", "tenant": tenant},
            status=404, action="role.create",
        )  # fmt: skip
        assert message == "tenant: no such tenant"
    assert (await ok(gw, "GET", "/api/v1/roles", root(gw)))["total"] == 0


async def test_root_creating_a_role_in_an_unknown_tenant_is_404(gw: Gateway) -> None:
    await refused(
        gw, "POST", "/api/v1/roles", root(gw), body={"name": "r", "tenant": "nope"},
        status=404, action="role.create", words=("tenant", "no such tenant"),
    )  # fmt: skip


async def test_a_role_is_given_only_to_service_users_of_its_own_tenant(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, root(gw), "default-etl")
    role = await new_role(gw, root(gw), "acme-role", tenant="acme")
    await refused(
        gw, "PUT", f"/api/v1/roles/{role['id']}/members/{user['id']}", root(gw), status=400,
        action="role.assign", words=("role", "tenant"),
    )  # fmt: skip


# -- TenantUser: forbidden --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "action"),
    [
        ("POST", "/api/v1/grants", "grant.create"),
        ("GET", "/api/v1/grants", None),
        ("DELETE", "/api/v1/grants/{grant}", "grant.delete"),
        ("GET", "/api/v1/service-users/{user}/access", None),
        ("POST", "/api/v1/roles", "role.create"),
        ("GET", "/api/v1/roles", None),
        ("GET", "/api/v1/roles/{role}", None),
        ("DELETE", "/api/v1/roles/{role}", "role.delete"),
        ("PUT", "/api/v1/roles/{role}/members/{user}", "role.assign"),
        ("DELETE", "/api/v1/roles/{role}/members/{user}", "role.unassign"),
    ],
)
async def test_a_tenant_user_is_forbidden_every_grant_and_role_endpoint(
    gw: Gateway, method: str, path: str, action: str | None
) -> None:
    user, auth = await new_user(gw, root(gw))
    role = await new_role(gw, root(gw))
    grant = await new_grant(gw, root(gw), **grant_body(user))
    await ok(gw, "PUT", f"/api/v1/roles/{role['id']}/members/{user['id']}", root(gw), status=204)
    body = grant_body(user, action="manage") if path == "/api/v1/grants" else NO_BODY
    if path == "/api/v1/roles":
        body = {"name": "mine"}
    filled = path.format(grant=grant["id"], user=user["id"], role=role["id"])

    await refused(
        gw, method, filled, auth, body=body if method == "POST" else NO_BODY, status=403,
        action=action, words=("Forbidden",),
    )  # fmt: skip


# -- what may be granted ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ["TenantAdmin", "Root"])
async def test_a_grant_or_a_role_for_a_full_access_service_user_is_refused_with_a_clear_message(
    gw: Gateway, role: str
) -> None:
    target, _ = await new_user(gw, root(gw), "admin", role=role)
    access_role = await new_role(gw, root(gw))

    message = await refused(
        gw, "POST", "/api/v1/grants", root(gw), body=grant_body(target), status=400,
        action="grant.create", words=("service_user", role, "full access", "TenantUser"),
    )  # fmt: skip
    assert message.startswith("service_user: ")
    await refused(
        gw, "PUT", f"/api/v1/roles/{access_role['id']}/members/{target['id']}", root(gw),
        status=400, action="role.assign", words=("service_user", role, "TenantUser"),
    )  # fmt: skip


@pytest.mark.parametrize("role", ["TenantAdmin", "Root"])
async def test_a_full_access_service_user_cannot_be_created_with_grants_or_roles(
    gw: Gateway, role: str
) -> None:
    await new_role(gw, root(gw))
    users = (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"]
    for rights in (
        {"grants": [{"catalog": "default", "action": "read"}]},
        {"roles": ["analysts"]},
    ):
        await refused(
            gw, "POST", "/api/v1/service-users", root(gw),
            body={"name": "admin", "role": role, **rights}, status=400,
            action="service_user.create", words=("grants", "TenantUser"),
        )  # fmt: skip
    assert (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"] == users


async def test_a_tenant_admin_granting_to_a_root_service_user_is_forbidden(
    gw: Gateway,
) -> None:
    _, api_key = await create_service_user(gw, root(gw), "default-admin", role="TenantAdmin")
    root_user = {"id": gw.root.user.id}
    await refused(
        gw, "POST", "/api/v1/grants", key_auth(api_key), body=grant_body(root_user),
        status=403, action="grant.create", words=("Forbidden", "above your own"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("catalog", "to"),
    [
        pytest.param("default", "service_user", id="other-tenants-catalog-to-a-user"),
        pytest.param("default", "role", id="other-tenants-catalog-to-a-role"),
        pytest.param("nowhere", "service_user", id="unknown-catalog-to-a-user"),
        pytest.param("nowhere", "role", id="unknown-catalog-to-a-role"),
    ],
)
async def test_a_grant_must_name_a_catalog_of_the_subjects_tenant(
    gw: Gateway, acme: Acme, catalog: str, to: str
) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")
    role = await new_role(gw, acme.auth)
    subject = user if to == "service_user" else role

    for auth in (acme.auth, root(gw)):
        message = await refused(
            gw, "POST", "/api/v1/grants", auth, body=grant_body(subject, to=to, catalog=catalog),
            status=400, action="grant.create",
        )  # fmt: skip
        assert message == f"catalog: no catalog '{catalog}' belongs to tenant 'acme'"


async def test_a_grant_on_every_catalog_or_on_a_whole_catalog_is_accepted(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")

    anywhere = await new_grant(gw, acme.auth, **grant_body(user, catalog="*", resource=()))
    whole = await new_grant(gw, acme.auth, **grant_body(user, catalog="lake", resource=()))

    assert (anywhere["on"], whole["on"]) == ("*", "lake")
    assert anywhere["resource"] == whole["resource"] == []


async def test_a_service_user_cannot_be_created_with_a_grant_on_another_tenants_catalog(
    gw: Gateway, acme: Acme
) -> None:
    await refused(
        gw, "POST", "/api/v1/service-users", acme.auth,
        body={"name": "acme-etl", "grants": [{"catalog": "default", "action": "read"}]},
        status=400, action="service_user.create", words=("catalog", "'default'", "'acme'"),
    )  # fmt: skip
    assert (await ok(gw, "GET", "/api/v1/service-users?tenant=acme", root(gw)))["total"] == 1


BAD_GRANTS: list[Any] = [
    pytest.param({"action": "admin"}, "action", id="unknown-action"),
    pytest.param({"action": "READ"}, "action", id="action-in-capitals"),
    pytest.param({"action": None}, "action", id="null-action"),
    pytest.param({"resource": ["sales", ""]}, "resource", id="empty-level"),
    pytest.param({"resource": [""]}, "resource", id="only-an-empty-level"),
    pytest.param({"resource": ["sa*les"]}, "resource", id="star-glob"),
    pytest.param({"resource": ["*"]}, "resource", id="star-alone"),
    pytest.param({"resource": ["sales", "ord?rs"]}, "resource", id="question-mark"),
    pytest.param({"resource": ["$sales"]}, "resource", id="dollar"),
    pytest.param({"resource": ['"sales"']}, "resource", id="double-quotes"),
    pytest.param({"resource": ["sale's"]}, "resource", id="single-quote"),
    pytest.param({"resource": ["`sales`"]}, "resource", id="backtick"),
    pytest.param({"resource": ["sales\norders"]}, "resource", id="newline"),
    pytest.param({"resource": ["sales\x00"]}, "resource", id="nul"),
    pytest.param({"resource": ["sales\x1f"]}, "resource", id="unit-separator"),
    pytest.param({"resource": ["sales\x7f"]}, "resource", id="del"),
    pytest.param({"resource": ["sales\x9b"]}, "resource", id="c1-csi"),
    pytest.param({"resource": ["x" * 256]}, "resource", id="level-over-255"),
    pytest.param({"resource": ["n"] * 33}, "resource", id="over-32-levels"),
    pytest.param({"resource": "sales"}, "resource", id="a-string-not-a-list"),
    pytest.param({"catalog": "Default"}, "catalog", id="catalog-in-capitals"),
    pytest.param({"catalog": "de*"}, "catalog", id="catalog-glob"),
    pytest.param({"catalog": ""}, "catalog", id="empty-catalog"),
    pytest.param({"service_user": None}, "service_user", id="null-subject"),
    pytest.param({"role": "some-role-id"}, "service_user", id="both-subjects"),
    pytest.param({"service_user": 7}, "service_user", id="subject-not-a-string"),
    pytest.param({"extra": 1}, "extra", id="unknown-field"),
]


@pytest.mark.parametrize(("change", "field"), BAD_GRANTS)
async def test_bad_grant_input_is_400_naming_the_field_and_changes_nothing(
    gw: Gateway, change: dict[str, Any], field: str
) -> None:
    user, _ = await new_user(gw, root(gw))
    body = {**grant_body(user), **change}

    message = await refused(
        gw, "POST", "/api/v1/grants", root(gw), body=body, status=400, action="grant.create"
    )
    assert message.startswith(f"{field}"), message


async def test_a_grant_without_a_subject_is_400(gw: Gateway) -> None:
    body = {"catalog": "default", "resource": ["sales"], "action": "read"}
    await refused(
        gw, "POST", "/api/v1/grants", root(gw), body=body, status=400, action="grant.create",
        words=("service_user", "role"),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("grant", "named"),
    [
        pytest.param({"catalog": "default", "action": "own"}, "grants.0.action", id="bad-action"),
        pytest.param({"catalog": "default", "resource": ["a*"], "action": "read"}, "resource",
                     id="glob"),
        pytest.param({"catalog": "default", "resource": [""], "action": "read"},
                     "grants.0.resource.0", id="empty-level"),
        pytest.param({"catalog": "nope", "action": "read"}, "catalog", id="unknown-catalog"),
    ],
)  # fmt: skip
async def test_a_service_user_with_a_bad_grant_is_400_and_not_created(
    gw: Gateway, grant: dict[str, Any], named: str
) -> None:
    message = await refused(
        gw, "POST", "/api/v1/service-users", root(gw),
        body={"name": "etl", "grants": [grant]}, status=400, action="service_user.create",
    )  # fmt: skip
    assert named in message, message
    assert (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"] == 1  # Root


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": "Analysts"}, "name", id="capitals"),
        pytest.param({"name": "a b"}, "name", id="space"),
        pytest.param({"name": ""}, "name", id="empty"),
        pytest.param({"name": "r" * 64}, "name", id="over-63"),
        pytest.param({"name": "r", "description": "a\x1b[31m"}, "description", id="escape"),
        pytest.param({}, "name", id="no-name"),
    ],
)
async def test_bad_role_input_is_400_naming_the_field(
    gw: Gateway, body: dict[str, Any], field: str
) -> None:
    message = await refused(
        gw, "POST", "/api/v1/roles", root(gw), body=body, status=400, action="role.create"
    )
    assert message.startswith(f"{field}: "), message


async def test_a_duplicate_grant_or_role_is_409(gw: Gateway) -> None:
    user, _ = await new_user(gw, root(gw))
    role = await new_role(gw, root(gw))
    await new_grant(gw, root(gw), **grant_body(user, action="write"))
    await new_grant(gw, root(gw), **grant_body(role, to="role", action="write"))

    for subject, to in ((user, "service_user"), (role, "role")):
        await refused(
            gw, "POST", "/api/v1/grants", root(gw), body=grant_body(subject, to=to,
            action="write"), status=409, action="grant.create", words=("already holds",),
        )  # fmt: skip
    await refused(
        gw, "POST", "/api/v1/roles", root(gw), body={"name": "analysts"}, status=409,
        action="role.create", words=("name", "already exists"),
    )  # fmt: skip


@pytest.fixture
def two_grants_a_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-tenant grant limit (10,000) made 2, so that reaching it takes two grants."""
    monkeypatch.setattr(grant_admin, "MAX_GRANTS_PER_TENANT", 2)


LIMIT_WORDS = ("most grants allowed (2)", "revoke some", "role")


@pytest.mark.usefixtures("two_grants_a_tenant")
async def test_a_grant_past_the_tenants_limit_is_409_until_one_is_revoked(
    gw: Gateway, acme: Acme
) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")
    role = await new_role(gw, acme.auth)
    first = await new_grant(gw, acme.auth, **grant_body(user, catalog="lake"))
    await new_grant(gw, acme.auth, **grant_body(role, to="role", catalog="lake"))  # roles count

    for subject, to in ((user, "service_user"), (role, "role")):
        for auth in (acme.auth, root(gw)):  # Root too: the limit is the tenant's
            await refused(
                gw, "POST", "/api/v1/grants", auth,
                body=grant_body(subject, to=to, catalog="lake", action="write"),
                status=409, action="grant.create", words=LIMIT_WORDS,
            )  # fmt: skip
    # Another tenant's grants are counted apart.
    theirs, _ = await new_user(gw, root(gw), "default-etl")
    await new_grant(gw, root(gw), **grant_body(theirs))

    await ok(gw, "DELETE", f"/api/v1/grants/{first['id']}", acme.auth, status=204)
    again = await new_grant(gw, acme.auth, **grant_body(user, catalog="lake", action="write"))
    assert (await access_of(gw, user))["grants"] == [again]


@pytest.mark.usefixtures("two_grants_a_tenant")
async def test_creating_a_service_user_with_grants_past_the_limit_is_409_and_creates_nothing(
    gw: Gateway,
) -> None:
    await new_grant(gw, root(gw), **grant_body(await new_role(gw, root(gw)), to="role"))
    users = (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"]
    read_sales = {"catalog": "default", "resource": ["sales"], "action": "read"}
    write_hr = {"catalog": "default", "resource": ["hr"], "action": "write"}

    await refused(
        gw, "POST", "/api/v1/service-users", root(gw),
        body={"name": "etl", "grants": [read_sales, write_hr]}, status=409,
        action="service_user.create", words=LIMIT_WORDS,
    )  # fmt: skip
    assert (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"] == users

    # One right (given twice) still fits; then the tenant is full, and roles need no room.
    user, _ = await new_user(gw, root(gw), "etl", grants=[read_sales, read_sales])
    assert [g["on"] for g in (await access_of(gw, user))["grants"]] == ["default:sales"]
    await refused(
        gw, "POST", "/api/v1/service-users", root(gw),
        body={"name": "bi", "grants": [write_hr]}, status=409,
        action="service_user.create", words=LIMIT_WORDS,
    )  # fmt: skip
    member, _ = await new_user(gw, root(gw), "bi", roles=["analysts"])
    assert [r["name"] for r in (await access_of(gw, member))["roles"]] == ["analysts"]


# -- the audit trail --------------------------------------------------------------------------


async def test_every_grant_and_role_change_is_audited_as_a_success(gw: Gateway, acme: Acme) -> None:
    user, _ = await new_user(gw, acme.auth, "acme-etl")
    role = await new_role(gw, acme.auth)
    grant = await new_grant(gw, acme.auth, **grant_body(user, catalog="lake"))
    member = f"/api/v1/roles/{role['id']}/members/{user['id']}"
    await ok(gw, "PUT", member, acme.auth, status=204)
    await ok(gw, "DELETE", member, acme.auth, status=204)
    await ok(gw, "DELETE", f"/api/v1/grants/{grant['id']}", acme.auth, status=204)
    await ok(gw, "DELETE", f"/api/v1/roles/{role['id']}", acme.auth, status=204)

    records = await audit(gw, acme.auth, outcome="success")  # the tenant admin sees them too
    # Grant and membership changes are recorded against the service user (its trail shows
    # how its access came to be), with the grant's id in the detail.
    expected = [
        ("role.create", "role", role["id"]),
        ("grant.create", "service_user", user["id"]),
        ("role.assign", "service_user", user["id"]),
        ("role.unassign", "service_user", user["id"]),
        ("grant.delete", "service_user", user["id"]),
        ("role.delete", "role", role["id"]),
    ]
    found = [
        (r["action"], r["target_type"], r["target_id"])
        for r in reversed(records)
        if r["action"].startswith(("grant.", "role."))
    ]
    assert found == expected
    for action, _, _ in expected:
        (one,) = matching(records, action=action)
        assert one["actor"] == acme.admin["id"]
        assert one["tenant_id"] == acme.tenant["id"]
        assert one["client_addr"] == "127.0.0.1"
    detail = matching(records, action="grant.create")[0]["detail"]
    assert detail == f"read on lake:sales (grant {grant['id']})"


async def test_a_grant_and_role_refusal_is_audited_against_the_callers_tenant(
    gw: Gateway, acme: Acme
) -> None:
    theirs = await new_role(gw, root(gw), "default-role")
    await refused(
        gw, "DELETE", f"/api/v1/roles/{theirs['id']}", acme.auth, status=404,
        action="role.delete",
    )  # fmt: skip
    (record,) = await audit(gw, acme.auth, action="role.delete", outcome="failure")
    assert record["actor"] == acme.admin["id"]
    assert record["target_id"] == theirs["id"]
    assert record["tenant_id"] == acme.tenant["id"]


# -- service users created with their rights -------------------------------------------------


async def test_a_service_user_created_with_grants_and_roles_holds_them_at_once(
    gw: Gateway,
) -> None:
    analysts = await new_role(gw, root(gw), "analysts")
    auditors = await new_role(gw, root(gw), "auditors")
    role_grant = await new_grant(gw, root(gw), **grant_body(analysts, to="role", resource=()))

    user, _ = await new_user(
        gw, root(gw), "etl",
        grants=[
            {"catalog": "default", "resource": ["sales", "orders"], "action": "write"},
            {"catalog": "*", "action": "read"},
        ],
        roles=["analysts", "auditors"],
    )  # fmt: skip

    access = await access_of(gw, user)
    assert sorted((g["on"], g["action"]) for g in access["grants"]) == [
        ("*", "read"), ("default:sales.orders", "write"),
    ]  # fmt: skip
    assert all(g["created_by"] == gw.root.user.id for g in access["grants"])
    assert [r["name"] for r in access["roles"]] == ["analysts", "auditors"]
    assert sorted(g["id"] for g in access["effective"]) == sorted(
        [*(g["id"] for g in access["grants"]), role_grant["id"]]
    )
    for role in (analysts, auditors):
        shown = await ok(gw, "GET", f"/api/v1/roles/{role['id']}", root(gw))
        assert shown["members"] == [user["id"]]
    # One change, one record: the creation names what it gave.
    (record,) = await audit(gw, action="service_user.create", target=user["id"])
    assert "default:sales.orders" in record["detail"] and "analysts" in record["detail"]
    assert len(await audit(gw, action="grant.create")) == 1  # the role's, made before
    assert await audit(gw, action="role.assign") == []


async def test_a_right_repeated_in_one_create_is_given_once(gw: Gateway) -> None:
    await new_role(gw, root(gw))
    read_sales = {"catalog": "default", "resource": ["sales"], "action": "read"}

    user, _ = await new_user(
        gw, root(gw), grants=[read_sales, read_sales], roles=["analysts", "analysts"]
    )

    access = await access_of(gw, user)
    assert [(g["on"], g["action"]) for g in access["grants"]] == [("default:sales", "read")]
    assert [r["name"] for r in access["roles"]] == ["analysts"]


async def test_creating_a_service_user_with_an_unknown_role_is_404_and_creates_nothing(
    gw: Gateway, acme: Acme
) -> None:
    await new_role(gw, root(gw), "analysts")  # a role of the default tenant, not acme's
    before = (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"]

    for auth, roles in ((root(gw), ["analysts", "nope"]), (acme.auth, ["analysts"])):
        message = await refused(
            gw, "POST", "/api/v1/service-users", auth,
            body={"name": "etl", "grants": [{"catalog": "*", "action": "read"}],
                  "roles": roles},
            status=404, action="service_user.create",
        )  # fmt: skip
        assert message == "roles: no such role"

    assert (await ok(gw, "GET", "/api/v1/service-users", root(gw)))["total"] == before


# -- /me ---------------------------------------------------------------------------------------


async def test_me_of_a_confined_service_user_lists_its_effective_grants_and_access_per_catalog(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        catalogs={
            "default": CatalogSettings(default_access="none"),
            "reports": CatalogSettings(default_access="read"),
            "scratch": CatalogSettings(),
            "lake": CatalogSettings(tenant="acme"),
        }
    )
    await ok(gw, "POST", "/api/v1/tenants", root(gw), status=201, body={"name": "acme"})
    role = await new_role(gw, root(gw))
    role_grant = await new_grant(gw, root(gw), **grant_body(role, to="role", resource=("hr",)))
    user, auth = await new_user(
        gw, root(gw), grants=[{"catalog": "default", "resource": ["sales"], "action": "write"}],
        roles=["analysts"],
    )  # fmt: skip
    own = (await access_of(gw, user))["grants"]

    answer = await me(gw, auth)

    assert answer["access"] == {"default": "none", "reports": "read", "scratch": "write"}
    assert sorted(answer["grants"], key=lambda g: g["id"]) == sorted(
        [*own, role_grant], key=lambda g: g["id"]
    )
    # The same through a token; and Root has full access everywhere and no grants.
    assert (await me(gw, await token_for(gw, user["id"], auth["X-API-Key"])))["grants"] == (
        answer["grants"]
    )
    mine = await me(gw, root(gw))
    assert mine["access"] == {name: "full" for name in ("default", "lake", "reports", "scratch")}
    assert mine["grants"] == []


async def test_me_shows_a_grant_change_on_the_very_next_request(confined: Gateway) -> None:
    user, auth = await new_user(confined, root(confined))
    assert (await me(confined, auth))["grants"] == []

    grant = await new_grant(confined, root(confined), **grant_body(user))
    assert (await me(confined, auth))["grants"] == [grant]

    await ok(confined, "DELETE", f"/api/v1/grants/{grant['id']}", root(confined), status=204)
    assert (await me(confined, auth))["grants"] == []


# -- enforcement on the catalog routes -----------------------------------------------------------


@pytest.mark.parametrize("kind", ["key", "token"])
async def test_a_grant_made_through_the_api_is_enforced_on_the_very_next_request_and_its_revoke(
    confined: Gateway, kind: str
) -> None:
    gw = confined
    user, auth = await new_user(gw, root(gw))
    if kind == "token":
        auth = await token_for(gw, user["id"], auth["X-API-Key"])
    assert await status_of(gw, auth) == 403
    asked = len(gw.upstream.catalog_requests())

    grant = await new_grant(gw, root(gw), **grant_body(user))

    assert await status_of(gw, auth) == 200
    assert len(gw.upstream.catalog_requests()) == asked + 1
    assert gw.upstream.last.method == "GET" and gw.upstream.last.raw_path.endswith(SALES[3:])
    assert await status_of(gw, auth, "/v1/namespaces/hr") == 403  # only what was granted

    await ok(gw, "DELETE", f"/api/v1/grants/{grant['id']}", root(gw), status=204)

    assert await status_of(gw, auth) == 403
    assert len(gw.upstream.catalog_requests()) == asked + 1  # never asked again


@pytest.mark.parametrize(
    ("catalog", "resource"),
    [
        pytest.param("*", ("sales",), id="every-catalog"),
        pytest.param("default", (), id="the-whole-catalog"),
        pytest.param("*", (), id="everything"),
    ],
)
async def test_a_wider_grant_is_enforced_on_what_lies_below_it(
    confined: Gateway, catalog: str, resource: tuple[str, ...]
) -> None:
    user, auth = await new_user(confined, root(confined))
    await new_grant(
        confined, root(confined), **grant_body(user, catalog=catalog, resource=resource)
    )
    assert await status_of(confined, auth) == 200
    assert await status_of(confined, auth, "/v1/namespaces/sales/tables/orders") == 200


async def test_a_roles_grant_is_enforced_while_the_role_is_held(confined: Gateway) -> None:
    gw = confined
    user, auth = await new_user(gw, root(gw))
    role = await new_role(gw, root(gw))
    await new_grant(gw, root(gw), **grant_body(role, to="role"))
    member = f"/api/v1/roles/{role['id']}/members/{user['id']}"
    assert await status_of(gw, auth) == 403

    await ok(gw, "PUT", member, root(gw), status=204)
    assert await status_of(gw, auth) == 200

    await ok(gw, "DELETE", member, root(gw), status=204)
    assert await status_of(gw, auth) == 403

    await ok(gw, "PUT", member, root(gw), status=204)
    assert await status_of(gw, auth) == 200
    await ok(gw, "DELETE", f"/api/v1/roles/{role['id']}", root(gw), status=204)
    assert await status_of(gw, auth) == 403


async def test_a_service_user_created_with_a_grant_may_use_it_on_its_first_request(
    confined: Gateway,
) -> None:
    _, auth = await new_user(
        confined, root(confined),
        grants=[{"catalog": "default", "resource": ["sales"], "action": "read"}],
    )  # fmt: skip
    assert await status_of(confined, auth) == 200
    assert await status_of(confined, auth, "/v1/namespaces/hr") == 403


async def test_deleting_a_service_user_through_the_api_deletes_its_grants(
    gw: Gateway,
) -> None:
    user, _ = await new_user(gw, root(gw))
    role = await new_role(gw, root(gw))
    kept = await new_grant(gw, root(gw), **grant_body(role, to="role"))
    await new_grant(gw, root(gw), **grant_body(user))
    await ok(gw, "PUT", f"/api/v1/roles/{role['id']}/members/{user['id']}", root(gw), status=204)

    await ok(gw, "DELETE", f"/api/v1/service-users/{user['id']}", root(gw), status=204)

    assert (await ok(gw, "GET", "/api/v1/grants", root(gw)))["items"] == [kept]
    assert (await ok(gw, "GET", f"/api/v1/roles/{role['id']}", root(gw)))["members"] == []


@pytest.mark.parametrize("role", ["TenantAdmin", "Root"])
async def test_a_service_user_promoted_loses_its_grants_and_roles_and_a_demotion_restores_none(
    confined: Gateway, role: str
) -> None:
    gw = confined
    analysts = await new_role(gw, root(gw))
    kept = await new_grant(gw, root(gw), **grant_body(analysts, to="role", resource=("hr",)))
    user, auth = await new_user(
        gw, root(gw), grants=[{"catalog": "default", "resource": ["sales"], "action": "read"}],
        roles=["analysts"],
    )  # fmt: skip
    assert await status_of(gw, auth) == 200
    path = f"/api/v1/service-users/{user['id']}"

    promoted = await ok(gw, "PUT", path, root(gw), body={"role": role})

    assert promoted["role"] == role
    access = await access_of(gw, user)
    assert (access["grants"], access["roles"], access["effective"]) == ([], [], [])
    (record,) = await audit(gw, action="service_user.update", target=user["id"])
    assert record["detail"] == "changed: role; its grants and roles went with its TenantUser role"

    demoted = await ok(gw, "PUT", path, root(gw), body={"role": "TenantUser"})

    assert demoted["role"] == "TenantUser"
    access = await access_of(gw, user)
    assert (access["grants"], access["roles"], access["effective"]) == ([], [], [])
    assert await status_of(gw, auth) == 403  # what it held is gone, not waiting
    assert await status_of(gw, auth, "/v1/namespaces/hr") == 403
    # The role and its grant stay, for its other members.
    shown = await ok(gw, "GET", f"/api/v1/roles/{analysts['id']}", root(gw))
    assert (shown["members"], shown["grants"]) == ([], [kept])
    (last, _) = await audit(gw, action="service_user.update", target=user["id"])
    assert last["detail"] == "changed: role"


async def test_a_tenant_with_a_role_cannot_be_deleted(gw: Gateway, acme: Acme) -> None:
    await ok(gw, "DELETE", f"/api/v1/service-users/{acme.admin['id']}", root(gw), status=204)
    role = await new_role(gw, root(gw), tenant="acme")

    reply = await call(gw, "DELETE", f"/api/v1/tenants/{acme.tenant['id']}", root(gw))
    assert_error(reply, 409, "roles")

    await ok(gw, "DELETE", f"/api/v1/roles/{role['id']}", root(gw), status=204)
    await ok(gw, "DELETE", f"/api/v1/tenants/{acme.tenant['id']}", root(gw), status=204)


# -- two processes sharing one store ---------------------------------------------------------


async def status_on(worker: Worker, auth: Headers, path: str = SALES) -> int:
    async with worker.get(path, headers=dict(auth)) as resp:
        await resp.read()
        return resp.status


async def test_a_grant_change_through_one_app_is_enforced_by_another_after_its_poll(
    confined: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    gw = confined
    worker = await other_worker(gw)
    poll = worker.app[AUTHENTICATOR].check_for_changes
    user, auth = await new_user(gw, root(gw))
    assert await status_on(worker, auth) == 403

    grant = await new_grant(gw, root(gw), **grant_body(user))
    assert await status_on(worker, auth) == 403  # its cache is the one it had
    assert await poll()
    assert await status_on(worker, auth) == 200

    await ok(gw, "DELETE", f"/api/v1/grants/{grant['id']}", root(gw), status=204)
    assert await status_of(gw, auth) == 403  # at once in the app that revoked it
    assert await poll()
    assert await status_on(worker, auth) == 403
    assert not await poll()  # nothing changed since


# -- a subject deleted while a change to it is under way ----------------------------------------


async def test_a_grant_to_a_service_user_deleted_meanwhile_is_404_not_a_duplicate(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = await new_user(gw, root(gw))
    real = gw.store.insert_grant

    async def deleted_first(grant: Any, audit_record: Any) -> None:
        # Another admin deletes the service user between the handler's read and its write.
        await gw.admin.delete(user["id"], actor="other-admin")
        await real(grant, audit_record)

    monkeypatch.setattr(gw.store, "insert_grant", deleted_first)
    reply = await call(gw, "POST", "/api/v1/grants", root(gw), body=grant_body(user))

    assert "already holds" not in reply.text
    assert_error(reply, 404, "service user")
    assert (await grant_tables(gw))["grants"] == []


async def test_assigning_a_role_deleted_meanwhile_is_404_not_a_server_error(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, _ = await new_user(gw, root(gw))
    role = await new_role(gw, root(gw))
    real = gw.store.add_role_member
    access = gw.app[GRANTS]

    async def deleted_first(role_id: str, user_id: str, audit_record: Any) -> bool:
        # Another admin deletes the role between the handler's read and its write.
        await access.delete_role(role_id, actor="other-admin")
        return await real(role_id, user_id, audit_record)

    monkeypatch.setattr(gw.store, "add_role_member", deleted_first)
    reply = await call(gw, "PUT", f"/api/v1/roles/{role['id']}/members/{user['id']}", root(gw))

    assert_error(reply, 404, "role")
    assert (await grant_tables(gw))["role_members"] == []
