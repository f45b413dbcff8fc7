"""Identity → Service Users: the list, create (key shown once), a service user's page (with its
access: grants and roles, ``access``), rotate, deactivate / activate, delete.

Every action goes through the same rules as the management API (``management.access``: a
TenantAdmin sees and manages its own tenant only, never grants above its own role) and the same
input models (``management.schemas``); refusals are pages that say so, never an empty list.

A new key exists only in the answer to the POST that made it (create, rotate), served
``no-store``: never in a URL, a cookie, the session or a later page. Reloading that answer
cannot mint a second key: create is refused (the name exists), and rotate carries the key
generation it was shown, so a replay finds the key already rotated.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from ..audit.events import KEY_TARGET, client_details
from ..auth.authz import may_use_catalog
from ..errors import (
    BadRequest,
    Conflicting,
    DomainError,
    GatewayError,
    InvalidInput,
    NotFound,
    describe,
)
from ..identity.models import Principal, Role, ServiceUser
from ..identity.service_users import CreatedKey
from ..management.access import manager, role_and_tenant, target, tenant_scope
from ..management.catalogs import public_base_url
from ..management.grants import check_catalog, scoped_role
from ..management.parsing import read_fields
from ..management.schemas import CreateServiceUser
from ..management.service_users import expiry, requests_per_day
from ..management.trail import audited, record_refusal
from ..state import AUDIT, AUTHENTICATOR, CONFIGURED, GRANTS, SERVICE_USERS, STORE
from ..store import AuditQuery
from .grants import (
    ACCESS_NOTICES,
    AccessSection,
    access_section,
    grant_form,
    read_grant,
)
from .guard import guarded, redirect
from .snippets import snippets
from .views import (
    DAY,
    ServiceUserRow,
    ago,
    exact,
    form_text,
    grantable_roles,
    now,
    render,
    tenant_choices,
    usage_chart,
)

__all__ = ("routes",)

PAGE_SIZE: Final = 50
EXPIRY_PRESETS: Final = (("30", "30 days"), ("90", "90 days"), ("365", "1 year"),
                         ("never", "Never"), ("date", "On a date"))  # fmt: skip
STATUSES: Final = ("active", "deactivated", "expired")
USAGE_DAYS: Final = 14
# The overlaps the rotate form offers (seconds -> label); the API and CLI take any up to 7 d.
GRACE_CHOICES: Final = {0: "no: it stops now", 3600: "1 hour", 86400: "1 day", 604800: "7 days"}


def _row(request: web.Request, user: ServiceUser) -> ServiceUserRow:
    pending = request.app[AUTHENTICATOR].pending_last_used_of(user.id)
    last_used = max(filter(None, (user.last_used_at, pending)), default=None)
    return ServiceUserRow(user=user, now=now(request), last_used_at=last_used)


async def _all_in_scope(request: web.Request, caller: Principal) -> list[ServiceUser]:
    """Every service user the caller may see. The UI filters by name, status and staleness
    in memory: an admin's list is hundreds of rows, not millions."""
    found: list[ServiceUser] = []
    while True:
        page, total = await request.app[SERVICE_USERS].list(
            tenant_id=tenant_scope(caller), limit=1000, offset=len(found)
        )
        found += page
        if not page or len(found) >= total:
            return found


def _int(raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"must be a whole number from {low} to {high}")
    return int(raw)


