"""Driving the admin UI through the aiohttp test client: one ``UiSession`` per logged-in
browser, each with its own cookie (the test client's shared jar is never relied on).

Every answer a ``UiSession`` gets for a ``/ui/`` path is checked on the way (``check_answer``):
the security headers, and for HTML no inline script or style and no event-handler attribute.
So every page any UI test fetches is scanned, not only the ones a security test names. Each
session also keeps every answer it got (``history``), for the tests that a key or a cookie
never reappears anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any, Final

from multidict import CIMultiDictProxy

from gateway.identity.models import Role, ServiceUser, User
from gateway.state import SERVICE_USERS, USERS

from ..conftest import Gateway
from .management_support import PASSWORD

COOKIE: Final = "pangolin_session"
HOST_COOKIE: Final = "__Host-pangolin_session"
# Written out rather than imported from gateway.ui.security: a weakened policy must fail here.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_KEY = re.compile(r'id="api-key" class="secret" readonly value="([^"]+)"')
_SERVICE_USER_ID = re.compile(r"Service user id: <code>([0-9a-f-]{36})</code>")
_ROW = re.compile(r'<tr data-name="([^"]*)">(.*?)</tr>', re.DOTALL)


@dataclass
class Page:
    status: int
    text: str
    headers: CIMultiDictProxy[str]
    path: str = ""

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    @property
    def set_cookies(self) -> list[str]:
        return list(self.headers.getall("Set-Cookie", ()))

    def csrf(self) -> str:
        found = _CSRF.search(self.text)
        assert found is not None, "no CSRF token on the page"
        return found.group(1)

    def key(self) -> str:
        found = _KEY.search(self.text)
        assert found is not None, "no key on the page"
        return found.group(1)

    def service_user_id(self) -> str:
        """The id shown beside a new key."""
        found = _SERVICE_USER_ID.search(self.text)
        assert found is not None, "no service user id on the page"
        return found.group(1)

    def rows(self) -> dict[str, str]:
        """The table rows of a list page (service users, users, tenants), by name."""
        return {name: row for name, row in _ROW.findall(self.text)}

    def assert_refused(self, status: int, *words: str) -> None:
        """A refusal page (never an empty list) with ``status``, naming every one of ``words``."""
        assert self.status == status, self.text
        assert 'class="narrow refused"' in self.text, self.text
        for word in words:
            assert word in self.text, (word, self.text)


def assert_ui_headers(page: Page) -> None:
    """The headers every UI answer carries."""
    headers = page.headers
    assert headers.get("Content-Security-Policy") == CSP, (page.path, dict(headers))
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers.get("X-Content-Type-Options") == "nosniff", page.path
    assert headers.get("Referrer-Policy") == "no-referrer", page.path
    assert headers.get("X-Frame-Options") == "DENY", page.path


class _InlineFinder(HTMLParser):
    """What a strict CSP would block or what would need 'unsafe-inline': inline scripts,
    <style> elements, style attributes, on* handlers, javascript: URLs, outside assets."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name, value in attrs:
            if name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>: an inline event handler")
            if name == "style":
                self.problems.append(f"<{tag} style=...>: an inline style")
            if value and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}={value!r}>: a javascript: URL")
        if tag == "style":
            self.problems.append("<style>: an inline style sheet")
        if tag == "script":
            self._in_script = True
            if not (values.get("src") or "").startswith("/ui/static/"):
                self.problems.append(f"<script {values}>: not one of our own files")
        if tag == "link" and not (values.get("href") or "").startswith("/ui/static/"):
            self.problems.append(f"<link {values}>: not one of our own files")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append(f"<script>{data[:40]!r}: an inline script")


def inline_problems(html: str) -> list[str]:
    finder = _InlineFinder()
    finder.feed(html)
    finder.close()
    return finder.problems


def check_answer(page: Page) -> None:
    """What every UI answer must satisfy (see the module's docstring)."""
    if not page.path.startswith("/ui/"):
        return
    assert_ui_headers(page)
    if page.headers.get("Content-Type", "").startswith("text/html"):
        assert inline_problems(page.text) == [], page.path


class UiSession:
    def __init__(self, gw: Gateway, cookie: str | None, cookie_name: str = COOKIE) -> None:
        self.gw = gw
        self.cookie = cookie
        self.cookie_name = cookie_name
        self.history: list[Page] = []

    def _headers(self, extra: Mapping[str, str | None] | None) -> dict[str, str]:
        """Ours and ``extra``'s; a None in ``extra`` leaves that header out."""
        headers: dict[str, str | None] = {"Sec-Fetch-Site": "same-origin"}
        if self.cookie is not None:
            headers["Cookie"] = f"{self.cookie_name}={self.cookie}"
        headers.update(extra or {})
        return {name: value for name, value in headers.items() if value is not None}

    async def _send(
        self, method: str, path: str, data: dict[str, Any] | None,
        headers: Mapping[str, str | None] | None,
    ) -> Page:  # fmt: skip
        self.gw.client.session.cookie_jar.clear()
        async with self.gw.client.request(
            method, path, data=data, headers=self._headers(headers), allow_redirects=False
        ) as resp:
            page = Page(resp.status, await resp.text(), resp.headers, path)
        self.history.append(page)
        check_answer(page)
        return page

    async def get(self, path: str, headers: Mapping[str, str | None] | None = None) -> Page:
        return await self._send("GET", path, None, headers)

    async def post(
        self,
        path: str,
        data: dict[str, Any],
        *,
        csrf_from: str | None = "/ui/service-users",
        headers: Mapping[str, str | None] | None = None,
    ) -> Page:
        """POST a form; the CSRF token is read from ``csrf_from`` first (None: send none)."""
        if csrf_from is not None and "csrf" not in data:
            data = {**data, "csrf": (await self.get(csrf_from)).csrf()}
        return await self._send("POST", path, data, headers)


async def human(
    gw: Gateway, username: str, role: Role = Role.ROOT, tenant: str = "default"
) -> User:
    return await gw.app[USERS].create(
        username=username, password=PASSWORD, role=role, tenant=tenant, actor="test"
    )


def session_set_cookie(page: Page) -> str | None:
    """The whole Set-Cookie header of the session cookie, attributes included."""
    for header in page.set_cookies:
        name = header.partition("=")[0]
        if name in (COOKIE, HOST_COOKIE):
            return header
    return None


def session_cookie(page: Page) -> str | None:
    header = session_set_cookie(page)
    if header is None:
        return None
    value = header.partition("=")[2].split(";", 1)[0]
    return value or None


async def ui_login(gw: Gateway, username: str, password: str = PASSWORD) -> UiSession:
    page = await UiSession(gw, None).post(
        "/ui/login", {"username": username, "password": password}, csrf_from=None
    )
    assert page.status == 303, page.text
    header = session_set_cookie(page)
    cookie = session_cookie(page)
    assert header is not None and cookie is not None
    return UiSession(gw, cookie, header.partition("=")[0])


async def service_user_named(gw: Gateway, name: str) -> ServiceUser | None:
    users, _ = await gw.app[SERVICE_USERS].list(limit=1000)
    found = [user for user in users if user.name == name]
    return found[0] if found else None


async def user_named(gw: Gateway, username: str) -> User:
    users, _ = await gw.app[USERS].list(tenant_id=None, limit=1000, offset=0)
    return next(user for user in users if user.username == username)
