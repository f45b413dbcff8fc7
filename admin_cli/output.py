"""The only place that formats output: tables and blocks for people, JSON for scripts.
Data goes to stdout; diagnostics go to stderr."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import click

__all__ = (
    "echo_block", "echo_block_with_table", "echo_json", "echo_key", "echo_table", "note", "show",
    "show_key", "show_page",
)  # fmt: skip


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"  # an allowlist, say: none is "-"
    return str(value)


def echo_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        note("(none)")
        return
    cells = [[_cell(row.get(col)) for col in columns] for row in rows]
    widths = [max(len(col), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo(
        "  ".join(col.upper().ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip()
    )
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def echo_block(data: Mapping[str, Any]) -> None:
    width = max(len(k) for k in data)
    for key, value in data.items():
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def echo_block_with_table(
    data: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """A block, then its rows (say, the grants it counts) as a table after an empty line;
    nothing more when there are none."""
    echo_block(data)
    if rows:
        click.echo()
        echo_table(rows, columns)


def echo_key(api_key: str) -> None:
    click.echo(f"{'api_key'.ljust(14)}  {api_key}")
    click.secho("Copy this key now: it will not be shown again.", err=True, fg="yellow")


def note(message: str) -> None:
    click.echo(message, err=True)


def show(data: Mapping[str, Any], as_json: bool) -> None:
    """One object: JSON, or a block for people."""
    echo_json(data) if as_json else echo_block(data)


def show_page(page: Mapping[str, Any], columns: Sequence[str], as_json: bool) -> None:
    """A page of a list: JSON, or a table for people."""
    echo_json(page) if as_json else echo_table(page["items"], columns)


def show_key(answer: Mapping[str, Any], as_json: bool) -> None:
    """A service user with its one-time key."""
    if as_json:
        echo_json(answer)
        return
    echo_block(answer["service_user"])
    echo_key(answer["api_key"])
