"""Logging in and out of the admin UI.

A login starts a session in the store (``SESSIONS``); the browser gets only its opaque token, in
the session cookie (``security``). Logout ends the session in the store, so the cookie is dead
on every worker at once, whoever still holds a copy.
"""

from __future__ import annotations

from aiohttp import web

from ..audit.events import client_details
from ..state import AUTH, CONFIGURED, SESSIONS, USERS
from .guard import guarded, redirect
from .security import clear_session_cookie, set_session_cookie
from .state import UI_SESSION
from .views import render

__all__ = ("routes",)


async def login_form(request: web.Request) -> web.Response:
    if request[AUTH].principal is not None:
        return redirect("/ui/service-users")
    return render(request, "login.html")


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    username, password = form.get("username"), form.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        return render(request, "login.html", {"error": "Give a username and a password"},
                      status=400)  # fmt: skip
    client = client_details(request)
    user = await request.app[USERS].login(username, password, client)
    started = await request.app[SESSIONS].start(user, client) if user is not None else None
    if started is None:
        # One answer for every bad guess: it never says which part was wrong (nor that the
        # user was changed while the login was checked).
        return render(request, "login.html",
                      {"error": "Wrong username or password", "username": username},
                      status=401)  # fmt: skip
    token, _ = started
    response = redirect("/ui/service-users")
    lifetime = request.app[CONFIGURED].settings.tokens.session_lifetime_seconds
    set_session_cookie(request, response, token, lifetime)
    return response


async def logout(request: web.Request) -> web.Response:
    token = request.get(UI_SESSION)
    if token is not None:
        await request.app[SESSIONS].end(token, client=client_details(request))
    response = redirect("/ui/login")
    clear_session_cookie(request, response)
    return response


async def home(request: web.Request) -> web.Response:
    return redirect("/ui/service-users")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/ui", guarded(home)),
        web.get("/ui/", guarded(home)),
        web.get("/ui/login", guarded(login_form, public=True)),
        web.post("/ui/login", guarded(login, public=True)),
        web.post("/ui/logout", guarded(logout)),
    ]
