"""What wraps every admin UI handler (``guarded``): who the browser is (its session cookie,
nothing else), the cross-site checks on every POST, the security headers, and refusals as HTML
pages.

Only the cookie counts here: an ``X-API-Key`` or ``Authorization`` header a browser might carry
is ignored, so the UI acts for a logged-in human and nobody else. A wrapper per handler rather
than a middleware, so that catalog requests pay nothing for the UI; the gateway middleware
(request id, metrics) still wraps every UI request.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..auth.authenticator import ANONYMOUS, AuthOutcome
from ..errors import DomainError, Forbidden, GatewayError, Unauthenticated, describe
from ..state import AUTH, SESSIONS
from .security import PAGE_HEADERS, check_same_origin, cookie_name, csrf_valid
from .state import UI_SESSION
from .views import render

__all__ = ("Page", "guarded", "redirect")

Page = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Page, *, public: bool = False) -> Page:
    """``handler`` behind the UI's checks. ``public``: the login form, which has no session
    yet (its POST still passes the same-origin check)."""

    @functools.wraps(handler)
    async def page(request: web.Request) -> web.StreamResponse:
        return await _guard(request, handler, public)

    return page


async def _guard(request: web.Request, handler: Page, public: bool) -> web.StreamResponse:
    try:
        await _attach_session(request)
        if request.method == "POST":
            check_same_origin(request)
            if not public:
                form = await request.post()
                token = request.get(UI_SESSION)
                offered = form.get("csrf")
                if token is None or not csrf_valid(
                    token, offered if isinstance(offered, str) else None
                ):
                    raise Forbidden("Forbidden: the form is stale or was sent from elsewhere")
        if not public and request[AUTH].principal is None:
            raise Unauthenticated()
        response = await handler(request)
    except Unauthenticated:
        response = redirect("/ui/login")
    except (GatewayError, DomainError) as exc:
        status, _, message = describe(exc)
        response = render(
            request, "refused.html", {"status": status, "message": message},
            status=status, caller=request[AUTH].principal,
        )  # fmt: skip
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = render(
                request, "refused.html", {"status": exc.status, "message": exc.reason},
                status=exc.status, caller=request[AUTH].principal,
            )  # fmt: skip
        else:
            response = redirect(exc.headers.get("Location", "/ui/"))
    for name, value in PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST, the browser follows with a GET."""
    return web.Response(status=303, headers={"Location": location})


async def _attach_session(request: web.Request) -> None:
    request[AUTH] = ANONYMOUS
    token = request.cookies.get(cookie_name(request))
    if not token:
        return
    found = await request.app[SESSIONS].resolve(token)
    if found is None:
        request[AUTH] = AuthOutcome(None, "session")
        return
    _, user = found
    request[AUTH] = AuthOutcome(user.principal())
    request[UI_SESSION] = token
