"""What the browser tests use besides the fixtures (``conftest.py`` says which those are): the
Chromium command line, the two viewports, the recorders of requests and console errors, the
leak checks, and two ways to serve an app while Playwright runs.

Playwright's sync API marks its own event loop as the running one between its calls, so an
``asyncio.run`` in a browser test fails ("cannot be called from a running event loop").
``live_gateway`` starts a ``LiveGateway`` anyway (its ``start`` runs ``asyncio.run`` once);
``serve_app`` serves an aiohttp app from a thread of its own."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Page, Request, WebError

from ..live import LiveGateway

__all__ = (
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "SCREENSHOTS",
    "VIEWPORTS",
    "ConsoleErrors",
    "NetworkLog",
    "RecordedRequest",
    "Screenshot",
    "Viewport",
    "assert_not_exposed",
    "asyncio_allowed",
    "both_viewports",
    "live_gateway",
    "serve_app",
    "storage_leaks",
)

# Debian's `chromium` (make chromium installs it); Playwright 1.64 bundles the same major, 156.
CHROMIUM = "/usr/bin/chromium"
# As root, and on a machine whose network is closed: without the background-networking flags
# Chromium's own connections are refused. Playwright adds --headless and --user-data-dir (a
# fresh profile under the session's temporary directory, see the `playwright` fixture).
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int
    mobile: bool = False


VIEWPORTS = {
    "desktop": Viewport("desktop", 1280, 800),
    "phone": Viewport("phone", 390, 844, mobile=True),
}
# A test at both sizes: @both_viewports on a test that uses `page` (the default is desktop).
both_viewports = pytest.mark.parametrize("viewport", list(VIEWPORTS), indirect=True)


class Screenshot(Protocol):
    """The ``screenshot`` fixture: saves ``var/screenshots/<name>-<viewport>.png``."""

    def __call__(self, name: str, *, full_page: bool = True) -> Path: ...


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    url: str
    # All headers Chromium sent, with Cookie and Referer (complete=False: the request had not
    # finished when it was read, and these are the provisional headers, without cookies).
    headers: dict[str, str]
    body: str | None
    complete: bool


@dataclass
class NetworkLog:
    """Every request the context's pages make, in order, for secret-leak assertions."""

    _requests: list[Request] = field(default_factory=list)
    _headers: dict[int, dict[str, str]] = field(default_factory=dict)

    def attach(self, context: BrowserContext) -> None:
        context.on("request", self._record)
        context.on("requestfinished", self._settle)
        context.on("requestfailed", self._settle)

    def _record(self, request: Request) -> None:
        self._requests.append(request)

    def _settle(self, request: Request) -> None:
        try:
            self._headers[id(request)] = request.all_headers()
        except Error:  # the context closed meanwhile: keep the provisional headers
            pass

    @property
    def requests(self) -> list[RecordedRequest]:
        recorded = []
        for request in self._requests:
            headers = self._headers.get(id(request))
            recorded.append(
                RecordedRequest(
                    method=request.method,
                    url=request.url,
                    headers=headers if headers is not None else dict(request.headers),
                    body=request.post_data,
                    complete=headers is not None,
                )
            )
        return recorded

    def urls(self) -> list[str]:
        return [request.url for request in self._requests]

    def leaks(self, secret: str, *, bodies: bool = True) -> list[str]:
        """Where ``secret`` went out: "METHOD URL: where" for each URL, header (the Cookie
        header included) and, with ``bodies``, request body that carries it."""
        forms = {secret, quote(secret, safe=""), quote(secret)}
        found = []
        for request in self.requests:
            places = [("url", unquote(request.url)), ("url", request.url)]
            places += [(f"header {name}", value) for name, value in request.headers.items()]
            if bodies and request.body is not None:
                places.append(("body", request.body))
            where = sorted({name for name, text in places if any(f in text for f in forms)})
            found += [f"{request.method} {request.url}: {name}" for name in where]
        return found

    def assert_never_carries(self, secret: str, *, bodies: bool = True) -> None:
        leaks = self.leaks(secret, bodies=bodies)
        assert not leaks, f"a request carried the secret: {leaks}"


