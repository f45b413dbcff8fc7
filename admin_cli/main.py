"""``pangolin-admin``: manage a running gateway's service users, users, tenants and audit log.

It talks to the gateway's management API over HTTP (``--url`` / ``PANGOLIN_URL``) with an API
key (``--api-key`` / ``PANGOLIN_API_KEY``) or the session saved by ``pangolin-admin login``.
Exit codes: 0 success, 1 a refused or failed operation, 2 a usage error.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote

import click

from gateway import __version__

from .client import ApiClient, ApiError, SessionStore
from .output import echo_block, echo_json, echo_key, echo_table, note

__all__ = ("main",)

F = TypeVar("F", bound=Callable[..., Any])
ROLES = click.Choice(["Root", "TenantAdmin", "TenantUser"])
SU_COLUMNS = ("id", "name", "role", "tenant", "active", "expires_at", "last_used_at")
_DURATION = re.compile(r"(\d+)([smhdw]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


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


pass_context = click.make_pass_decorator(Context)


class PromptOnStderr(click.Option):
    """An option whose prompt goes to stderr. Click prompts on stdout, so
    `pangolin-admin login --json > session.json` wrote "Username: " into the JSON (and hid the
    question from the user); stdout is for data only."""

    def prompt_for_value(self, ctx: click.Context) -> Any:
        with contextlib.redirect_stdout(sys.stderr):
            return super().prompt_for_value(ctx)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(func)


def _run(action: Callable[[], None]) -> None:
    """Expected failures (refused, not found, unreachable) are one line on stderr, exit 1."""
    try:
        action()
    except ApiError as exc:
        suffix = f" (HTTP {exc.status})" if exc.status is not None else ""
        click.secho(f"error: {exc}{suffix}", err=True, fg="red")
        sys.exit(1)


def parse_duration(value: str) -> int:
    match = _DURATION.fullmatch(value.strip().lower())
    if match is None or int(match.group(1)) == 0:
        raise click.BadParameter("use a number with s, m, h, d or w, e.g. 90d or 12h")
    return int(match.group(1)) * _UNITS[match.group(2)]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pangolin-admin")
@click.option("--url", envvar="PANGOLIN_URL", default="http://127.0.0.1:8080", show_default=True,
              help="Gateway base URL. Env: PANGOLIN_URL.")  # fmt: skip
@click.option("--api-key", envvar="PANGOLIN_API_KEY", help="An API key. Env: PANGOLIN_API_KEY.")
@click.pass_context
def main(ctx: click.Context, url: str, api_key: str | None) -> None:
    """Administer a Pangolin Gateway: service users, users, tenants, audit."""
    ctx.obj = Context(url=url, api_key=api_key, sessions=SessionStore())


# -- session ---------------------------------------------------------------------------------


@main.command()
@click.option("--username", prompt=True, cls=PromptOnStderr)
@click.password_option(confirmation_prompt=False, cls=PromptOnStderr)
@json_option
@pass_context
def login(ctx: Context, username: str, password: str, as_json: bool) -> None:
    """Log in as a human administrator; the session is saved for this URL."""

    def act() -> None:
        answer = ctx.client(authenticated=False).call(
            "POST", "/api/v1/login", body={"username": username, "password": password}
        )
        ctx.sessions.put(ctx.url, answer["token"])
        user = answer["user"]
        if as_json:
            echo_json({"user": user, "expires_in": answer["expires_in"]})
        else:
            click.echo(f"Logged in to {ctx.url} as {user['username']} ({user['role']}).")

    _run(act)


@main.command()
@json_option
@pass_context
def logout(ctx: Context, as_json: bool) -> None:
    """Forget the saved session for this URL."""
    removed = ctx.sessions.remove(ctx.url)
    if as_json:
        echo_json({"logged_out": removed})
    else:
        note("Logged out." if removed else "No saved session for this URL.")


@main.command()
@json_option
@pass_context
def whoami(ctx: Context, as_json: bool) -> None:
    """Who the current credentials are."""
    _run(lambda: _show(ctx.client().call("GET", "/api/v1/me"), as_json))


def _show(data: dict[str, Any], as_json: bool) -> None:
    echo_json(data) if as_json else echo_block(data)


# -- service users ---------------------------------------------------------------------------


def _expiry(expires_in: str | None, expires_at: str | None) -> dict[str, Any]:
    if expires_in and expires_at:
        raise click.UsageError("give either --expires-in or --expires-at, not both")
    if expires_in:
        return {"expires_in": parse_duration(expires_in)}
    if expires_at:
        return {"expires_at": expires_at}
    return {}


def _show_key(answer: dict[str, Any], as_json: bool) -> None:
    if as_json:
        echo_json(answer)
        return
    echo_block(answer["service_user"])
    echo_key(answer["api_key"])


@main.command("create-service-user")
@click.option("--name", required=True)
@click.option("--role", type=ROLES, default="TenantUser", show_default=True)
@click.option("--description", default="")
@click.option("--tenant", help="Tenant name (Root only; default: your own).")
@click.option("--expires-in", help="Lifetime, e.g. 90d, 12h.")
@click.option("--expires-at", help="Expiry time, ISO 8601 with zone, e.g. 2027-01-31T00:00:00Z.")
@json_option
@pass_context
def create_service_user(
    ctx: Context, name: str, role: str, description: str, tenant: str | None,
    expires_in: str | None, expires_at: str | None, as_json: bool,
) -> None:  # fmt: skip
    """Create a service user; its API key is printed once."""
    body: dict[str, Any] = {"name": name, "role": role, "description": description}
    if tenant:
        body["tenant"] = tenant
    body.update(_expiry(expires_in, expires_at))
    _run(lambda: _show_key(ctx.client().call("POST", "/api/v1/service-users", body=body), as_json))


@main.command("list-service-users")
@click.option("--active/--inactive", default=None, help="Only active (or inactive) ones.")
@click.option("--role", type=ROLES)
@click.option("--tenant")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@pass_context
def list_service_users(
    ctx: Context, active: bool | None, role: str | None, tenant: str | None, limit: int,
    offset: int, as_json: bool,
) -> None:  # fmt: skip
    """List service users."""
    query = {"role": role, "tenant": tenant, "limit": limit, "offset": offset,
             "active": None if active is None else str(active).lower()}  # fmt: skip

    def act() -> None:
        page = ctx.client().call("GET", "/api/v1/service-users", query=query)
        if as_json:
            echo_json(page)
        else:
            echo_table(page["items"], SU_COLUMNS)
            if page["total"] > offset + len(page["items"]):
                note(f"{page['total']} in all; use --offset to see more.")

    _run(act)


def _q(value: str) -> str:
    """An id as one path segment, whatever the user typed."""
    return quote(value, safe="")


def _id_option(func: F) -> F:
    return click.option("--id", "id_", required=True, help="The UUID.")(func)


@main.command("get-service-user")
@_id_option
@json_option
@pass_context
def get_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Show one service user."""
    _run(lambda: _show(ctx.client().call("GET", f"/api/v1/service-users/{_q(id_)}"), as_json))


