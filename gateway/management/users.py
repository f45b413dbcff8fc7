"""``/api/v1/users`` (human administrators) and ``/api/v1/login``."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..audit.events import client_details
from ..errors import BadRequest, Forbidden, LoginFailed
from ..identity.models import Role, User
from ..state import SETTINGS, TOKENS, USERS
from .access import manager, principal, role_and_tenant, target, tenant_scope
from .schemas import NO_STORE, Field, page_params, read_body, user_json
from .trail import audited

__all__ = ("routes",)

_CREATE: Final = {
    "username": Field(str, required=True),
    "password": Field(str, required=True),
    "role": Field(str),
    "tenant": Field(str),
}
_PASSWORD: Final = {"password": Field(str, required=True), "current_password": Field(str)}
_LOGIN: Final = {"username": Field(str, required=True), "password": Field(str, required=True)}


async def _target(request: web.Request, *, mutate: bool) -> User:
    return await target(request, request.app[USERS].get, "user", mutate=mutate)


@audited("user.create", "user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, _CREATE)
    role, tenant = role_and_tenant(caller, body, Role.TENANT_ADMIN)
    user = await request.app[USERS].create(
        username=body["username"], password=body["password"], role=role, tenant=tenant,
        actor=caller.id, client=client_details(request),
    )  # fmt: skip
    return web.json_response(user_json(user), status=201)


async def list_(request: web.Request) -> web.Response:
    caller = manager(request)
    limit, offset = page_params(request)
    users, total = await request.app[USERS].list(
        tenant_id=tenant_scope(caller), limit=limit, offset=offset
    )
    return web.json_response(
        {"items": [user_json(u) for u in users], "total": total, "limit": limit, "offset": offset}
    )


async def get(request: web.Request) -> web.Response:
    return web.json_response(user_json(await _target(request, mutate=False)))


@audited("user.delete", "user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    if user.id == caller.id:
        raise BadRequest("You cannot delete yourself")
    await request.app[USERS].delete(user.id, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


@audited("user.change_password", "user")
async def change_password(request: web.Request) -> web.Response:
    """Users change their own password (giving the current one); managers reset others'."""
    caller = principal(request)
    users = request.app[USERS]
    body = await read_body(request, _PASSWORD)
    if request.match_info["id"] == caller.id and caller.type == "user":
        user = await users.get(caller.id)
        current = body.get("current_password")
        if current is None or not await users.verify_current_password(user, current):
            raise Forbidden("Forbidden: current_password is wrong or missing")
    else:
        user = await _target(request, mutate=True)
    updated = await users.change_password(
        user.id, body["password"], actor=caller.id, client=client_details(request)
    )
    return web.json_response(user_json(updated))


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, _LOGIN)
    user = await request.app[USERS].login(
        body["username"], body["password"], client_details(request)
    )
    if user is None:
        raise LoginFailed()
    lifetime = request.app[SETTINGS].tokens.session_lifetime_seconds
    issued = request.app[TOKENS].issue(user.principal(), "session", lifetime=lifetime)
    return web.json_response(
        {
            "token": issued.access_token,
            "token_type": "bearer",
            "expires_in": issued.expires_in,
            "user": user_json(user),
        },
        headers=NO_STORE,
    )


def routes() -> list[web.RouteDef]:
    return [
        web.post("/api/v1/users", create),
        web.get("/api/v1/users", list_),
        web.get("/api/v1/users/{id}", get),
        web.delete("/api/v1/users/{id}", delete),
        web.put("/api/v1/users/{id}/password", change_password),
        web.post("/api/v1/login", login),
    ]
