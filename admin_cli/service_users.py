"""The service-user commands (the seed's names: create-service-user, rotate-service-user-key,
...)."""

from __future__ import annotations

from typing import Any

import click

from .context import Context, pass_context
from .grants import GRANT_COLUMNS, default_catalog, grant_rows
from .options import (
    ROLES,
    confirm_delete,
    id_option,
    json_option,
    page_options,
    parse_duration,
    parse_grant,
    quote_id,
    yes_option,
)
from .output import echo_block_with_table, echo_json, echo_table, note, show, show_key

__all__ = ("COMMANDS",)

COLUMNS = ("id", "name", "role", "tenant", "active", "expires_at", "last_used_at")


def rate_options(func: Any) -> Any:
    func = click.option(
        "--burst", type=click.IntRange(1, 10_000_000),
        help="How many requests may come at once, above the rate (default: a second's worth).",
    )(func)  # fmt: skip
    return click.option(
        "--rate-limit", type=click.FloatRange(0, 1e6), metavar="PER_SECOND",
        help="Its own request rate limit, in requests per second (0: none). Default: the "
        "gateway's limits.requests_per_second.",
    )(func)  # fmt: skip


ALLOW_HELP = (
    "Where its key and tokens work from: an IP address or CIDR (IPv4 or IPv6), e.g. "
    "10.0.0.0/8. Repeatable."
)
BASE = "/api/v1/service-users"
USAGE_DAYS = 14


def _expiry(expires_in: str | None, expires_at: str | None) -> dict[str, Any]:
    if expires_in and expires_at:
        raise click.UsageError("give either --expires-in or --expires-at, not both")
    if expires_in:
        return {"expires_in": parse_duration(expires_in, "--expires-in")}
    if expires_at:
        return {"expires_at": expires_at}
    return {}


@click.command("create-service-user")
@click.option("--name", required=True)
@click.option("--role", type=ROLES, default="TenantUser", show_default=True)
@click.option("--description", default="")
@click.option("--tenant", help="Tenant name (Root only; default: your own).")
@click.option("--expires-in", help="Lifetime, e.g. 90d, 12h.")
@click.option("--expires-at", help="Expiry time, ISO 8601 with zone, e.g. 2027-01-31T00:00:00Z.")
@click.option(
    "--grant", "grants", multiple=True, metavar="ACTION[:ON]",
    callback=lambda _ctx, _param, values: [parse_grant(value) for value in values],
    help="A grant it starts with, e.g. read:sales or write:staging.orders (ACTION alone: the "
         "whole catalog). Repeatable.",
)  # fmt: skip
@click.option("--catalog", help="The catalog of the --grant options, or * for every catalog of "
              "the tenant (default: the gateway's default).")  # fmt: skip
@click.option("--role-name", "role_names", multiple=True, metavar="NAME",
              help="A role of its tenant it holds. Repeatable.")  # fmt: skip
@click.option("--allow", "networks", multiple=True, metavar="CIDR",
              help=ALLOW_HELP + " Default: from anywhere.")  # fmt: skip
@rate_options
@json_option
@pass_context
def create_service_user(
    ctx: Context, name: str, role: str, description: str, tenant: str | None,
    expires_in: str | None, expires_at: str | None, grants: list[tuple[str, list[str]]],
    catalog: str | None, role_names: tuple[str, ...], networks: tuple[str, ...],
    rate_limit: float | None, burst: int | None, as_json: bool,
) -> None:  # fmt: skip
    """Create a service user; its API key is printed once. Its grants and roles (TenantUser
    only) are given in the same step: all of them, or no service user."""
    body: dict[str, Any] = {"name": name, "role": role, "description": description}
    if tenant:
        body["tenant"] = tenant
    body.update(_expiry(expires_in, expires_at))
    if catalog and not grants:
        raise click.UsageError("--catalog is the catalog of --grant: give it with --grant")
    client = ctx.client()
    if grants:
        catalog = catalog or default_catalog(client)
        body["grants"] = [
            {"catalog": catalog, "resource": levels, "action": action} for action, levels in grants
        ]
    if role_names:
        body["roles"] = list(role_names)
    if networks:
        body["allowed_networks"] = list(networks)
    body.update(_rates(rate_limit, burst, default=False))
    show_key(client.call("POST", BASE, body=body), as_json)


