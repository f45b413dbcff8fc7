"""``pangolin-gateway``: ``init``, ``serve``, ``check-config`` and ``demo``.

Data goes to stdout, diagnostics to stderr; exit 0 on success, 1 on a refused or failed
operation, 2 on usage errors (click's own).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

import click

from . import __version__
from .command_errors import CommandError
from .serve.cores import usable_cores
from .settings import Settings, SettingsError, load_settings, warnings
from .store import StoreError

__all__ = ("main",)

_config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="PANGOLIN_CONFIG",
    required=True,
    help="Gateway configuration file (TOML). Env: PANGOLIN_CONFIG.",
)


class _WorkersType(click.ParamType[int]):
    """A number of workers (at least 1), or "auto": the cores this process may use
    (``serve.cores``)."""

    name = "N|auto"

    def convert(self, value: object, param: click.Parameter | None,
                ctx: click.Context | None) -> int:  # fmt: skip
        if isinstance(value, int):
            return value
        if str(value).strip().lower() == "auto":
            return usable_cores()
        try:
            number = int(str(value))
        except ValueError:
            self.fail(f"{value!r} is neither a number nor 'auto'", param, ctx)
        if number < 1:
            self.fail(f"{number} is not at least 1", param, ctx)
        return number


def _load(config_path: Path) -> Settings:
    try:
        return load_settings(config_path, os.environ)
    except SettingsError as exc:
        click.secho(f"{config_path}: invalid configuration:", err=True, fg="red")
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pangolin-gateway")
def main() -> None:
    """Pangolin Gateway: API keys and OAuth2 tokens in front of an Iceberg REST catalog."""


@main.command("check-config")
@_config_option
def check_config(config_path: Path) -> None:
    """List every problem in the configuration; exit 1 if there is one."""
    settings = _load(config_path)
    names = ", ".join(sorted(settings.catalogs))
    click.echo(f"{config_path}: OK ({len(settings.catalogs)} catalog(s): {names})")
    for warning in warnings(settings):
        click.secho(f"warning: {warning}", err=True, fg="yellow")


@main.command()
@_config_option
@click.option("--json", "as_json", is_flag=True, help="Print {id, api_key} as JSON.")
def init(config_path: Path, as_json: bool) -> None:
    """Create the store, the token-signing key and a Root service user (shown once)."""
    from .serve.runner import run_init

    settings = _load(config_path)
    try:
        result = asyncio.run(run_init(settings))
    except (StoreError, OSError) as exc:
        # A store this gateway must not touch (newer schema, unwritable path): one line, no
        # traceback, exit 1.
        raise CommandError(f"cannot initialize: {exc}") from None
    store = "(PostgreSQL)" if settings.store.url else settings.store.path
    if result.root is None:
        if as_json:
            click.echo(json.dumps({"id": None, "api_key": None, "created": False}))
        click.echo(f"Store {store} is already initialized; nothing was changed.", err=True)
        return
    user, key = result.root.user, result.root.api_key.plaintext()
    if as_json:
        click.echo(json.dumps({"id": user.id, "api_key": key, "created": True}))
        return
    click.echo(f"Initialized store {store}")
    click.echo(f"Root service user id: {user.id}")
    click.echo(f"Root API key:         {key}")
    click.secho("Copy the key now: it is shown only this once.", err=True, fg="yellow")


@main.command()
@_config_option
def migrate(config_path: Path) -> None:
    """Bring the store (SQLite or PostgreSQL) to this gateway's schema; `serve` refuses an
    older one. Replicas may run it at once: each migration is applied once."""
    from .serve.runner import run_migrate

    settings = _load(config_path)
    try:
        found, now = asyncio.run(run_migrate(settings))
    except (StoreError, OSError) as exc:
        raise CommandError(f"cannot migrate: {exc}") from None
    if found == now:
        click.echo(f"The store is at schema version {now}, this gateway's; nothing to do.")
    else:
        click.echo(f"Migrated the store from schema version {found} to {now}.")


# What copy-store reports, per table: (one, several).
_COPIED: dict[str, tuple[str, str]] = {
    "tenants": ("tenant", "tenants"),
    "service_users": ("service user", "service users"),
    "users": ("user", "users"),
    "sessions": ("session", "sessions"),
    "usage_daily": ("daily usage count", "daily usage counts"),
    "signing_keys": ("signing key", "signing keys"),
    "access_roles": ("role", "roles"),
    "role_members": ("role membership", "role memberships"),
    "grants": ("grant", "grants"),
    "audit_log": ("audit record", "audit records"),
}


@main.command("copy-store")
@click.option(
    "--from",
    "source",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The SQLite store file (stop the gateway using it first).",
)
@click.option(
    "--to",
    "target",
    envvar="PANGOLIN_COPY_TO",
    required=True,
    help="postgresql:// URL of a new, empty database. Env: PANGOLIN_COPY_TO (keeps a password "
    "out of the process list).",
)
def copy_store(source: Path, target: str) -> None:
    """Copy a SQLite store into an empty PostgreSQL database, ids, key digests, sessions,
    signing keys and audit intact: keys and tokens keep working. All or nothing."""
    from urllib.parse import urlsplit

    from .store.copy import copy_file

    if urlsplit(target).scheme not in ("postgresql", "postgres"):
        raise CommandError("cannot copy the store: --to must be a postgresql:// URL")
    try:
        counts = asyncio.run(copy_file(source, target))
    except StoreError as exc:  # its message never holds the URL's password
        raise CommandError(f"cannot copy the store: {exc}") from None
    copied = [
        f"{counts[table]} {one if counts[table] == 1 else several}"
        for table, (one, several) in _COPIED.items()
    ]
    # The URL is never echoed: it may carry a password.
    click.echo(f"Copied {', '.join(copied[:-1])} and {copied[-1]} to the PostgreSQL store.")


@main.command()
def keygen() -> None:
    """Print a new token-signing key (private JWK) for tokens.signing_key / its _FILE variable."""
    from .signing_keys import new_signing_key

    click.echo(json.dumps(new_signing_key().as_dict(private=True)))
    click.secho("Keep this secret: anyone holding it can mint tokens.", err=True, fg="yellow")


@main.command()
@_config_option
@click.option("--host", help="Override server.host.")
@click.option("--port", type=int, help="Override server.port.")
@click.option(
    "--workers",
    type=_WorkersType(),
    default="auto",
    show_default=True,
    envvar="PANGOLIN_WORKERS",
    help="Worker processes sharing the port (SO_REUSEPORT) and the store, or 'auto': one per "
    "core this process may run on (its CPU affinity, less a cgroup's CPU quota). "
    "Env: PANGOLIN_WORKERS.",
)
def serve(config_path: Path, host: str | None, port: int | None, workers: int) -> None:
    """Run the gateway."""
    from .serve.runner import serve_settings

    settings = _load(config_path)
    _configure_logging()
    if host is not None:
        settings = dataclasses.replace(
            settings, server=dataclasses.replace(settings.server, host=host)
        )
    for warning in warnings(settings):
        logging.getLogger(__name__).warning("%s", warning)
    try:
        status = serve_settings(
            settings, host=host, port=port, workers=workers,
            reread=lambda: load_settings(config_path, os.environ),
        )  # fmt: skip
    except (LookupError, OSError, StoreError) as exc:  # StoreError: e.g. a newer schema
        raise CommandError(f"cannot serve: {exc}") from None
    if status:
        raise CommandError("stopped: a worker failed (see the log above)")


@main.command()
@_config_option
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("var/demo"),
    show_default=True,
    help="Where the local SeaweedFS keeps its data and credentials.",
)
def demo(config_path: Path, data_dir: Path) -> None:
    """Run the gateway in front of a real local SeaweedFS catalog (what `make run` does)."""
    from .demo.launch import run_demo

    settings = _load(config_path)
    _configure_logging()
    try:
        run_demo(settings, data_dir)
    except (RuntimeError, OSError, LookupError) as exc:
        raise CommandError(f"demo failed: {exc}") from None


def _configure_logging() -> None:
    from .observability.log_handlers import configure_logging

    configure_logging()