async def list_page(request: web.Request) -> web.Response:
    caller = manager(request)
    query = request.query
    status = query.get("status", "")
    role = query.get("role", "")
    search = query.get("q", "").strip()
    stale = _int(query.get("stale"), 0, 0, 3650)
    page = _int(query.get("page"), 1, 1, 10**6)
    if status not in ("", *STATUSES):
        raise BadRequest("status: must be active, deactivated or expired")
    if role not in ("", *(r.value for r in Role)):
        raise BadRequest("role: must be Root, TenantAdmin or TenantUser")
    rows = [_row(request, user) for user in await _all_in_scope(request, caller)]
    rows = [
        row for row in rows
        if (not status or row.status == status)
        and (not role or row.user.role.value == role)
        and (not search or search.casefold() in row.user.name.casefold())
        and (not stale or row.unused_for(stale))
    ]  # fmt: skip
    rows.sort(key=lambda row: row.user.name.casefold())
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    return render(request, "service_users/list.html", {
        "rows": shown, "total": len(rows), "page": page,
        "pages": max(1, -(-len(rows) // PAGE_SIZE)),
        "filters": {"status": status, "role": role, "q": search, "stale": stale or ""},
        "statuses": STATUSES, "roles": [r.value for r in Role],
        "deleted": query.get("deleted", ""), "ago": ago, "exact": exact, "now": now(request),
    }, caller=caller)  # fmt: skip


async def new_form(request: web.Request) -> web.Response:
    caller = manager(request)
    # The caller's own tenant preselected: else a Root's form would offer the first by name.
    return await _form(request, caller, {
        "expiry": "90", "role": Role.TENANT_USER.value, "tenant": caller.tenant_name,
    })  # fmt: skip


async def _form(
    request: web.Request,
    caller: Principal,
    values: dict[str, Any],
    *,
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    return render(request, "service_users/new.html", {
        "values": values, "error": error, "roles": [r.value for r in grantable_roles(caller)],
        "tenants": await tenant_choices(request, caller), "presets": EXPIRY_PRESETS,
    }, status=status, caller=caller)  # fmt: skip


def _expiry_fields(form: Any) -> dict[str, Any]:
    """The form's expiry choice as the API's fields (``expires_in`` / ``expires_at``)."""
    choice = form_text(form, "expiry")
    if choice == "never":
        return {"expires_at": None}
    if choice in ("30", "90", "365"):
        return {"expires_in": int(choice) * DAY}
    if choice == "date":
        day = form_text(form, "expires_on")
        if not day:
            raise BadRequest("expires_at: choose a date")
        return {"expires_at": f"{day}T00:00:00Z"}
    raise BadRequest("expires_at: choose when the key expires")


@audited("service_user.create", "service_user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    form = await request.post()
    values = {name: form_text(form, name) for name in
              ("name", "description", "role", "tenant", "expiry", "expires_on",
               "allowed_networks", "rate_limit")}  # fmt: skip
    try:
        fields: dict[str, Any] = {
            "name": values["name"], "description": values["description"],
            "allowed_networks": values["allowed_networks"].split(),  # one per line
            **_expiry_fields(form), **_rate_field(values["rate_limit"]),
        }  # fmt: skip
        for name in ("role", "tenant"):
            if values[name]:  # left out: the caller's own tenant, TenantUser
                fields[name] = values[name]
        body = read_fields(CreateServiceUser, fields)
        role, tenant = role_and_tenant(caller, body.role, body.tenant, Role.TENANT_USER)
        _, expires_at = expiry(body, now(request))  # the API's rule for the two fields
        created = await request.app[SERVICE_USERS].create(
            name=body.name, role=role, tenant=tenant, description=body.description,
            expires_at=expires_at, allowed_networks=body.allowed_networks,
            rate_limit=body.rate_limit, actor=caller.id, client=client_details(request),
        )  # fmt: skip
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 409):
            raise
        # Shown again with the error rather than raised: record the refusal as raising would.
        record_refusal(request, "service_user.create", "service_user", exc)
        return await _form(request, caller, values, error=message, status=status)
    return _key_page(request, caller, created, "created")


def _rate_field(text: str) -> dict[str, Any]:
    """The form's rate limit as the API's field (empty: left out, the default); text that is
    no number goes on as text, for the API's own message."""
    text = text.strip()
    if not text:
        return {}
    try:
        return {"rate_limit": float(text)}
    except ValueError:
        return {"rate_limit": text}


def _key_page(
    request: web.Request, caller: Principal, created: CreatedKey, what: str
) -> web.Response:
    """The one page that ever shows the key: a dialog that only "I have copied the key"
    closes (no Escape, no click outside), with ready-to-paste client settings."""
    user = created.user
    settings = request.app[CONFIGURED].settings
    usable = [name for name, catalog in sorted(settings.catalogs.items())
              if may_use_catalog(user.principal(), catalog)]  # fmt: skip
    catalog = settings.default_catalog if settings.default_catalog in usable else (
        usable[0] if usable else None)  # fmt: skip
    key = created.api_key.plaintext()
    clients = (
        snippets(public_base_url(request), catalog, user.id, key) if catalog is not None else None
    )
    return render(request, "service_users/key.html", {
        "user": user, "key": key, "what": what, "clients": clients, "catalogs": usable,
        "exact": exact,
    }, caller=caller)  # fmt: skip


async def detail(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await target(request, request.app[SERVICE_USERS].get, "service user", mutate=False)
    return await _detail_page(request, caller, user, await access_section(request, user))


async def _detail_page(
    request: web.Request,
    caller: Principal,
    user: ServiceUser,
    access: AccessSection,
    *,
    status: int = 200,
) -> web.Response:
    await request.app[AUDIT].flush()  # recent failures may still be queued in memory
    trail, _ = await request.app[STORE].query_audit(
        AuditQuery(tenant_id=tenant_scope(caller), target=user.id), limit=50, offset=0
    )
    failures, _ = await request.app[STORE].query_audit(
        # Only what the gateway recorded against the key id (a refused key), never records
        # whose target a client chose (a path id that happens to be the key id).
        AuditQuery(target=user.key_id, target_type=KEY_TARGET, outcome="failure"),
        limit=20,
        offset=0,
    )
    usage = usage_chart(await requests_per_day(request, user, USAGE_DAYS))
    return render(request, "service_users/detail.html", {
        "row": _row(request, user), "trail": trail, "failures": failures, "ago": ago,
        "exact": exact, "now": now(request), "usage": usage, "access": access,
        "limits": request.app[CONFIGURED].settings.limits,
        "notice": ACCESS_NOTICES.get(request.query.get("done", "")),
    }, status=status, caller=caller)  # fmt: skip


async def _mutable(request: web.Request) -> ServiceUser:
    return await target(request, request.app[SERVICE_USERS].get, "service user", mutate=True)


async def rotate_form(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    return render(
        request, "service_users/rotate.html",
        {"user": user, "graces": GRACE_CHOICES, "exact": exact, "now": now(request)},
        caller=caller,
    )  # fmt: skip


@audited("service_user.rotate", "service_user")
async def rotate(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    form = await request.post()
    if form_text(form, "generation") != str(user.key_generation):
        raise Conflicting("This key was rotated already: its new key was shown then. Rotate "
                          "again to get another one.")  # fmt: skip
    grace = form_text(form, "grace") or "0"
    if not grace.isdigit() or int(grace) not in GRACE_CHOICES:
        raise InvalidInput("grace", "choose one of the offered overlaps")
    created = await request.app[SERVICE_USERS].rotate(
        user.id, actor=caller.id, client=client_details(request), grace_seconds=int(grace)
    )
    return _key_page(request, caller, created, "rotated")


@audited("service_user.update", "service_user")
async def set_active(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    form = await request.post()
    wanted = form_text(form, "active")
    if wanted not in ("true", "false"):
        raise BadRequest("active: must be true or false")
    await request.app[SERVICE_USERS].update(
        user.id, {"active": wanted == "true"}, actor=caller.id, client=client_details(request)
    )
    back = form_text(form, "back")
    return redirect(back if back.startswith("/ui/service-users") else "/ui/service-users")


async def delete_form(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    return render(request, "service_users/delete.html", {"user": user}, caller=caller)


@audited("service_user.delete", "service_user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    form = await request.post()
    # The confirmation names the service user: typing it proves the right row was meant.
    if form_text(form, "confirm_name") != user.name:
        raise BadRequest("Type the service user's name to confirm")
    await request.app[SERVICE_USERS].delete(
        user.id, actor=caller.id, client=client_details(request)
    )
    return redirect(f"/ui/service-users?{urlencode({'deleted': user.name})}")


# -- its access: grants and roles -------------------------------------------------------------


def _access_changed(user: ServiceUser, done: str) -> web.Response:
    return redirect(f"/ui/service-users/{user.id}?{urlencode({'done': done})}#access")


@audited("grant.create", "grant")
async def add_grant(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    values = grant_form(await request.post())
    try:
        spec = read_grant(values)
        check_catalog(request, spec, user.tenant_name)  # the API's rule for a grant's catalog
        await request.app[GRANTS].grant(
            user, catalog=spec.catalog, resource=spec.resource, action=spec.action,
            actor=caller.id, client=client_details(request),
        )  # fmt: skip
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        if status not in (400, 409):
            raise
        # Shown again with the error rather than raised: record the refusal as raising would.
        record_refusal(request, "grant.create", "grant", exc)
        section = await access_section(request, user, values=values, error=message)
        return await _detail_page(request, caller, user, section, status=status)
    return _access_changed(user, "granted")


@audited("grant.delete", "grant")
async def revoke_grant(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    access = request.app[GRANTS]
    grant = await access.get_grant(request.match_info["grant_id"])
    # Only a grant of this service user's own, from its page (a role's is the role's).
    if (grant.subject_type, grant.subject_id) != ("service_user", user.id):
        raise NotFound("No such grant")
    await access.revoke(grant.id, actor=caller.id, client=client_details(request))
    return _access_changed(user, "revoked")


@audited("role.assign", "role")
async def add_role(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    role = await scoped_role(request, caller, form_text(await request.post(), "role"))
    # Giving a role it already holds changes nothing, as the API's PUT.
    await request.app[GRANTS].assign(role, user, actor=caller.id, client=client_details(request))
    return _access_changed(user, "role-added")


@audited("role.unassign", "role")
async def remove_role(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _mutable(request)
    role = await scoped_role(request, caller, request.match_info["role_id"])
    await request.app[GRANTS].unassign(role, user, actor=caller.id, client=client_details(request))
    return _access_changed(user, "role-removed")


def routes() -> list[web.RouteDef]:
    base = "/ui/service-users"
    return [
        web.get(base, guarded(list_page)),
        web.get(base + "/new", guarded(new_form)),
        web.post(base, guarded(create)),
        web.get(base + "/{id}", guarded(detail)),
        web.get(base + "/{id}/rotate", guarded(rotate_form)),
        web.post(base + "/{id}/rotate", guarded(rotate)),
        web.post(base + "/{id}/active", guarded(set_active)),
        web.get(base + "/{id}/delete", guarded(delete_form)),
        web.post(base + "/{id}/delete", guarded(delete)),
        web.post(base + "/{id}/grants", guarded(add_grant)),
        web.post(base + "/{id}/grants/{grant_id}/revoke", guarded(revoke_grant)),
        web.post(base + "/{id}/roles", guarded(add_role)),
        web.post(base + "/{id}/roles/{role_id}/remove", guarded(remove_role)),
    ]
