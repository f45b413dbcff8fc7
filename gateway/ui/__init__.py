"""The admin UI at ``/ui/``: server-rendered pages (Jinja2) for human administrators, served
by the gateway on its own listener with its own static files (nothing fetched from elsewhere).

Pages act through the same rules and input models as the management API; a browser is
identified only by its session cookie (``guard``), every POST passes the CSRF and same-origin
checks, and every answer carries a strict Content-Security-Policy (``security``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import aiohttp_jinja2
import jinja2
from aiohttp import web

from . import admin_pages, grants, login, service_users, users
from .guard import guarded

__all__ = ("setup_ui",)

_HERE: Final = Path(__file__).parent


# Every static file the pages use, read once; nothing else is served from the directory.
_STATIC: Final = {
    "ui.css": ("text/css", (_HERE / "static" / "ui.css").read_bytes()),
    "ui.js": ("text/javascript", (_HERE / "static" / "ui.js").read_bytes()),
    "favicon.svg": ("image/svg+xml", (_HERE / "static" / "favicon.svg").read_bytes()),
}


async def _not_found(request: web.Request) -> web.Response:
    # Any other /ui/ path: a page like the others (headers included), not the router's JSON.
    raise web.HTTPNotFound(reason="There is no such page")


async def _static(request: web.Request) -> web.Response:
    found = _STATIC.get(request.match_info["name"])
    if found is None:
        raise web.HTTPNotFound()
    content_type, body = found
    return web.Response(body=body, content_type=content_type,
                        headers={"Cache-Control": "no-cache"})  # fmt: skip


def setup_ui(app: web.Application) -> None:
    """Templates, static files and every page route, on ``app``."""
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        # Autoescape everything: names and descriptions are client text.
        autoescape=True,
    )
    app.router.add_routes([
        *login.routes(), *service_users.routes(), *users.routes(), *grants.routes(),
        *admin_pages.routes(),
        web.get("/ui/static/{name}", guarded(_static, public=True)),
        # Last: only what no route above takes.
        web.get("/ui/{tail:.*}", guarded(_not_found, public=True)),
    ])  # fmt: skip
