"""What keeps the admin UI safe in a browser: response headers, the session cookie, and the
cross-site checks every state-changing request passes.

- **Headers** on every UI answer: a Content-Security-Policy that allows only the gateway's own
  script and style files (no inline script or style, nothing from elsewhere, no framing, forms
  only to ourselves), ``nosniff``, ``Referrer-Policy: no-referrer`` and ``Cache-Control:
  no-store`` (pages show identities, and the key pages a secret).
- **Cookie**: only an opaque session token, ``HttpOnly`` (no script reads it) and
  ``SameSite=Strict`` (no cross-site request carries it), ``Path=/``; over HTTPS (directly or
  per ``server.public_url``) also ``Secure`` with the ``__Host-`` prefix, which the browser
  accepts only from a secure origin, for the exact host.
- **CSRF**: a POST must carry the session's CSRF token (an HMAC of the session token: nothing
  stored, and worthless without the cookie's secret) and must not come from another site: a
  ``Sec-Fetch-Site`` other than ``same-origin`` or ``none`` is refused, and without it the
  ``Origin`` must be our own (the model of Go's ``http.CrossOriginProtection``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web

from ..errors import Forbidden
from ..state import CONFIGURED

__all__ = (
    "PAGE_HEADERS",
    "check_same_origin",
    "cookie_name",
    "csrf_token",
    "csrf_valid",
    "is_https",
    "set_session_cookie",
    "clear_session_cookie",
)

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_COOKIE: Final = "pangolin_session"


def is_https(request: web.Request) -> bool:
    public = request.app[CONFIGURED].settings.server.public_url
    if public:
        return urlsplit(public).scheme == "https"
    return request.secure


def cookie_name(request: web.Request) -> str:
    return f"__Host-{_COOKIE}" if is_https(request) else _COOKIE


def set_session_cookie(
    request: web.Request, response: web.StreamResponse, token: str, max_age: int
) -> None:
    response.set_cookie(
        cookie_name(request), token, max_age=max_age, path="/", httponly=True,
        samesite="Strict", secure=is_https(request),
    )  # fmt: skip


def clear_session_cookie(request: web.Request, response: web.StreamResponse) -> None:
    # With the attributes it was set with: a browser ignores a __Host- cookie without Secure,
    # so a clearing without it would leave the (ended) session's cookie in place.
    response.del_cookie(
        cookie_name(request), path="/", httponly=True, samesite="Strict", secure=is_https(request)
    )


def csrf_token(session_token: str) -> str:
    mac = hmac.new(session_token.encode(), b"pangolin-ui-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def csrf_valid(session_token: str, offered: str | None) -> bool:
    # Constant time: the token guards every change an administrator can make.
    return offered is not None and hmac.compare_digest(
        csrf_token(session_token).encode(), offered.encode("utf-8", "replace")
    )


def check_same_origin(request: web.Request) -> None:
    """Refuse (403) a state-changing request sent by another site."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        if site not in ("same-origin", "none"):
            raise Forbidden("Forbidden: cross-site request")
        return
    origin = request.headers.get("Origin")
    if origin is None:
        # Old browsers and non-browser clients send neither header; the CSRF token, which a
        # foreign page cannot read, still guards them.
        return
    if origin == "null" or _origin(origin) != _own_origin(request):
        raise Forbidden("Forbidden: cross-site request")


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    """(scheme, host, port) with the default port filled in, as browsers compare origins."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def _own_origin(request: web.Request) -> tuple[str, str, int | None] | None:
    public = request.app[CONFIGURED].settings.server.public_url
    return _origin(public if public else f"{request.scheme}://{request.host}")
