"""What every command gets: the gateway's URL and the credential to call it with."""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any

import click

from .client import ApiClient, ApiError, SessionStore
from .output import echo_json, note

__all__ = ("Context", "PromptOnStderr", "pass_context")


@dataclass
class Context:
    url: str
    api_key: str | None
    sessions: SessionStore

    def client(self, *, authenticated: bool = True) -> ApiClient:
        if not authenticated:
            return ApiClient(self.url)
        if self.api_key:
            return ApiClient(self.url, ("X-API-Key", self.api_key))
        token = self.sessions.get(self.url)
        if token is None:
            raise ApiError(
                "no credentials: pass --api-key (or set PANGOLIN_API_KEY), "
                "or run `pangolin-admin login`"
            )
        return ApiClient(self.url, ("Authorization", f"Bearer {token}"), session=True)

    def delete(self, path: str, id_: str, as_json: bool) -> None:
        self.client().call("DELETE", path)
        echo_json({"deleted": id_}) if as_json else note(f"Deleted {id_}.")


pass_context = click.make_pass_decorator(Context)


class PromptOnStderr(click.Option):
    """An option whose prompt goes to stderr. Click prompts on stdout, so
    `pangolin-admin login --json > session.json` wrote "Username: " into the JSON (and hid the
    question from the user); stdout is for data only."""

    def prompt_for_value(self, ctx: click.Context) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().prompt_for_value(ctx)
