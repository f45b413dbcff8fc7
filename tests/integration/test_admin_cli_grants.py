"""pangolin-admin's grant and role commands against the real gateway on a real port, in front
of a real SeaweedFS: no mocked HTTP.

The module's own gateway has three catalogs: ``archive`` and ``default`` (the gateway's default
catalog, though not the first by name) of the default tenant, both ``default_access="none"``
so a TenantUser may do only what its grants allow, and ``acme`` of the tenant acme. The
gateway is shared by the module's tests, hence unique names everywhere."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_cli.options import ACTIONS
from gateway.identity.models import Role
from gateway.routing import ACTIONS as GATEWAY_ACTIONS

from ..live import LiveGateway, SeaweedUpstream
from .test_admin_cli import Cli, block, describe, http, ok, ok_json, refused, unique

pytestmark = pytest.mark.seaweedfs

GRANT_HEADER = ["ID", "SUBJECT", "ON", "ACTION"]


@pytest.fixture(scope="module")
def gateway(
    seaweed: SeaweedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    catalogs = {
        "archive": seaweed.catalog(default_access="none"),
        "default": seaweed.catalog(default_access="none"),
        "acme": seaweed.catalog(tenant="acme"),
    }
    with LiveGateway.start(tmp_path_factory.mktemp("cli-grants"), catalogs=catalogs) as live:
        yield live


@pytest.fixture(scope="module")
def root_key(gateway: LiveGateway) -> str:
    return gateway.user("root-cli-grants", Role.ROOT).api_key.plaintext()


@pytest.fixture
def cli(gateway: LiveGateway, root_key: str, tmp_path: Path) -> Cli:
    return Cli(gateway.url, root_key, tmp_path / "config")


def new_service_user(cli: Cli, *options: str) -> dict[str, Any]:
    """A TenantUser of the default tenant (unless ``options`` say otherwise), and its key."""
    answer: dict[str, Any] = cli.root_json("create-service-user", "--name", unique("cli"), *options)
    return answer


def new_role(cli: Cli, *options: str) -> str:
    name: str = cli.root_json("create-role", "--name", unique("role"), *options)["name"]
    return name


def namespace() -> str:
    return f"ns_{secrets.token_hex(4)}"


def access(cli: Cli, service_user_id: str) -> dict[str, Any]:
    """What get-service-user --json says the service user holds."""
    shown: dict[str, Any] = cli.root_json("get-service-user", "--id", service_user_id)["access"]
    return shown


def held(grants: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Grants as (subject_type, on, action)."""
    return {(g["subject_type"], g["on"], g["action"]) for g in grants}


def table(text: str) -> tuple[list[str], list[list[str]]]:
    """A table's header and rows, split into cells (no cell here holds a space)."""
    header, *rows = text.splitlines()
    return header.split(), [row.split() for row in rows]


def namespace_status(gateway: LiveGateway, key: str, catalog: str, name: str) -> int:
    """Loading a namespace with ``key``: 403 when refused before anything is forwarded (the
    namespace need not exist: an allowed caller gets the catalog's own answer)."""
    url = f"{gateway.url}/v1/{catalog}/v1/warehouse/namespaces/{name}"
    return http(url, headers={"X-API-Key": key})[0]


def assert_usage_error(result: Any, message: str) -> None:
    assert result.exit_code == 2, describe(result)
    assert result.stdout == "" and message in result.stderr, describe(result)


# -- grant, list-grants, revoke ------------------------------------------------------------------


def test_grant_on_the_default_catalog_then_list_grants_shows_it_as_a_table_and_as_json(
    cli: Cli,
) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    ns = namespace()
    result = ok(cli.root("grant", "--service-user", user_id, "--on", f"{ns}.orders",
                         "--action", "write"))  # fmt: skip
    shown = block(result.stdout)
    # Without --catalog: the gateway's default catalog, not the first one by name.
    assert (shown["subject"], shown["on"], shown["action"]) == (
        f"service-user:{user_id}", f"default:{ns}.orders", "write",
    )  # fmt: skip

    header, rows = table(ok(cli.root("list-grants", "--service-user", user_id)).stdout)
    assert header == GRANT_HEADER
    assert rows == [[shown["id"], f"service-user:{user_id}", f"default:{ns}.orders", "write"]]
    listed = cli.root_json("list-grants", "--service-user", user_id)
    assert listed["total"] == 1
    (grant,) = listed["items"]
    assert (grant["id"], grant["catalog"], grant["resource"]) == (
        shown["id"], "default", [ns, "orders"],
    )  # fmt: skip
    assert (grant["subject_type"], grant["subject_id"]) == ("service_user", user_id)


