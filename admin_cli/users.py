"""The human-administrator commands: create-user, list-users, delete-user, change-password."""

from __future__ import annotations

from typing import Any

import click

from .context import Context, PromptOnStderr, pass_context
from .options import (
    ROLES,
    confirm_delete,
    id_option,
    json_option,
    page_options,
    quote_id,
    yes_option,
)
from .output import echo_json, note, show, show_page

__all__ = ("COMMANDS",)


@click.command("create-user")
@click.option("--username", required=True)
@click.password_option(
    help="Prompted for when not given (at least 12 characters).", cls=PromptOnStderr
)
@click.option("--role", type=ROLES, default="TenantAdmin", show_default=True)
@click.option("--tenant", help="Tenant name (Root only; default: your own).")
@json_option
@pass_context
def create_user(
    ctx: Context, username: str, password: str, role: str, tenant: str | None, as_json: bool
) -> None:
    """Create a human administrator who logs in with a password."""
    body: dict[str, Any] = {"username": username, "password": password, "role": role}
    if tenant:
        body["tenant"] = tenant
    show(ctx.client().call("POST", "/api/v1/users", body=body), as_json)


@click.command("list-users")
@page_options
@json_option
@pass_context
def list_users(ctx: Context, limit: int, offset: int, as_json: bool) -> None:
    """List human administrators."""
    page = ctx.client().call("GET", "/api/v1/users", query={"limit": limit, "offset": offset})
    show_page(page, ("id", "username", "role", "tenant", "last_login_at"), as_json)


def _set_active(ctx: Context, id_: str, active: bool, as_json: bool) -> None:
    body = {"active": active}
    show(ctx.client().call("PUT", f"/api/v1/users/{quote_id(id_)}", body=body), as_json)


@click.command("deactivate-user")
@id_option
@json_option
@pass_context
def deactivate_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Stop a human administrator from logging in; their sessions end at once (reversible)."""
    _set_active(ctx, id_, False, as_json)


@click.command("activate-user")
@id_option
@json_option
@pass_context
def activate_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Let a deactivated human administrator log in again."""
    _set_active(ctx, id_, True, as_json)


@click.command("delete-user")
@id_option
@yes_option
@json_option
@pass_context
def delete_user(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a human administrator."""
    confirm_delete(yes, f"user {id_}")
    ctx.delete(f"/api/v1/users/{quote_id(id_)}", id_, as_json)


@click.command("change-password")
@click.option("--id", "id_", help="Whose password (default: your own, from the session).")
@click.option("--current-password", help="Your current password (prompted for your own).")
@click.password_option("--new-password", help="Prompted for when not given.", cls=PromptOnStderr)
@json_option
@pass_context
def change_password(
    ctx: Context, id_: str | None, current_password: str | None, new_password: str,
    as_json: bool,
) -> None:  # fmt: skip
    """Change your own password, or (as an administrator) someone else's."""
    client = ctx.client()
    me = client.call("GET", "/api/v1/me")["id"]
    target = id_ or me
    body = {"password": new_password}
    if id_ is None:
        body["current_password"] = current_password or click.prompt(
            "Current password", hide_input=True, err=True
        )
    elif current_password:
        body["current_password"] = current_password
    answer = client.call("PUT", f"/api/v1/users/{quote_id(target)}/password", body=body)
    if target == me and client.session:
        # The gateway ends every session of the account, this one included: forget the saved
        # token too, so the next command asks for a login instead of failing with a bare 401.
        ctx.sessions.remove(ctx.url)
        message = (
            "Password changed. Every session of this account has ended, this one included: "
            "run `pangolin-admin login` again."
        )
    else:
        message = "Password changed; that user's sessions have ended."
    echo_json(answer) if as_json else note(message)


COMMANDS = (create_user, list_users, deactivate_user, activate_user, delete_user, change_password)
