"""login, logout, whoami."""

from __future__ import annotations

import click

from .client import ApiClient, ApiError
from .context import Context, PromptOnStderr, pass_context
from .grants import GRANT_COLUMNS, grant_rows
from .options import json_option
from .output import echo_block_with_table, echo_json, note

__all__ = ("COMMANDS",)


@click.command()
@click.option("--username", prompt=True, cls=PromptOnStderr)
@click.password_option(confirmation_prompt=False, cls=PromptOnStderr)
@json_option
@pass_context
def login(ctx: Context, username: str, password: str, as_json: bool) -> None:
    """Log in as a human administrator; the session is saved for this URL."""
    answer = ctx.client(authenticated=False).call(
        "POST", "/api/v1/login", body={"username": username, "password": password}
    )
    ctx.sessions.put(ctx.url, answer["token"])
    user = answer["user"]
    if as_json:
        echo_json({"user": user, "expires_in": answer["expires_in"]})
    else:
        click.echo(f"Logged in to {ctx.url} as {user['username']} ({user['role']}).")


@click.command()
@json_option
@pass_context
def logout(ctx: Context, as_json: bool) -> None:
    """End the saved session at the gateway, and forget it here."""
    token = ctx.sessions.get(ctx.url)
    ended_there = True
    if token is not None:
        # The saved session itself, whatever --api-key says: that is what logout ends.
        client = ApiClient(ctx.url, ("Authorization", f"Bearer {token}"), session=True)
        try:
            client.call("POST", "/api/v1/logout")
        except ApiError as err:
            # 401: it had ended already (expired, password changed ...): nothing left to end.
            ended_there = err.status == 401
    # Forgotten here in every case: a token we cannot end is still not one to keep using.
    removed = ctx.sessions.remove(ctx.url)
    if not ended_there:
        note(
            "The gateway could not end the session (unreachable or refused): it was forgotten "
            "here, but stays valid there until it expires or the password is changed."
        )
    if as_json:
        echo_json({"logged_out": removed})
    else:
        note("Logged out." if removed else "No saved session for this URL.")


@click.command()
@json_option
@pass_context
def whoami(ctx: Context, as_json: bool) -> None:
    """Who the current credentials are: their access per catalog without a grant ("full" for
    Root and TenantAdmin, else the catalog's default: "write", "read" or "none"), and the
    grants they hold (own and roles')."""
    me = ctx.client().call("GET", "/api/v1/me")
    if as_json:
        echo_json(me)
        return
    access = ", ".join(f"{catalog}: {level}" for catalog, level in me["access"].items())
    shown = {**{k: v for k, v in me.items() if k not in ("access", "grants")},
             "access": access or None, "grants": len(me["grants"])}  # fmt: skip
    # A TenantUser may not list roles: a role's grants show its id.
    echo_block_with_table(shown, grant_rows(me["grants"], {}), GRANT_COLUMNS)


COMMANDS = (login, logout, whoami)
