"""login, logout, whoami."""

from __future__ import annotations

import click

from .context import Context, PromptOnStderr, pass_context
from .options import json_option
from .output import echo_json, note, show

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
    """Forget the saved session for this URL."""
    removed = ctx.sessions.remove(ctx.url)
    if as_json:
        echo_json({"logged_out": removed})
    else:
        note("Logged out." if removed else "No saved session for this URL.")


@click.command()
@json_option
@pass_context
def whoami(ctx: Context, as_json: bool) -> None:
    """Who the current credentials are."""
    show(ctx.client().call("GET", "/api/v1/me"), as_json)


COMMANDS = (login, logout, whoami)