@main.command("update-service-user")
@_id_option
@click.option("--description")
@click.option("--role", type=ROLES)
@click.option("--expires-in", help="New lifetime from now, e.g. 30d.")
@click.option("--expires-at", help="New expiry time, ISO 8601 with zone.")
@click.option("--no-expiry", is_flag=True, help="Remove the expiry.")
@json_option
@pass_context
def update_service_user(
    ctx: Context, id_: str, description: str | None, role: str | None, expires_in: str | None,
    expires_at: str | None, no_expiry: bool, as_json: bool,
) -> None:  # fmt: skip
    """Change a service user's description, role or expiry."""
    body: dict[str, Any] = _expiry(expires_in, expires_at)
    if no_expiry:
        if body:
            raise click.UsageError("--no-expiry cannot be combined with --expires-in/--expires-at")
        body["expires_at"] = None
    if description is not None:
        body["description"] = description
    if role is not None:
        body["role"] = role
    if not body:
        raise click.UsageError("nothing to change: give --description, --role or an expiry")
    _update(ctx, id_, body, as_json)


def _update(ctx: Context, id_: str, body: dict[str, Any], as_json: bool) -> None:
    path = f"/api/v1/service-users/{_q(id_)}"
    _run(lambda: _show(ctx.client().call("PUT", path, body=body), as_json))


@main.command("deactivate-service-user")
@_id_option
@json_option
@pass_context
def deactivate_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Stop a service user's key and tokens from working (reversible)."""
    _update(ctx, id_, {"active": False}, as_json)


@main.command("activate-service-user")
@_id_option
@json_option
@pass_context
def activate_service_user(ctx: Context, id_: str, as_json: bool) -> None:
    """Let a deactivated service user authenticate again."""
    _update(ctx, id_, {"active": True}, as_json)