def test_grant_with_catalog_and_list_grants_by_catalog(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    whole = cli.root_json("grant", "--service-user", user_id, "--catalog", "archive",
                          "--action", "read")  # fmt: skip
    everywhere = cli.root_json("grant", "--service-user", user_id, "--catalog", "*",
                               "--action", "create")  # fmt: skip
    assert (whole["on"], whole["resource"]) == ("archive", [])
    assert everywhere["on"] == "*"
    by_catalog = cli.root_json("list-grants", "--service-user", user_id, "--catalog", "archive")
    assert [g["id"] for g in by_catalog["items"]] == [whole["id"]]


def test_revoke_by_id_removes_the_grant(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    grant_id = cli.root_json("grant", "--service-user", user_id, "--action", "read")["id"]
    result = ok(cli.root("revoke", "--id", grant_id))
    assert (result.stdout, result.stderr) == ("", f"Deleted {grant_id}.\n")
    assert cli.root_json("list-grants", "--service-user", user_id)["items"] == []
    assert "No such grant" in refused(cli.root("revoke", "--id", grant_id), 404)


def test_revoke_by_what_the_grant_gives_removes_that_grant_only(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    ns = namespace()
    kept = cli.root_json("grant", "--service-user", user_id, "--on", ns, "--action", "read")
    gone = cli.root_json("grant", "--service-user", user_id, "--on", ns, "--action", "write")
    answer = cli.root_json("revoke", "--service-user", user_id, "--on", ns, "--action", "write")
    assert answer == {"deleted": gone["id"]}
    assert [g["id"] for g in cli.root_json("list-grants", "--service-user", user_id)["items"]] == [
        kept["id"]
    ]
    # Nothing matches any more: one clear line, and nothing else is revoked.
    line = refused(cli.root("revoke", "--service-user", user_id, "--on", ns, "--action", "write"))
    assert line == f"error: No such grant: write on default:{ns}"
    assert len(cli.root_json("list-grants", "--service-user", user_id)["items"]) == 1


def test_the_same_grant_twice_is_refused_with_the_gateways_message(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    ok(cli.root("grant", "--service-user", user_id, "--action", "read"))
    line = refused(cli.root("grant", "--service-user", user_id, "--action", "read"), 409)
    assert "already holds this grant" in line
    assert cli.root_json("list-grants", "--service-user", user_id)["total"] == 1


def test_grant_to_a_service_user_that_is_not_a_tenant_user_is_refused(cli: Cli) -> None:
    admin_id = new_service_user(cli, "--role", "TenantAdmin")["service_user"]["id"]
    refused(cli.root("grant", "--service-user", admin_id, "--action", "read"), 400)
    assert cli.root_json("list-grants", "--service-user", admin_id)["items"] == []


def test_grant_with_a_bad_action_is_a_usage_error_and_grants_nothing(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    result = cli.root("grant", "--service-user", user_id, "--action", "delete")
    assert_usage_error(result, "Invalid value for '--action'")
    assert "read" in result.stderr and "manage" in result.stderr
    assert cli.root_json("list-grants", "--service-user", user_id)["items"] == []


def test_grant_to_an_unknown_role_exits_1_with_one_line_and_grants_nothing(cli: Cli) -> None:
    before = cli.root_json("list-grants")["total"]
    name = unique("nosuch")
    line = refused(cli.root("grant", "--role-name", name, "--action", "read"))
    assert line == f"error: No such role {name!r}"
    assert cli.root_json("list-grants")["total"] == before


def test_grant_on_a_catalog_of_another_tenant_is_refused_by_the_gateway(cli: Cli) -> None:
    user_id = new_service_user(cli, "--tenant", "acme")["service_user"]["id"]
    # The default catalog is the default tenant's, not acme's: the gateway says so.
    line = refused(cli.root("grant", "--service-user", user_id, "--action", "read"), 400)
    assert "no catalog 'default' belongs to tenant 'acme'" in line
    assert cli.root_json("grant", "--service-user", user_id, "--catalog", "acme",
                         "--action", "read")["on"] == "acme"  # fmt: skip


def test_without_the_default_catalog_a_tenant_admin_is_told_to_give_catalog(cli: Cli) -> None:
    key = new_service_user(cli, "--tenant", "acme", "--role", "TenantAdmin")["api_key"]
    user_id = new_service_user(cli, "--tenant", "acme")["service_user"]["id"]
    result = cli.run("grant", "--service-user", user_id, "--action", "read", api_key=key)
    assert_usage_error(result, "give --catalog (yours: acme)")
    granted = ok_json(cli.run("grant", "--service-user", user_id, "--catalog", "acme",
                              "--action", "read", "--json", api_key=key))  # fmt: skip
    assert granted["on"] == "acme"


def test_a_tenant_user_key_is_forbidden_to_manage_grants_and_roles(cli: Cli) -> None:
    key = new_service_user(cli)["api_key"]
    assert "Forbidden" in refused(cli.run("list-grants", api_key=key), 403)
    refused(cli.run("list-roles", api_key=key), 403)
    refused(cli.run("create-role", "--name", unique("role"), api_key=key), 403)


def test_the_cli_offers_exactly_the_gateways_actions() -> None:
    # Copied, not imported (the CLI starts without the gateway's routing): kept equal here.
    assert list(ACTIONS.choices) == list(GATEWAY_ACTIONS)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("grant --action read", "give either --service-user ID or --role-name NAME"),
        ("grant --service-user x --role-name y --action read", "give either --service-user"),
        ("grant --service-user x", "Missing option '--action'"),
        ("grant --service-user x --tenant acme --action read", "give it with --role-name"),
        ("grant --service-user x --on sales..orders --action read", "dot-separated names"),
        ("revoke", "give --id, or the grant's"),
        ("revoke --id x --action read", "give it without the other options"),
        ("list-grants --tenant acme", "give it with --role-name"),
        ("create-role", "Missing option '--name'"),
        ("delete-role", "Missing option '--name'"),
        ("assign-role --service-user x", "Missing option '--role-name'"),
        ("unassign-role --role-name x", "Missing option '--service-user'"),
        ("create-service-user --name n --catalog archive", "give it with --grant"),
        ("create-service-user --name n --grant read:", "nothing after ':'"),
        ("create-service-user --name n --grant read:a..b", "dot-separated names"),
    ],
)
def test_grant_and_role_usage_errors_exit_2(cli: Cli, command: str, message: str) -> None:
    assert_usage_error(cli.root(*command.split()), message)


# -- roles ---------------------------------------------------------------------------------------


def test_role_commands_create_list_assign_and_unassign(cli: Cli) -> None:
    created = cli.root_json("create-role", "--name", unique("readers"), "--description", "sales")
    name = created["name"]
    assert (created["tenant"], created["members"], created["grants"]) == ("default", [], [])
    ns = namespace()
    grant = cli.root_json("grant", "--role-name", name, "--catalog", "archive", "--on", ns,
                          "--action", "read")  # fmt: skip
    assert (grant["subject_type"], grant["subject_id"]) == ("role", created["id"])
    user_id = new_service_user(cli)["service_user"]["id"]

    assigned = ok(cli.root("assign-role", "--service-user", user_id, "--role-name", name))
    assert (assigned.stdout, assigned.stderr) == (
        "", f"Service user {user_id} now holds role {name}.\n",
    )  # fmt: skip
    held_now = access(cli, user_id)
    assert [role["name"] for role in held_now["roles"]] == [name]
    assert held(held_now["effective"]) == {("role", f"archive:{ns}", "read")}
    assert held_now["grants"] == []  # none of its own

    header, rows = table(ok(cli.root("list-roles", "--tenant", "default")).stdout)
    assert header == ["ID", "NAME", "TENANT", "MEMBERS", "GRANTS", "DESCRIPTION"]
    assert [created["id"], name, "default", "1", "1", "sales"] in rows
    # list-grants --role-name names the role in the subject column.
    _, grant_rows = table(ok(cli.root("list-grants", "--role-name", name)).stdout)
    assert grant_rows == [[grant["id"], f"role:{name}", f"archive:{ns}", "read"]]

    answer = cli.root_json("unassign-role", "--service-user", user_id, "--role-name", name)
    assert answer == {"unassigned": name, "service_user": user_id}
    assert access(cli, user_id) == {"grants": [], "roles": [], "effective": []}
    again = cli.root("unassign-role", "--service-user", user_id, "--role-name", name)
    assert "No such role held by the service user" in refused(again, 404)


def test_assign_an_unknown_role_exits_1_and_assigns_nothing(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    line = refused(
        cli.root("assign-role", "--service-user", user_id, "--role-name", "no-such-role")
    )
    assert line == "error: No such role 'no-such-role'"
    assert access(cli, user_id)["roles"] == []


def test_a_role_name_in_several_tenants_needs_tenant(cli: Cli) -> None:
    name = new_role(cli)
    ok(cli.root("create-role", "--name", name, "--tenant", "acme"))
    user_id = new_service_user(cli, "--tenant", "acme")["service_user"]["id"]
    result = cli.root("assign-role", "--service-user", user_id, "--role-name", name)
    assert_usage_error(result, f"roles named {name!r} exist in tenants acme, default")
    ok(cli.root("assign-role", "--service-user", user_id, "--role-name", name, "--tenant", "acme"))
    assert [(r["name"], r["tenant"]) for r in access(cli, user_id)["roles"]] == [(name, "acme")]


def test_delete_role_asks_first_and_takes_its_grants_and_memberships(cli: Cli) -> None:
    name = new_role(cli)
    ok(cli.root("grant", "--role-name", name, "--action", "read"))
    user_id = new_service_user(cli, "--role-name", name)["service_user"]["id"]
    assert len(access(cli, user_id)["effective"]) == 1

    declined = cli.root("delete-role", "--name", name, input="n\n")
    assert declined.exit_code == 1, describe(declined)
    assert "This cannot be undone" in declined.stderr and "Nothing deleted." in declined.stderr
    assert [r["name"] for r in access(cli, user_id)["roles"]] == [name]

    accepted = ok(cli.root("delete-role", "--name", name, input="y\n"))
    assert f"Deleted {name}." in accepted.stderr
    assert access(cli, user_id) == {"grants": [], "roles": [], "effective": []}
    assert name not in {r["name"] for r in cli.root_json("list-roles")["items"]}
    assert "No such role" in refused(cli.root("delete-role", "--name", name, "--yes"))


# -- create-service-user --grant / --role-name ---------------------------------------------------


def test_create_service_user_with_grant_and_role_name_gets_its_rights_in_one_command(
    cli: Cli, gateway: LiveGateway
) -> None:
    role = new_role(cli)
    ns, other, archived = namespace(), namespace(), namespace()
    ok(cli.root("grant", "--role-name", role, "--catalog", "archive", "--on", archived,
                "--action", "read"))  # fmt: skip
    created = new_service_user(
        cli, "--grant", f"read:{ns}", "--grant", f"write:{ns}.orders", "--role-name", role
    )
    user_id, key = created["service_user"]["id"], created["api_key"]

    held_now = access(cli, user_id)
    assert held(held_now["grants"]) == {
        ("service_user", f"default:{ns}", "read"),
        ("service_user", f"default:{ns}.orders", "write"),
    }
    assert [r["name"] for r in held_now["roles"]] == [role]
    assert held(held_now["effective"]) == held(held_now["grants"]) | {
        ("role", f"archive:{archived}", "read")
    }
    # And the gateway enforces them (default_access "none": nothing else is allowed).
    assert namespace_status(gateway, key, "default", ns) != 403
    assert namespace_status(gateway, key, "archive", archived) != 403
    assert namespace_status(gateway, key, "default", other) == 403
    assert namespace_status(gateway, key, "archive", ns) == 403


def test_create_service_user_grants_land_in_the_given_catalog(cli: Cli) -> None:
    created = new_service_user(cli, "--catalog", "archive", "--grant", "read")
    assert held(access(cli, created["service_user"]["id"])["grants"]) == {
        ("service_user", "archive", "read")
    }


def names_of_service_users(cli: Cli) -> set[str]:
    page = cli.root_json("list-service-users", "--limit", "1000")
    return {user["name"] for user in page["items"]}


def test_create_service_user_with_a_bad_grant_action_is_a_usage_error_and_creates_nothing(
    cli: Cli,
) -> None:
    name = unique("bad-grant")
    result = cli.root("create-service-user", "--name", name, "--grant", "delete:sales")
    assert_usage_error(result, "Invalid value for '--grant'")
    assert "'delete' is not an action: use read, write, create, drop, manage" in result.stderr
    assert name not in names_of_service_users(cli)


def test_create_service_user_with_an_unknown_role_name_is_refused_and_creates_nothing(
    cli: Cli,
) -> None:
    name = unique("bad-role")
    result = cli.root("create-service-user", "--name", name, "--grant", "read",
                      "--role-name", "no-such-role")  # fmt: skip
    assert "roles: no such role" in refused(result, 404)
    assert name not in names_of_service_users(cli)


def test_create_service_user_with_a_grant_on_another_tenants_catalog_creates_nothing(
    cli: Cli,
) -> None:
    name = unique("bad-catalog")
    result = cli.root("create-service-user", "--name", name, "--catalog", "acme",
                      "--grant", "read")  # fmt: skip
    assert "no catalog 'acme' belongs to tenant 'default'" in refused(result, 400)
    assert name not in names_of_service_users(cli)


# -- get-service-user and whoami show the access ----------------------------------------------


def test_get_service_user_shows_its_roles_and_every_grant_it_holds(cli: Cli) -> None:
    role = new_role(cli)
    role_grant = cli.root_json(
        "grant", "--role-name", role, "--catalog", "archive", "--action", "read"
    )
    ns = namespace()
    created = new_service_user(cli, "--grant", f"write:{ns}", "--role-name", role)
    user_id = created["service_user"]["id"]
    own_grant = cli.root_json("list-grants", "--service-user", user_id)["items"][0]

    text = ok(cli.root("get-service-user", "--id", user_id)).stdout
    details, _, grants = text.partition("\n\n")
    shown = block(details)
    assert (shown["id"], shown["roles"], shown["grants"]) == (user_id, role, "2")
    header, rows = table(grants)
    assert header == GRANT_HEADER
    assert sorted(rows) == sorted([
        [own_grant["id"], f"service-user:{user_id}", f"default:{ns}", "write"],
        [role_grant["id"], f"role:{role}", "archive", "read"],
    ])  # fmt: skip


def test_get_service_user_without_grants_shows_none_and_no_table(cli: Cli) -> None:
    user_id = new_service_user(cli)["service_user"]["id"]
    result = ok(cli.root("get-service-user", "--id", user_id))
    shown = block(result.stdout)
    assert (shown["roles"], shown["grants"]) == ("-", "0")
    assert "\n\n" not in result.stdout and result.stderr == ""


def test_whoami_shows_the_access_per_catalog_and_the_effective_grants(cli: Cli) -> None:
    role = new_role(cli)
    role_grant = cli.root_json(
        "grant", "--role-name", role, "--catalog", "archive", "--action", "read"
    )
    ns = namespace()
    created = new_service_user(cli, "--grant", f"create:{ns}", "--role-name", role)
    user_id, key = created["service_user"]["id"], created["api_key"]

    text = ok(cli.run("whoami", api_key=key)).stdout
    details, _, grants = text.partition("\n\n")
    shown = block(details)
    assert (shown["id"], shown["role"], shown["grants"]) == (user_id, "TenantUser", "2")
    assert shown["access"] == "archive: none, default: none"  # acme is another tenant's
    header, rows = table(grants)
    assert header == GRANT_HEADER
    # A TenantUser may not list roles: its role's grant shows the role's id.
    assert sorted(row[1:] for row in rows) == sorted([
        [f"service-user:{user_id}", f"default:{ns}", "create"],
        [f"role:{role_grant['subject_id']}", "archive", "read"],
    ])  # fmt: skip

    me = ok_json(cli.run("whoami", "--json", api_key=key))
    assert me["access"] == {"archive": "none", "default": "none"}
    assert held(me["grants"]) == {
        ("service_user", f"default:{ns}", "create"), ("role", "archive", "read"),
    }  # fmt: skip


def test_whoami_as_root_shows_full_access_everywhere_and_no_grants(cli: Cli) -> None:
    result = ok(cli.root("whoami"))
    shown = block(result.stdout)
    assert shown["access"] == "acme: full, archive: full, default: full"
    assert shown["grants"] == "0" and "\n\n" not in result.stdout
