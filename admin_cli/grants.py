"""The grant and role commands: grant, revoke, list-grants, create-role, list-roles,
delete-role, assign-role, unassign-role. Also what create-service-user, get-service-user and
whoami share with them: the default catalog, roles by name, grants as table rows."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import click

from gateway.command_errors import CommandError

from .client import ApiClient
from .context import Context, pass_context
from .options import ACTIONS, confirm_delete, json_option, on_option, quote_id, yes_option
from .output import echo_block, echo_json, echo_table, note

__all__ = ("COMMANDS", "GRANT_COLUMNS", "default_catalog", "grant_rows")

F = TypeVar("F", bound=Callable[..., Any])
GRANTS = "/api/v1/grants"
ROLES = "/api/v1/roles"
GRANT_COLUMNS = ("id", "subject", "on", "action")
ROLE_COLUMNS = ("id", "name", "tenant", "members", "grants", "description")
CATALOG_HELP = "A catalog, or * for every catalog of the tenant (default: the gateway's default)."


def default_catalog(client: ApiClient) -> str:
    """The gateway's default catalog (``default`` in ``/api/v1/catalogs``), when it is one the
    caller may use; otherwise --catalog must say which."""
    catalogs = client.call("GET", "/api/v1/catalogs")["catalogs"]
    for catalog in catalogs:
        if catalog["default"]:
            return str(catalog["name"])
    yours = ", ".join(c["name"] for c in catalogs) or "none"
    raise click.UsageError(
        f"the gateway's default catalog is not one of yours: give --catalog (yours: {yours})"
    )


def find_role(client: ApiClient, name: str, tenant: str | None) -> dict[str, Any]:
    """The role of that name (in ``tenant``, if given) among those the caller manages."""
    found: list[dict[str, Any]] = [
        role
        for role in client.call("GET", ROLES, query={"tenant": tenant})["items"]
        if role["name"] == name
    ]
    if not found:
        raise CommandError(f"No such role {name!r}" + (f" in tenant {tenant!r}" if tenant else ""))
    if len(found) > 1:
        tenants = ", ".join(sorted(role["tenant"] for role in found))
        raise click.UsageError(f"roles named {name!r} exist in tenants {tenants}: give --tenant")
    return found[0]


def grant_rows(
    grants: Iterable[Mapping[str, Any]], role_names: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Grants as table rows: a role subject by name when ``role_names`` (id -> name) has it."""
    return [
        {
            "id": grant["id"],
            "subject": (
                f"role:{role_names.get(grant['subject_id'], grant['subject_id'])}"
                if grant["subject_type"] == "role"
                else f"service-user:{grant['subject_id']}"
            ),
            "on": grant["on"],
            "action": grant["action"],
        }
        for grant in grants
    ]


