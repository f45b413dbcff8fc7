"""Per-request state of the admin UI."""

from __future__ import annotations

from aiohttp import web

__all__ = ("UI_SESSION",)

# The session token of this request (from its cookie), once the store accepted it: the CSRF
# token is derived from it. Never rendered, logged or sent anywhere but back in the cookie.
UI_SESSION: web.RequestKey[str] = web.RequestKey("pangolin.ui.session")