@click.command("list-service-users")
@click.option("--active/--inactive", default=None, help="Only active (or inactive) ones.")
@click.option("--role", type=ROLES)
@click.option("--tenant")
@click.option(
    "--stale",
    metavar="DURATION",
    help="Only those not used for this long, e.g. 30d (never used: since made).",
)
@click.option(
    "--expiring",
    metavar="DURATION",
    help="Only those whose expiry is within this long from now, e.g. 14d.",
)
@page_options
@json_option
@pass_context
def list_service_users(
    ctx: Context, active: bool | None, role: str | None, tenant: str | None,
    stale: str | None, expiring: str | None, limit: int, offset: int, as_json: bool,
) -> None:  # fmt: skip
    """List service users."""
    query = {"role": role, "tenant": tenant, "limit": limit, "offset": offset,
             "active": None if active is None else str(active).lower(),
             "unused_for": stale and parse_duration(stale, "--stale"),
             "expiring_within": expiring and parse_duration(expiring, "--expiring")}  # fmt: skip
    page = ctx.client().call("GET", BASE, query=query)
    if as_json:
        echo_json(page)
        return
    echo_table(page["items"], COLUMNS)
    if page["total"] > offset + len(page["items"]):
        note(f"{page['total']} in all; use --offset to see more.")


