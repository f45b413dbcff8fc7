"""Identity → Users (human administrators): list, create, change a password, delete; with the
management API's rules (``management.access``) and input models."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..audit.events import client_details
from ..errors import BadRequest, DomainError, Forbidden, GatewayError, describe
from ..identity.models import Principal, Role, User
from ..management.access import manager, principal, role_and_tenant, target, tenant_scope
from ..management.parsing import read_fields
from ..management.schemas import ChangePassword, CreateUser
from ..management.trail import audited, record_refusal
from ..state import USERS
from .guard import guarded, redirect
from .views import ago, exact, form_text, grantable_roles, now, render, tenant_choices

__all__ = ("routes",)


async def list_page(request: web.Request) -> web.Response:
    caller = manager(request)
    users, total = await request.app[USERS].list(
        tenant_id=tenant_scope(caller), limit=1000, offset=0
    )
    return render(request, "users/list.html", {
        "users": sorted(users, key=lambda u: u.username.casefold()), "total": total,
        "ago": ago, "exact": exact, "now": now(request), "done": request.query.get("done", ""),
    }, caller=caller)  # fmt: skip


async def _new(
    request: web.Request, caller: Principal, values: dict[str, str], error: str | None = None,
    status: int = 200,
) -> web.Response:  # fmt: skip
    return render(request, "users/new.html", {
        "values": values, "error": error, "roles": [r.value for r in grantable_roles(caller)],
        "tenants": await tenant_choices(request, caller),
    }, status=status, caller=caller)  # fmt: skip


async def new_form(request: web.Request) -> web.Response:
    caller = manager(request)
    # The caller's own tenant preselected: else a Root's form would offer the first by name.
    return await _new(
        request, caller, {"role": Role.TENANT_ADMIN.value, "tenant": caller.tenant_name}
    )


@audited("user.create", "user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    form = await request.post()
    values = {name: form_text(form, name) for name in ("username", "role", "tenant")}
    try:
        fields: dict[str, Any] = {"username": values["username"],
                                  "password": form_text(form, "password")}  # fmt: skip
        for name in ("role", "tenant"):
            if values[name]:
                fields[name] = values[name]
        body = read_fields(CreateUser, fields)
        role, tenant = role_and_tenant(caller, body.role, body.tenant, Role.TENANT_ADMIN)
        await request.app[USERS].create(
            username=body.username, password=body.password, role=role, tenant=tenant,
            actor=caller.id, client=client_details(request),
        )  # fmt: skip
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 409):
            raise
        record_refusal(request, "user.create", "user", exc)
        return await _new(request, caller, values, message, status)
    return redirect("/ui/users?done=created")


def _own(request: web.Request, caller: Principal) -> bool:
    return request.match_info["id"] == caller.id and caller.type == "user"


async def _password_target(request: web.Request, caller: Principal) -> User:
    if _own(request, caller):
        return await request.app[USERS].get(caller.id)
    return await target(request, request.app[USERS].get, "user", mutate=True)


async def password_form(request: web.Request) -> web.Response:
    caller = principal(request)
    user = await _password_target(request, caller)
    return render(request, "users/password.html",
                  {"user": user, "own": _own(request, caller)}, caller=caller)  # fmt: skip


@audited("user.change_password", "user")
async def change_password(request: web.Request) -> web.Response:
    """Users change their own password (giving the current one); managers reset others'. Either
    way every session of that user ends: one's own included, so one logs in again."""
    caller = principal(request)
    user = await _password_target(request, caller)
    form = await request.post()
    own = _own(request, caller)
    try:
        fields: dict[str, Any] = {"password": form_text(form, "password")}
        if own:
            fields["current_password"] = form_text(form, "current_password")
        body = read_fields(ChangePassword, fields)
        if own and not await request.app[USERS].verify_current_password(
            user, body.current_password or ""
        ):
            raise Forbidden("Forbidden: current_password is wrong or missing")
        await request.app[USERS].change_password(
            user.id, body.password, actor=caller.id, client=client_details(request)
        )
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 403):
            raise
        record_refusal(request, "user.change_password", "user", exc)
        return render(request, "users/password.html",
                      {"user": user, "own": own, "error": message},
                      status=status, caller=caller)  # fmt: skip
    return redirect("/ui/login" if own else "/ui/users?done=password")


@audited("user.update", "user")
async def set_active(request: web.Request) -> web.Response:
    """Deactivate a user (every session of theirs ends at once) or activate them again."""
    caller = manager(request)
    user = await target(request, request.app[USERS].get, "user", mutate=True)
    form = await request.post()
    wanted = form_text(form, "active")
    if wanted not in ("true", "false"):
        raise BadRequest("active: must be true or false")
    if user.id == caller.id and wanted == "false":
        raise BadRequest("You cannot deactivate yourself")
    await request.app[USERS].set_active(
        user.id, wanted == "true", actor=caller.id, client=client_details(request)
    )
    return redirect("/ui/users?done=" + ("activated" if wanted == "true" else "deactivated"))


async def delete_form(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await target(request, request.app[USERS].get, "user", mutate=True)
    return render(request, "users/delete.html", {"user": user}, caller=caller)


@audited("user.delete", "user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await target(request, request.app[USERS].get, "user", mutate=True)
    if user.id == caller.id:
        raise BadRequest("You cannot delete yourself")
    await request.app[USERS].delete(user.id, actor=caller.id, client=client_details(request))
    return redirect("/ui/users?done=deleted")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ui/users", guarded(list_page)),
        web.get("/ui/users/new", guarded(new_form)),
        web.post("/ui/users", guarded(create)),
        web.get("/ui/users/{id}/password", guarded(password_form)),
        web.post("/ui/users/{id}/password", guarded(change_password)),
        web.post("/ui/users/{id}/active", guarded(set_active)),
        web.get("/ui/users/{id}/delete", guarded(delete_form)),
        web.post("/ui/users/{id}/delete", guarded(delete)),
    ]