_NOT_FOUND = re.compile(r"Failed to load resource: .*\(Not Found\)$")


@dataclass
class ConsoleErrors:
    """Console errors (CSP violations among them) and uncaught exceptions of every page of the
    context. A test whose page left any here fails (conftest's pytest_runtest_call); a test
    that provokes one on purpose takes it with ``take``."""

    errors: list[str] = field(default_factory=list)

    def attach(self, context: BrowserContext) -> None:
        context.on("console", self._console)
        context.on("weberror", self._web_error)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        # Chromium fetches /favicon.ico on its own for a page that names no icon (a JSON
        # document): its 404 is no error of the page.
        if urlsplit(url).path == "/favicon.ico" and _NOT_FOUND.match(message.text):
            return
        self.errors.append(f"console error at {url or '?'}: {message.text}")

    def _web_error(self, error: WebError) -> None:
        page = error.page.url if error.page is not None else "?"
        self.errors.append(f"uncaught exception at {page}: {error.error}")

    def take(self) -> list[str]:
        """The errors so far, forgotten here (so the test's end does not fail on them)."""
        taken, self.errors = self.errors, []
        return taken

    def check(self, context: BrowserContext | None = None) -> None:
        """Fail if any error is left. With ``context``, first a round trip to each of its pages,
        so that errors already on their way are counted."""
        for page in context.pages if context is not None else ():
            try:
                page.evaluate("0")
            except Error:  # closed or navigating: nothing of it is in flight any more
                pass
        if self.errors:
            pytest.fail("the page logged errors:\n  " + "\n  ".join(self.take()), pytrace=False)


def storage_leaks(page: Page, secret: str) -> list[str]:
    """Where ``secret`` rests in the browser: the context's cookies (HttpOnly ones too) and the
    ``localStorage`` / ``sessionStorage`` of each of the context's pages."""
    found = [
        f"cookie {cookie.get('name')} for {cookie.get('domain')}"
        for cookie in page.context.cookies()
        if secret in str(cookie.get("value", "")) or secret in str(cookie.get("name", ""))
    ]
    for each in page.context.pages:
        if urlsplit(each.url).scheme not in ("http", "https"):
            continue  # about:blank and the like: no storage of their own (reading it throws)
        stores: dict[str, dict[str, str]] = each.evaluate(
            "() => ({localStorage: {...localStorage}, sessionStorage: {...sessionStorage}})"
        )
        for store, entries in stores.items():
            found += [
                f"{store}[{key!r}] at {each.url}"
                for key, value in entries.items()
                if secret in key or secret in value
            ]
    return found


def assert_not_exposed(page: Page, network: NetworkLog, secret: str) -> None:
    """The secret is in no request (URL, headers, cookies, bodies), cookie or web storage."""
    leaks = network.leaks(secret) + storage_leaks(page, secret)
    assert not leaks, f"the secret was exposed: {leaks}"


@contextmanager
def asyncio_allowed() -> Iterator[None]:
    """Lets ``asyncio.run`` work for the block: Playwright's sync API leaves its own loop set
    as the running one between calls. Make no Playwright call inside the block."""
    loop = asyncio._get_running_loop()
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(loop)


@contextmanager
def live_gateway(*args: Any, **kwargs: Any) -> Iterator[LiveGateway]:
    """``LiveGateway.start(*args, **kwargs)``, also inside a browser test or fixture."""
    with ExitStack() as stack:
        with asyncio_allowed():
            gateway = stack.enter_context(LiveGateway.start(*args, **kwargs))
        yield gateway


@contextmanager
def serve_app(app: web.Application) -> Iterator[str]:
    """``app`` on a free loopback port, in an aiohttp test server on a thread and event loop of
    its own (the test's thread belongs to Playwright); yields its base URL, no slash at the end."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = TestServer(app, host="127.0.0.1")
    try:
        asyncio.run_coroutine_threadsafe(server.start_server(), loop).result(30)
        yield str(server.make_url("")).rstrip("/")
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