@main.command("rotate-service-user-key")
@_id_option
@json_option
@pass_context
def rotate_service_user_key(ctx: Context, id_: str, as_json: bool) -> None:
    """Issue a new key (printed once); the old key and its tokens stop working now."""
    path = f"/api/v1/service-users/{_q(id_)}/rotate"
    _run(lambda: _show_key(ctx.client().call("POST", path), as_json))


def _confirm(yes: bool, what: str) -> None:
    if not yes and not click.confirm(f"Delete {what}? This cannot be undone", err=True):
        note("Nothing deleted.")
        sys.exit(1)


@main.command("delete-service-user")
@_id_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def delete_service_user(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a service user."""
    _confirm(yes, f"service user {id_}")
    _delete(ctx, f"/api/v1/service-users/{_q(id_)}", id_, as_json)


def _delete(ctx: Context, path: str, id_: str, as_json: bool) -> None:
    def act() -> None:
        ctx.client().call("DELETE", path)
        echo_json({"deleted": id_}) if as_json else note(f"Deleted {id_}.")

    _run(act)


# -- users -----------------------------------------------------------------------------------


@main.command("create-user")
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
    _run(lambda: _show(ctx.client().call("POST", "/api/v1/users", body=body), as_json))


@main.command("list-users")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@pass_context
def list_users(ctx: Context, limit: int, offset: int, as_json: bool) -> None:
    """List human administrators."""

    def act() -> None:
        page = ctx.client().call("GET", "/api/v1/users", query={"limit": limit, "offset": offset})
        if as_json:
            echo_json(page)
        else:
            echo_table(page["items"], ("id", "username", "role", "tenant", "last_login_at"))

    _run(act)


@main.command("delete-user")
@_id_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def delete_user(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a human administrator."""
    _confirm(yes, f"user {id_}")
    _delete(ctx, f"/api/v1/users/{_q(id_)}", id_, as_json)


@main.command("change-password")
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

    def act() -> None:
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
        answer = client.call("PUT", f"/api/v1/users/{_q(target)}/password", body=body)
        if target == me and client.session:
            # The gateway ends every session of the account, this one included; the note said
            # "other sessions" and kept the dead token, so the next command failed with a bare 401.
            ctx.sessions.remove(ctx.url)
            message = (
                "Password changed. Every session of this account has ended, this one included: "
                "run `pangolin-admin login` again."
            )
        else:
            message = "Password changed; that user's sessions have ended."
        echo_json(answer) if as_json else note(message)

    _run(act)


# -- tenants and audit -----------------------------------------------------------------------


@main.command("create-tenant")
@click.option("--name", required=True)
@json_option
@pass_context
def create_tenant(ctx: Context, name: str, as_json: bool) -> None:
    """Create a tenant (Root)."""
    _run(lambda: _show(ctx.client().call("POST", "/api/v1/tenants", body={"name": name}), as_json))


@main.command("list-tenants")
@json_option
@pass_context
def list_tenants(ctx: Context, as_json: bool) -> None:
    """List tenants."""

    def act() -> None:
        page = ctx.client().call("GET", "/api/v1/tenants")
        echo_json(page) if as_json else echo_table(page["items"], ("id", "name", "created_at"))

    _run(act)


@main.command("delete-tenant")
@_id_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@pass_context
def delete_tenant(ctx: Context, id_: str, yes: bool, as_json: bool) -> None:
    """Delete a tenant that has no identities left (Root). --id takes the id or the name."""
    _confirm(yes, f"tenant {id_}")
    _delete(ctx, f"/api/v1/tenants/{_q(id_)}", id_, as_json)


@main.command()
@click.option("--actor", help="Principal id.")
@click.option("--action", help="e.g. service_user.rotate, login, auth.failure")
@click.option("--target", help="Target id.")
@click.option("--since", help="ISO 8601 time with zone.")
@click.option("--outcome", type=click.Choice(["success", "failure"]))
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@json_option
@pass_context
def audit(
    ctx: Context, actor: str | None, action: str | None, target: str | None, since: str | None,
    outcome: str | None, limit: int, offset: int, as_json: bool,
) -> None:  # fmt: skip
    """Show the audit log, newest first."""
    query = {"actor": actor, "action": action, "target": target, "since": since,
             "outcome": outcome, "limit": limit, "offset": offset}  # fmt: skip

    def act() -> None:
        page = ctx.client().call("GET", "/api/v1/audit", query=query)
        if as_json:
            echo_json(page)
        else:
            echo_table(
                page["items"], ("at", "actor", "action", "target_id", "outcome", "client_addr")
            )

    _run(act)
