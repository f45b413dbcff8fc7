"""``pangolin-admin``: manage a running gateway's service users, their grants and roles,
users, tenants and audit log.

It talks to the gateway's management API over HTTP (``--url`` / ``PANGOLIN_URL``) with an API
key (``--api-key`` / ``PANGOLIN_API_KEY``) or the session saved by ``pangolin-admin login``.
Exit codes: 0 success, 1 a refused or failed operation (one ``error: ...`` line on stderr),
2 a usage error. The commands live by noun: ``session``, ``service_users``, ``grants`` (and
roles), ``users``, ``tenants``, ``audit``.
"""

from __future__ import annotations

import click

from gateway import __version__

from . import audit, grants, service_users, session, tenants, users
from .client import SessionStore
from .context import Context

__all__ = ("main",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pangolin-admin")
@click.option("--url", envvar="PANGOLIN_URL", default="http://127.0.0.1:8080", show_default=True,
              help="Gateway base URL. Env: PANGOLIN_URL.")  # fmt: skip
@click.option("--api-key", envvar="PANGOLIN_API_KEY", help="An API key. Env: PANGOLIN_API_KEY.")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Administer a Pangolin Gateway: service users, grants and roles, users, tenants, audit."""
    ctx.obj = Context(url=url, api_key=api_key, sessions=SessionStore())


for _module in (session, service_users, grants, users, tenants, audit):
    for _command in _module.COMMANDS:
        main.add_command(_command)
