"""How both command-line tools (``pangolin-gateway``, ``pangolin-admin``) fail: one line on
stderr, ``error: <what>``, exit status 1. Raised anywhere in a command; click prints it."""

from __future__ import annotations

from typing import IO

import click

__all__ = ("CommandError",)


class CommandError(click.ClickException):
    exit_code = 1

    def show(self, file: IO[str] | None = None) -> None:
        click.secho(f"error: {self.format_message()}", err=True, fg="red")