@click.command("get-service-user")
@id_option
@json_option
@pass_context
def get_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Show one service user, with its requests per day over the last 14 days (UTC), its
    roles, and the grants it holds (its own and its roles')."""
    client = ctx.client()
    path = f"{BASE}/{quote_id(id_)}"
    user = client.call("GET", path)
    usage = client.call("GET", f"{path}/usage", query={"days": USAGE_DAYS})
    access = client.call("GET", f"{path}/access")
    if as_json:
        echo_json({**user, "usage": usage, "access": access})
        return
    counts = [day["requests"] for day in usage["days"]]
    # One compact line in the block (a key without spaces, like the others): the total,
    # then each day's count, oldest first, from the first day shown.
    per_day = " ".join(str(n) for n in counts)
    summary = f"{sum(counts)} in all; per day from {usage['days'][0]['day']}: {per_day}"
    roles = {role["id"]: role["name"] for role in access["roles"]}
    shown = {**user, f"requests_{USAGE_DAYS}d": summary, "roles": ", ".join(roles.values()) or None,
             "grants": len(access["effective"])}  # fmt: skip
    echo_block_with_table(shown, grant_rows(access["effective"], roles), GRANT_COLUMNS)


@click.command("update-service-user")
@id_option
@click.option("--description")
@click.option("--role", type=ROLES)
@click.option("--expires-in", help="New lifetime from now, e.g. 30d.")
@click.option("--expires-at", help="New expiry time, ISO 8601 with zone.")
@click.option("--no-expiry", is_flag=True, help="Remove the expiry.")
@click.option("--allow", "networks", multiple=True, metavar="CIDR",
              help=ALLOW_HELP + " Replaces the allowlist it had.")  # fmt: skip
@click.option("--allow-anywhere", is_flag=True, help="Remove the allowlist.")
@rate_options
@click.option("--default-rate-limit", is_flag=True,
              help="Back to the configured rate limit and burst.")  # fmt: skip
@json_option
@pass_context
def update_service_user(
    ctx: Context, id_: str, description: str | None, role: str | None, expires_in: str | None,
    expires_at: str | None, no_expiry: bool, networks: tuple[str, ...], allow_anywhere: bool,
    rate_limit: float | None, burst: int | None, default_rate_limit: bool, as_json: bool,
) -> None:  # fmt: skip
    """Change a service user's description, role, expiry or allowlist."""
    body: dict[str, Any] = _expiry(expires_in, expires_at)
    if no_expiry:
        if body:
            raise click.UsageError("--no-expiry cannot be combined with --expires-in/--expires-at")
        body["expires_at"] = None
    if description is not None:
        body["description"] = description
    if role is not None:
        body["role"] = role
    if networks and allow_anywhere:
        raise click.UsageError("--allow-anywhere cannot be combined with --allow")
    if networks or allow_anywhere:
        body["allowed_networks"] = list(networks)
    body.update(_rates(rate_limit, burst, default=default_rate_limit))
    if not body:
        raise click.UsageError(
            "nothing to change: give --description, --role, an expiry, an allowlist or a rate limit"
        )
    _update(ctx, id_, body, as_json)


def _rates(rate_limit: float | None, burst: int | None, *, default: bool) -> dict[str, Any]:
    if default:
        if rate_limit is not None or burst is not None:
            raise click.UsageError("--default-rate-limit cannot be combined with --rate-limit")
        return {"rate_limit": None, "rate_burst": None}
    body: dict[str, Any] = {}
    if rate_limit is not None:
        body["rate_limit"] = rate_limit
    if burst is not None:
        body["rate_burst"] = burst
    return body


def _update(ctx: Context, id_: str, body: dict[str, Any], as_json: bool) -> None:
    show(ctx.client().call("PUT", f"{BASE}/{quote_id(id_)}", body=body), as_json)


@click.command("deactivate-service-user")
@id_option
@json_option
@pass_context
def deactivate_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Stop a service user's key and tokens from working (reversible)."""
    _update(ctx, id_, {"active": False}, as_json)


@click.command("activate-service-user")
@id_option
@json_option
@pass_context
def activate_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Let a deactivated service user authenticate again."""
    _update(ctx, id_, {"active": True}, as_json)


@click.command("rotate-service-user-key")
@id_option
@click.option(
    "--grace",
    help="Keep the old key and its tokens working this long (e.g. 1h, 2d; at most 7d), for "
    "clients still to be given the new key. Default: the old key stops working now.",
)
@json_option
@pass_context
def rotate_service_user_key(ctx: Context, id_: str, grace: str | None, as_json: bool) -> None:
    """Issue a new key (printed once); the old key and its tokens stop working now, or at
    the end of --grace. Rotating again ends an earlier grace at once."""
    body = {"grace_seconds": parse_duration(grace, "--grace")} if grace else None
    show_key(ctx.client().call("POST", f"{BASE}/{quote_id(id_)}/rotate", body=body), as_json)


@click.command("delete-service-user")
@id_option
@yes_option
@json_option
@pass_context
def delete_service_user(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a service user."""
    confirm_delete(yes, f"service user {id_}")
    ctx.delete(f"{BASE}/{quote_id(id_)}", id_, as_json)


@click.command("prune-service-users")
@click.option(
    "--unused-for",
    required=True,
    metavar="DURATION",
    help="Deactivate those not used for this long, e.g. 90d (at least 1d).",
)
@click.option("--tenant", help="Only this tenant's (Root; default: every tenant).")
@click.option("--dry-run", is_flag=True, help="List them; change nothing.")
@yes_option
@json_option
@pass_context
def prune_service_users(
    ctx: Context, unused_for: str, tenant: str | None, dry_run: bool, yes: bool, as_json: bool
) -> None:
    """Deactivate the active service users not used for --unused-for (reversible, audited);
    asks first, showing them, unless --yes."""
    body: dict[str, Any] = {"unused_for": parse_duration(unused_for, "--unused-for")}
    if tenant:
        body["tenant"] = tenant
    client = ctx.client()
    preview = client.call("POST", f"{BASE}/prune", body={**body, "dry_run": True})
    if dry_run or not preview["deactivated"]:
        _pruned(preview, as_json)
        return
    if not yes:
        echo_table(preview["deactivated"], COLUMNS)
        count = len(preview["deactivated"])
        if not click.confirm(f"Deactivate these {count} service users?", err=True):
            note("Nothing changed.")
            raise SystemExit(1)
    _pruned(client.call("POST", f"{BASE}/prune", body=body), as_json)


def _pruned(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(answer)
        return
    echo_table(answer["deactivated"], COLUMNS)
    verb = "would be deactivated" if answer["dry_run"] else "deactivated"
    note(f"{len(answer['deactivated'])} {verb}.")
    for user in answer["kept"]:
        note(f"kept {user['name']} ({user['id']}): the last active Root")


COMMANDS = (
    create_service_user, list_service_users, get_service_user, update_service_user,
    deactivate_service_user, activate_service_user, rotate_service_user_key,
    delete_service_user, prune_service_users,
)  # fmt: skip
