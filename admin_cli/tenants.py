"""The tenant commands: create-tenant, list-tenants, delete-tenant (Root)."""

from __future__ import annotations

import click

from .context import Context, pass_context
from .options import confirm_delete, id_option, json_option, quote_id, yes_option
from .output import show, show_page

__all__ = ("COMMANDS",)


@click.command("create-tenant")
@click.option("--name", required=True)
@json_option
@pass_context
def create_tenant(ctx: Context, name: str, as_json: bool) -> None:
    """Create a tenant (Root)."""
    show(ctx.client().call("POST", "/api/v1/tenants", body={"name": name}), as_json)


@click.command("list-tenants")
@json_option
@pass_context
def list_tenants(ctx: Context, as_json: bool) -> None:
    """List tenants."""
    show_page(ctx.client().call("GET", "/api/v1/tenants"), ("id", "name", "created_at"), as_json)


@click.command("delete-tenant")
@id_option
@yes_option
@json_option
@pass_context
def delete_tenant(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a tenant that has no identities left (Root). --id takes the id or the name."""
    confirm_delete(yes, f"tenant {id_}")
    ctx.delete(f"/api/v1/tenants/{quote_id(id_)}", id_, as_json)


COMMANDS = (create_tenant, list_tenants, delete_tenant)
