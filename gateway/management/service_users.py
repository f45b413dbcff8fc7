"""``/api/v1/service-users``: create, list, get, update, rotate and delete machine identities.

A new key is in the answer to create and rotate only, with ``Cache-Control: no-store``; no
answer ever carries a key digest or an old key.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..audit.events import client_details
from ..auth.authenticator import day_number, utc_day
from ..errors import BadRequest, NotFound
from ..identity.models import Role, ServiceUser
from ..identity.service_users import CreatedKey
from ..state import AUTHENTICATOR, CLOCK, SERVICE_USERS
from .access import check_role_given, manager, role_and_tenant, target, tenant_scope
from .grants import check_catalog
from .operations import Operation
from .parsing import read_body, read_query
from .schemas import (
    NO_STORE,
    CreateServiceUser,
    KeyAnswer,
    Prune,
    PruneAnswer,
    RotateKey,
    ServiceUserPage,
    ServiceUserQuery,
    ServiceUserView,
    UpdateServiceUser,
    Usage,
    UsageDay,
    UsageQuery,
)
from .trail import audited

__all__ = ("OPERATIONS", "expiry", "requests_per_day")


def _view(request: web.Request, user: ServiceUser) -> ServiceUserView:
    pending = request.app[AUTHENTICATOR].pending_last_used_of(user.id)
    return ServiceUserView.of(user, request.app[CLOCK](), pending)


def _created(request: web.Request, created: CreatedKey, status: int) -> web.Response:
    answer = KeyAnswer(
        service_user=_view(request, created.user), api_key=created.api_key.plaintext()
    )
    return web.json_response(answer.model_dump(mode="json"), status=status, headers=NO_STORE)


def expiry(body: CreateServiceUser | UpdateServiceUser, now: float) -> tuple[bool, float | None]:
    """(given, expires_at) from ``expires_at`` (a time or null) or ``expires_in`` (seconds)."""
    given = body.model_fields_set
    if "expires_at" in given and "expires_in" in given:
        raise BadRequest("expires_at: give either expires_at or expires_in, not both")
    if "expires_in" in given:
        return True, None if body.expires_in is None else now + body.expires_in
    if "expires_at" in given:
        return True, body.expires_at  # read to epoch seconds by the model (schemas.ExpiresAt)
    return False, None


async def _target(request: web.Request, *, mutate: bool) -> ServiceUser:
    return await target(request, request.app[SERVICE_USERS].get, "service user", mutate=mutate)


@audited("service_user.create", "service_user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, CreateServiceUser)
    role, tenant = role_and_tenant(caller, body.role, body.tenant, Role.TENANT_USER)
    _, expires_at = expiry(body, request.app[CLOCK]())
    for spec in body.grants:
        check_catalog(request, spec, tenant)
    created = await request.app[SERVICE_USERS].create(
        name=body.name, role=role, tenant=tenant, description=body.description,
        expires_at=expires_at, actor=caller.id, client=client_details(request),
        grants=[(g.catalog, g.resource, g.action) for g in body.grants], roles=body.roles,
        allowed_networks=body.allowed_networks, rate_limit=body.rate_limit,
        rate_burst=body.rate_burst,
    )  # fmt: skip
    return _created(request, created, 201)


async def list_(request: web.Request) -> web.Response:
    caller = manager(request)
    query = read_query(request, ServiceUserQuery)
    tenant_id = tenant_scope(caller)
    if query.unused_for is not None:
        # Uses counted here and not yet written count: a key in use is not stale.
        await request.app[AUTHENTICATOR].flush_last_used()
    users, total = await request.app[SERVICE_USERS].list(
        tenant_id=tenant_id,
        tenant_name=query.tenant if tenant_id is None else None,
        active=query.active,
        role=query.role,
        unused_for=query.unused_for,
        expiring_within=query.expiring_within,
        limit=query.limit,
        offset=query.offset,
    )
    page = ServiceUserPage(
        items=[_view(request, user) for user in users],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )
    return web.json_response(page.model_dump(mode="json"))


async def get(request: web.Request) -> web.Response:
    user = await _target(request, mutate=False)
    return web.json_response(_view(request, user).model_dump(mode="json"))


async def requests_per_day(
    request: web.Request, user: ServiceUser, days: int
) -> list[tuple[str, int]]:
    """(UTC day, requests) for the last ``days`` days, oldest first, every day present: what
    the store holds plus what this process counted and has not flushed yet (other processes'
    pending counts appear after their next flush, store.last_used_flush_seconds)."""
    today = day_number(request.app[CLOCK]())
    names = [utc_day(n) for n in range(today - days + 1, today + 1)]
    stored = await request.app[SERVICE_USERS].usage(user.id, since=names[0])
    pending = request.app[AUTHENTICATOR].pending_requests_of(user.id)
    return [(day, stored.get(day, 0) + pending.get(day, 0)) for day in names]


async def usage(request: web.Request) -> web.Response:
    user = await _target(request, mutate=False)
    query = read_query(request, UsageQuery)
    days = await requests_per_day(request, user, query.days)
    answer = Usage(days=[UsageDay(day=day, requests=count) for day, count in days])
    return web.json_response(answer.model_dump(mode="json"))


@audited("service_user.update", "service_user")
async def update(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    body = await read_body(request, UpdateServiceUser)
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    for field in ("role", "description", "active", "allowed_networks"):
        if field in given:  # never null (schemas: _refuse_nulls)
            changes[field] = getattr(body, field)
    for field in ("rate_limit", "rate_burst"):
        if field in given:  # null: back to the configured default
            changes[field] = getattr(body, field)
    if "role" in changes:
        check_role_given(caller, changes["role"])
    expiry_given, expires_at = expiry(body, request.app[CLOCK]())
    if expiry_given:
        changes["expires_at"] = expires_at
    if not changes:
        raise BadRequest(
            "Nothing to update: give description, role, active, expires_at, allowed_networks,"
            " rate_limit or rate_burst"
        )
    updated = await request.app[SERVICE_USERS].update(
        user.id, changes, actor=caller.id, client=client_details(request)
    )
    return web.json_response(_view(request, updated).model_dump(mode="json"))


@audited("service_user.rotate", "service_user")
async def rotate(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    body = await read_body(request, RotateKey)
    created = await request.app[SERVICE_USERS].rotate(
        user.id, actor=caller.id, client=client_details(request), grace_seconds=body.grace_seconds
    )
    return _created(request, created, 200)


@audited("service_user.prune", "service_user")
async def prune(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, Prune)
    tenant_id = tenant_scope(caller)
    if tenant_id is not None and body.tenant not in (None, caller.tenant_name):
        raise NotFound("No such tenant")
    # As for the stale list: this process's uses not yet written count. (Another worker's
    # are written every store.last_used_flush_seconds.)
    await request.app[AUTHENTICATOR].flush_last_used()
    gone, kept = await request.app[SERVICE_USERS].prune(
        body.unused_for, tenant_id=tenant_id,
        tenant_name=body.tenant if tenant_id is None else None, highest=caller.role,
        dry_run=body.dry_run, actor=caller.id, client=client_details(request),
    )  # fmt: skip
    answer = PruneAnswer(
        dry_run=body.dry_run,
        deactivated=[_view(request, user) for user in gone],
        kept=[_view(request, user) for user in kept],
    )
    return web.json_response(answer.model_dump(mode="json"))


@audited("service_user.delete", "service_user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    await request.app[SERVICE_USERS].delete(
        user.id, actor=caller.id, client=client_details(request)
    )
    return web.Response(status=204)


_BASE = "/api/v1/service-users"
_CONFLICTS = (400, 401, 403, 404, 409)
OPERATIONS = (
    Operation("POST", _BASE, create, "Create a service user; the key is in the answer, once",
              201, KeyAnswer, body=CreateServiceUser, errors=_CONFLICTS, no_store=True),
    Operation("GET", _BASE, list_, "List service users", 200, ServiceUserPage,
              query=ServiceUserQuery),
    Operation("POST", _BASE + "/prune", prune,
              "Deactivate the service users not used for unused_for seconds (or, with "
              "dry_run, list them)", 200, PruneAnswer, body=Prune),
    Operation("GET", _BASE + "/{id}", get, "Get a service user", 200, ServiceUserView),
    Operation("GET", _BASE + "/{id}/usage", usage,
              "Requests per UTC day, oldest first, every day present", 200, Usage,
              query=UsageQuery),
    Operation("PUT", _BASE + "/{id}", update,
              "Update description, role, expiry, active or the allowlist",
              200, ServiceUserView, body=UpdateServiceUser, errors=_CONFLICTS),
    Operation("DELETE", _BASE + "/{id}", delete, "Delete a service user", 204, None,
              errors=_CONFLICTS),
    Operation("POST", _BASE + "/{id}/rotate", rotate,
              "New key, shown once; the old key and its tokens stop working now, or after"
              " grace_seconds", 200, KeyAnswer, body=RotateKey, errors=_CONFLICTS,
              no_store=True),
)  # fmt: skip
