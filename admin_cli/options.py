"""Options and argument rules shared by the commands: --json, --id, --yes, paging, roles,
durations, grant actions and resources."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import click

from .output import note

__all__ = (
    "ACTIONS",
    "ROLES",
    "confirm_delete",
    "id_option",
    "json_option",
    "on_option",
    "page_options",
    "parse_duration",
    "parse_grant",
    "parse_levels",
    "quote_id",
    "yes_option",
)

F = TypeVar("F", bound=Callable[..., Any])
ROLES = click.Choice(["Root", "TenantAdmin", "TenantUser"])
# A grant's actions (gateway.routing.ACTIONS; not imported, so the CLI starts fast).
ACTIONS = click.Choice(["read", "write", "create", "drop", "manage"])
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def id_option(func: F) -> F:
    return click.option("--id", "id_", required=True, help="The UUID.")(func)


def yes_option(func: F) -> F:
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(func)


def on_option(func: F) -> F:
    return click.option(
        "--on", "levels", metavar="NAMESPACE[.TABLE]",
        callback=lambda _ctx, _param, value: parse_levels(value),
        help="A namespace (levels joined by dots) or a table in it; omitted: the whole catalog.",
    )(func)  # fmt: skip


def page_options(func: F) -> F:
    func = click.option("--offset", type=click.IntRange(0), default=0)(func)
    return click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)(
        func
    )


def parse_duration(value: str, option: str) -> int:
    """``value`` (``90d``, ``12h``) in seconds; a usage error naming ``option`` otherwise."""
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter(
            "use a number with s, m, h, d or w, e.g. 90d or 12h", param_hint=option
        )
    return int(match.group(1)) * _UNITS[match.group(2)]


def quote_id(value: str) -> str:
    """An id as one path segment, whatever the user typed."""
    return quote(value, safe="")


def confirm_delete(yes: bool, what: str) -> None:
    if not yes and not click.confirm(f"Delete {what}? This cannot be undone", err=True):
        note("Nothing deleted.")
        sys.exit(1)


def parse_levels(value: str | None) -> list[str]:
    """``--on sales.orders``: a resource's levels, dot-separated; None is the whole catalog."""
    if value is None:
        return []
    levels = value.split(".")
    if not all(levels):
        raise click.BadParameter("use dot-separated names, e.g. sales or sales.orders")
    return levels


def parse_grant(value: str) -> tuple[str, list[str]]:
    """``--grant ACTION:ON`` (``read:sales``, ``write:staging.orders``), or ``ACTION`` alone
    for the whole catalog: (action, levels)."""
    action, colon, on = value.partition(":")
    if action not in ACTIONS.choices:
        raise click.BadParameter(
            f"{action!r} is not an action: use {', '.join(ACTIONS.choices)}, e.g. read:sales"
        )
    if colon and not on:
        raise click.BadParameter(f"nothing after ':' in {value!r}: give ACTION alone for the "
                                 "whole catalog, or ACTION:sales.orders")  # fmt: skip
    return action, parse_levels(on if colon else None)
