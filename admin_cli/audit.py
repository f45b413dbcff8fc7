"""The audit command."""

from __future__ import annotations

import click

from .context import Context, pass_context
from .options import json_option, page_options
from .output import show_page

__all__ = ("COMMANDS",)

COLUMNS = ("at", "actor", "action", "target_id", "outcome", "client_addr")


@click.command()
@click.option("--actor", help="Principal id.")
@click.option("--action", help="e.g. service_user.rotate, login, auth.failure")
@click.option("--target", help="Target id.")
@click.option("--since", help="ISO 8601 time with zone.")
@click.option("--outcome", type=click.Choice(["success", "failure"]))
@page_options
@json_option
@pass_context
def audit(
    ctx: Context, actor: str | None, action: str | None, target: str | None, since: str | None,
    outcome: str | None, limit: int, offset: int, as_json: bool,
) -> None:  # fmt: skip
    """Show the audit log, newest first."""
    query = {"actor": actor, "action": action, "target": target, "since": since,
             "outcome": outcome, "limit": limit, "offset": offset}  # fmt: skip
    show_page(ctx.client().call("GET", "/api/v1/audit", query=query), COLUMNS, as_json)


COMMANDS = (audit,)
