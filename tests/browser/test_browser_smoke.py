"""The whole browser chain on a fresh machine: Debian's Chromium launched by Playwright against
a live gateway, the viewports, the request log, screenshots, and the console-error capture
the UI tests rely on (a CSP violation and an uncaught exception are caught)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from aiohttp import web
from playwright.sync_api import Browser, BrowserContext, Page, expect

from gateway.settings import CatalogSettings

from ..live import LiveGateway
from .harness import (
    ConsoleErrors,
    NetworkLog,
    Screenshot,
    Viewport,
    assert_not_exposed,
    both_viewports,
    live_gateway,
    serve_app,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    # The management API and /healthz need no upstream: a closed port will do.
    catalogs = {"default": CatalogSettings(upstream="http://127.0.0.1:9/catalog")}
    with live_gateway(tmp_path_factory.mktemp("gateway"), catalogs=catalogs) as gateway:
        yield gateway


@both_viewports
def test_gateway_pages_in_chromium(
    live: LiveGateway,
    page: Page,
    viewport: Viewport,
    network: NetworkLog,
    screenshot: Screenshot,
) -> None:
    assert page.context.cookies() == []  # a fresh context for each test
    assert page.viewport_size == {"width": viewport.width, "height": viewport.height}

    response = page.goto(f"{live.url}/healthz")
    assert response is not None and response.status == 200
    # Chromium shows a JSON document as text in a <pre> (beside its pretty-print widget).
    expect(page.locator("pre")).to_contain_text('"status": "ok"')

    response = page.goto(f"{live.url}/api/v1/openapi.json")
    assert response is not None and response.ok
    assert response.headers["content-type"].startswith("application/json")
    document = json.loads(page.locator("pre").inner_text())
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/service-users" in document["paths"]

    shot = screenshot("smoke-openapi", full_page=False)
    assert shot.stat().st_size > 1000 and shot.read_bytes().startswith(b"\x89PNG")

    assert network.urls() == [f"{live.url}/healthz", f"{live.url}/api/v1/openapi.json"]
    assert all(r.complete and "user-agent" in r.headers for r in network.requests)
    assert_not_exposed(page, network, "never-sent-secret")


async def _strict_csp(request: web.Request) -> web.Response:
    html = '<!doctype html><title>csp</title><p id="p">inline</p><script>p.remove()</script>'
    csp = {"Content-Security-Policy": "default-src 'none'"}
    return web.Response(text=html, content_type="text/html", headers=csp)


async def _throws(request: web.Request) -> web.Response:
    html = '<!doctype html><title>throws</title><script src="/throws.js"></script>'
    return web.Response(text=html, content_type="text/html")


async def _throws_js(request: web.Request) -> web.Response:
    script = "throw new Error('boom from the page')"
    return web.Response(text=script, content_type="text/javascript")


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    app = web.Application()
    app.router.add_get("/csp", _strict_csp)
    app.router.add_get("/throws", _throws)
    app.router.add_get("/throws.js", _throws_js)
    with serve_app(app) as url:
        yield url


def test_csp_violation_is_caught(pages: str, page: Page, console_errors: ConsoleErrors) -> None:
    with page.expect_console_message(lambda m: m.type == "error"):
        page.goto(f"{pages}/csp")
    expect(page.locator("#p")).to_have_text("inline")  # the inline script was blocked
    errors = console_errors.take()
    assert len(errors) == 1, errors
    assert f"at {pages}/csp" in errors[0]
    assert "inline script" in errors[0] and "Content Security Policy" in errors[0]


def test_uncaught_exception_is_caught(
    pages: str, page: Page, context: BrowserContext, console_errors: ConsoleErrors
) -> None:
    with context.expect_event("weberror"):
        page.goto(f"{pages}/throws")
    # Left in place, it fails the test at its end (pytest_runtest_call calls check).
    with pytest.raises(pytest.fail.Exception, match="boom from the page"):
        console_errors.check(context)
    assert console_errors.errors == []


def test_contexts_share_nothing(browser: Browser, page: Page, pages: str) -> None:
    page.goto(f"{pages}/throws.js")
    page.context.add_cookies([{"name": "sid", "value": "one", "url": pages}])
    page.evaluate("localStorage.setItem('k', 'v')")
    other = browser.new_context()
    try:
        other_page = other.new_page()
        other_page.goto(f"{pages}/throws.js")
        assert other.cookies() == []
        assert other_page.evaluate("localStorage.length") == 0
    finally:
        other.close()
