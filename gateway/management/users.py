"""``/api/v1/users`` (human administrators), ``/api/v1/login`` and ``/api/v1/logout``."""

from __future__ import annotations

from aiohttp import web

from ..audit.events import client_details
from ..auth.credentials import parse_credentials
from ..errors import BadRequest, Forbidden, LoginFailed
from ..identity.models import Role, User
from ..state import AUTH, SESSIONS, USERS
from .access import manager, principal, role_and_tenant, target, tenant_scope
from .operations import Operation
from .parsing import read_body, read_query
from .schemas import (
    NO_STORE,
    ChangePassword,
    CreateUser,
    Login,
    LoginAnswer,
    Paging,
    UpdateUser,
    UserPage,
    UserView,
)
from .trail import audited

__all__ = ("OPERATIONS",)


def _json(user: User) -> web.Response:
    return web.json_response(UserView.of(user).model_dump(mode="json"))


async def _target(request: web.Request, *, mutate: bool) -> User:
    return await target(request, request.app[USERS].get, "user", mutate=mutate)


@audited("user.create", "user")
async def create(request: web.Request) -> web.Response:
    caller = manager(request)
    body = await read_body(request, CreateUser)
    role, tenant = role_and_tenant(caller, body.role, body.tenant, Role.TENANT_ADMIN)
    user = await request.app[USERS].create(
        username=body.username, password=body.password, role=role, tenant=tenant,
        actor=caller.id, client=client_details(request),
    )  # fmt: skip
    return web.json_response(UserView.of(user).model_dump(mode="json"), status=201)


async def list_(request: web.Request) -> web.Response:
    caller = manager(request)
    query = read_query(request, Paging)
    users, total = await request.app[USERS].list(
        tenant_id=tenant_scope(caller), limit=query.limit, offset=query.offset
    )
    page = UserPage(
        items=[UserView.of(u) for u in users], total=total, limit=query.limit, offset=query.offset
    )
    return web.json_response(page.model_dump(mode="json"))


async def get(request: web.Request) -> web.Response:
    return _json(await _target(request, mutate=False))


@audited("user.delete", "user")
async def delete(request: web.Request) -> web.Response:
    caller = manager(request)
    user = await _target(request, mutate=True)
    if user.id == caller.id:
        raise BadRequest("You cannot delete yourself")
    await request.app[USERS].delete(user.id, actor=caller.id, client=client_details(request))
    return web.Response(status=204)


@audited("user.update", "user")
async def update(request: web.Request) -> web.Response:
    """Deactivate a user (their sessions end at once) or activate them again."""
    caller = manager(request)
    user = await _target(request, mutate=True)
    body = await read_body(request, UpdateUser)
    if user.id == caller.id and not body.active:
        raise BadRequest("You cannot deactivate yourself")
    updated = await request.app[USERS].set_active(
        user.id, body.active, actor=caller.id, client=client_details(request)
    )
    return _json(updated)


@audited("user.change_password", "user")
async def change_password(request: web.Request) -> web.Response:
    """Users change their own password (giving the current one); managers reset others'."""
    caller = principal(request)
    users = request.app[USERS]
    body = await read_body(request, ChangePassword)
    if request.match_info["id"] == caller.id and caller.type == "user":
        user = await users.get(caller.id)
        current = body.current_password
        if current is None or not await users.verify_current_password(user, current):
            raise Forbidden("Forbidden: current_password is wrong or missing")
    else:
        user = await _target(request, mutate=True)
    updated = await users.change_password(
        user.id, body.password, actor=caller.id, client=client_details(request)
    )
    return _json(updated)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, Login)
    client = client_details(request)
    user = await request.app[USERS].login(body.username, body.password, client)
    # start() is None also when the user was deleted, deactivated or given a new password
    # while the login was being checked.
    if user is None or (started := await request.app[SESSIONS].start(user, client)) is None:
        raise LoginFailed()
    token, session = started
    answer = LoginAnswer(
        token=token,
        token_type="bearer",
        expires_in=round(session.expires_at - session.created_at),
        user=UserView.of(user),
    )
    return web.json_response(answer.model_dump(mode="json"), headers=NO_STORE)


async def logout(request: web.Request) -> web.Response:
    """End the session the request authenticated with (and no other)."""
    principal(request)  # 401 for a request without a live credential
    if request[AUTH].session is None:
        raise BadRequest(
            "Logout ends a session: authenticate with the session token from /api/v1/login"
        )
    # The credential the middleware resolved to that session: the request's one session token.
    token = next(c.value for c in parse_credentials(request.headers) if c.kind == "session")
    await request.app[SESSIONS].end(token, client=client_details(request))
    return web.Response(status=204)


_CONFLICTS = (400, 401, 403, 404, 409)
OPERATIONS = (
    Operation("POST", "/api/v1/users", create, "Create a human administrator", 201, UserView,
              body=CreateUser, errors=_CONFLICTS),
    Operation("GET", "/api/v1/users", list_, "List users", 200, UserPage, query=Paging),
    Operation("GET", "/api/v1/users/{id}", get, "Get a user", 200, UserView),
    Operation("PUT", "/api/v1/users/{id}", update,
              "Deactivate (its sessions end at once) or activate a user", 200, UserView,
              body=UpdateUser, errors=_CONFLICTS),
    Operation("DELETE", "/api/v1/users/{id}", delete, "Delete a user", 204, None,
              errors=_CONFLICTS),
    Operation("PUT", "/api/v1/users/{id}/password", change_password,
              "Change a password (your own needs current_password)", 200, UserView,
              body=ChangePassword, errors=_CONFLICTS),
    Operation("POST", "/api/v1/login", login, "Log in; returns a session token", 200,
              LoginAnswer, body=Login, errors=(400, 401), public=True, no_store=True),
    Operation("POST", "/api/v1/logout", logout,
              "End the caller's own session (the session token stops working everywhere)", 204,
              None, errors=(400, 401)),
)  # fmt: skip