def _role_names(client: ApiClient, grants: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Role id -> name, asked for only when some grant is a role's."""
    if all(grant["subject_type"] != "role" for grant in grants):
        return {}
    return {role["id"]: role["name"] for role in client.call("GET", ROLES)["items"]}


def _role_row(role: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": role["id"], "name": role["name"], "tenant": role["tenant"],
        "members": len(role["members"]), "grants": len(role["grants"]),
        "description": role["description"] or None, "created_at": role["created_at"],
    }  # fmt: skip


def _tenant_option(func: F) -> F:
    help_ = "The role's tenant (needed only when Root has roles of that name in several)."
    return click.option("--tenant", help=help_)(func)


def _subject_options(func: F) -> F:
    func = _tenant_option(func)
    func = click.option("--role-name", "role_name", metavar="NAME", help="A role, by name.")(func)
    return click.option("--service-user", metavar="ID", help="A service user, by id.")(func)


def _subject(
    client: ApiClient, service_user: str | None, role_name: str | None, tenant: str | None
) -> dict[str, str]:
    """A grant's subject as the API takes it: ``{"service_user": id}`` or ``{"role": id}``."""
    if (service_user is None) == (role_name is None):
        raise click.UsageError("give either --service-user ID or --role-name NAME")
    if role_name is None:
        if tenant is not None:
            raise click.UsageError("--tenant names the role's tenant: give it with --role-name")
        return {"service_user": str(service_user)}
    return {"role": find_role(client, role_name, tenant)["id"]}


# -- grants ----------------------------------------------------------------------------------


@click.command()
@_subject_options
@click.option("--catalog", help=CATALOG_HELP)
@on_option
@click.option("--action", type=ACTIONS, required=True)
@json_option
@pass_context
def grant(
    ctx: Context, service_user: str | None, role_name: str | None, tenant: str | None,
    catalog: str | None, levels: list[str], action: str, as_json: bool,
) -> None:  # fmt: skip
    """Give a service user (a TenantUser) or a role one action on a catalog, a namespace or a
    table; it holds for everything below."""
    client = ctx.client()
    subject = _subject(client, service_user, role_name, tenant)
    body = {**subject, "catalog": catalog or default_catalog(client), "resource": levels,
            "action": action}  # fmt: skip
    answer = client.call("POST", GRANTS, body=body)
    if as_json:
        echo_json(answer)
        return
    role_names = {subject["role"]: role_name} if role_name is not None else {}
    echo_block(grant_rows([answer], role_names)[0])


@click.command()
@click.option("--id", "id_", help="The grant's id (list-grants shows it).")
@_subject_options
@click.option("--catalog", help=CATALOG_HELP)
@on_option
@click.option("--action", type=ACTIONS)
@json_option
@pass_context
def revoke(
    ctx: Context, id_: str | None, service_user: str | None, role_name: str | None,
    tenant: str | None, catalog: str | None, levels: list[str], action: str | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Revoke a grant: by --id, or by what it gives (the options of grant)."""
    if id_ is not None:
        if service_user or role_name or tenant or catalog or levels or action:
            raise click.UsageError("--id names the grant: give it without the other options")
    else:
        if action is None:
            raise click.UsageError(
                "give --id, or the grant's --service-user or --role-name, --action and "
                "--on/--catalog"
            )
        client = ctx.client()
        subject = _subject(client, service_user, role_name, tenant)
        catalog = catalog or default_catalog(client)
        held = client.call("GET", GRANTS, query={**subject, "catalog": catalog})["items"]
        found = [g["id"] for g in held if g["resource"] == levels and g["action"] == action]
        if not found:
            on = f"{catalog}:{'.'.join(levels)}" if levels else catalog
            raise CommandError(f"No such grant: {action} on {on}")
        id_ = str(found[0])
    ctx.delete(f"{GRANTS}/{quote_id(id_)}", id_, as_json)


@click.command("list-grants")
@click.option("--service-user", metavar="ID", help="Only this service user's own grants.")
@click.option("--role-name", "role_name", metavar="NAME", help="Only this role's grants.")
@_tenant_option
@click.option("--catalog", help="Only grants on this catalog (* for those on every catalog).")
@json_option
@pass_context
def list_grants(
    ctx: Context, service_user: str | None, role_name: str | None, tenant: str | None,
    catalog: str | None, as_json: bool,
) -> None:  # fmt: skip
    """List the grants you manage: all, or a service user's, a role's or a catalog's."""
    if tenant is not None and role_name is None:
        raise click.UsageError("--tenant names the role's tenant: give it with --role-name")
    client = ctx.client()
    query = {"service_user": service_user, "catalog": catalog}
    if role_name is not None:
        query["role"] = find_role(client, role_name, tenant)["id"]
    page = client.call("GET", GRANTS, query=query)
    if as_json:
        echo_json(page)
        return
    echo_table(grant_rows(page["items"], _role_names(client, page["items"])), GRANT_COLUMNS)


# -- roles -----------------------------------------------------------------------------------


@click.command("create-role")
@click.option("--name", required=True, help="Lower case letters, digits, _ and -.")
@click.option("--description", default="")
@click.option("--tenant", help="Tenant name (Root only; default: your own).")
@json_option
@pass_context
def create_role(
    ctx: Context, name: str, description: str, tenant: str | None, as_json: bool
) -> None:
    """Create a role: a named set of grants that service users of its tenant hold."""
    body = {"name": name, "description": description}
    if tenant:
        body["tenant"] = tenant
    role = ctx.client().call("POST", ROLES, body=body)
    echo_json(role) if as_json else echo_block(_role_row(role))


@click.command("list-roles")
@click.option("--tenant", help="Only this tenant's roles.")
@json_option
@pass_context
def list_roles(ctx: Context, tenant: str | None, as_json: bool) -> None:
    """List roles, with how many members and grants each has."""
    page = ctx.client().call("GET", ROLES, query={"tenant": tenant})
    if as_json:
        echo_json(page)
        return
    echo_table([_role_row(role) for role in page["items"]], ROLE_COLUMNS)


@click.command("delete-role")
@click.option("--name", required=True)
@_tenant_option
@yes_option
@json_option
@pass_context
def delete_role(ctx: Context, name: str, tenant: str | None, yes: bool, as_json: bool) -> None:
    """Delete a role, its grants and its memberships."""
    role = find_role(ctx.client(), name, tenant)
    confirm_delete(yes, f"role {name}, its grants and its memberships")
    ctx.delete(f"{ROLES}/{quote_id(role['id'])}", name, as_json)


def _membership(
    ctx: Context, method: str, service_user: str, role_name: str, tenant: str | None
) -> None:
    client = ctx.client()
    role = find_role(client, role_name, tenant)
    client.call(method, f"{ROLES}/{quote_id(role['id'])}/members/{quote_id(service_user)}")


def _member_options(func: F) -> F:
    func = _tenant_option(func)
    func = click.option("--role-name", "role_name", required=True, metavar="NAME")(func)
    return click.option("--service-user", required=True, metavar="ID")(func)


@click.command("assign-role")
@_member_options
@json_option
@pass_context
def assign_role(
    ctx: Context, service_user: str, role_name: str, tenant: str | None, as_json: bool
) -> None:
    """Give a role to a service user (a TenantUser of the role's tenant)."""
    _membership(ctx, "PUT", service_user, role_name, tenant)
    if as_json:
        echo_json({"assigned": role_name, "service_user": service_user})
    else:
        note(f"Service user {service_user} now holds role {role_name}.")


@click.command("unassign-role")
@_member_options
@json_option
@pass_context
def unassign_role(
    ctx: Context, service_user: str, role_name: str, tenant: str | None, as_json: bool
) -> None:
    """Take a role from a service user."""
    _membership(ctx, "DELETE", service_user, role_name, tenant)
    if as_json:
        echo_json({"unassigned": role_name, "service_user": service_user})
    else:
        note(f"Service user {service_user} no longer holds role {role_name}.")


COMMANDS = (
    grant, revoke, list_grants, create_role, list_roles, delete_role, assign_role, unassign_role,
)  # fmt: skip
