"""``/api/v1/service-users``: create, list, get, update, rotate and delete machine identities.

A new key is in the answer to create and rotate only, with ``Cache-Control: no-store``; no
answer ever carries a key digest or an old key.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from ..audit.events import client_details
from ..errors import BadRequest
from ..identity.models import Role, ServiceUser
from ..identity.service_users import CreatedKey
from ..state import AUTHENTICATOR, CLOCK, SERVICE_USERS
from .access import check_grant, manager, role_and_tenant, target, tenant_scope
from .schemas import (
    NO_STORE,
    Field,
    bool_param,
    expiry,
    page_params,
    parse_role,
    read_body,
    service_user_json,
)
from .trail import audited

__all__ = ("routes",)


_CREATE: Final = {
    "name": Field(str, required=True),
    "role": Field(str),
    "description": Field(str),
    "tenant": Field(str),
    "expires_at": Field(str, nullable=True),
    "expires_in": Field((int, float), nullable=True),
}
_UPDATE: Final = {
    "description": Field(str),
    "role": Field(str),
    "active": Field(bool),
    "expires_at": Field(str, nullable=True),
    "expires_in": Field((int, float), nullable=True),
}


def _json(request: web.Request, user: ServiceUser) -> dict[str, Any]:
    pending = request.app[AUTHENTICATOR].pending_last_used_of(user.id)
    return service_user_json(user, pending)


def _created(request: web.Request, created: CreatedKey, status: int) -> web.Response:
    return web.json_response(
        {"service_user": _json(request, created.user), "api_key": created.api_key.plaintext()},
        status=status,
        headers=NO_STORE,
    )


async def _target(request: web.Request, *, mutate: bool) -> ServiceUser:
    return await target(request, request.app[SERVICE_USERS].get, "service user", mutate=mutate)


@audited("service_user.create", "service_user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, _CREATE)
    role, tenant = role_and_tenant(caller, body, Role.TENANT_USER)
    _, expires_at = expiry(body, request.app[CLOCK]())
    created = await request.app[SERVICE_USERS].create(
        name=body["name"], role=role, tenant=tenant, description=body.get("description", ""),
        expires_at=expires_at, actor=caller.id, client=client_details(request),
    )  # fmt: skip
    return _created(request, created, 201)


async def list_(request: web.Request) -> web.Response:
    caller = manager(request)
    limit, offset = page_params(request)
    role = request.query.get("role")
    tenant_id = tenant_scope(caller)
    users, total = await request.app[SERVICE_USERS].list(
        tenant_id=tenant_id,
        tenant_name=request.query.get("tenant") if tenant_id is None else None,
        active=bool_param(request, "active"),
        role=parse_role(role) if role is not None else None,
        limit=limit,
        offset=offset,
    )
    return web.json_response(
        {
            "items": [_json(request, user) for user in users],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


async def get(request: web.Request) -> web.Response:
    return web.json_response(_json(request, await _target(request, mutate=False)))


@audited("service_user.update", "service_user")
async def update(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    body = await read_body(request, _UPDATE)
    changes: dict[str, Any] = {}
    if "role" in body:
        changes["role"] = parse_role(body["role"])
        check_grant(caller, changes["role"])
    if "description" in body:
        changes["description"] = body["description"]
    if "active" in body:
        changes["active"] = body["active"]
    given, expires_at = expiry(body, request.app[CLOCK]())
    if given:
        changes["expires_at"] = expires_at
    if not changes:
        raise BadRequest("Nothing to update: give description, role, active or expires_at")
    updated = await request.app[SERVICE_USERS].update(
        user.id, changes, actor=caller.id, client=client_details(request)
    )
    return web.json_response(_json(request, updated))


@audited("service_user.rotate", "service_user")
async def rotate(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    created = await request.app[SERVICE_USERS].rotate(
        user.id, actor=caller.id, client=client_details(request)
    )
    return _created(request, created, 200)


@audited("service_user.delete", "service_user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    await request.app[SERVICE_USERS].delete(
        user.id, actor=caller.id, client=client_details(request)
    )
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    base = "/api/v1/service-users"
    return [
        web.post(base, create),
        web.get(base, list_),
        web.get(base + "/{id}", get),
        web.put(base + "/{id}", update),
        web.delete(base + "/{id}", delete),
        web.post(base + "/{id}/rotate", rotate),
    ]
