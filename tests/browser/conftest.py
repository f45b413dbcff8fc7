"""Browser fixtures: Debian's headless Chromium (``make chromium``) driven by Playwright's sync
API, one browser for the whole package, a fresh context (no cookies, no storage) per test.

- ``playwright`` / ``browser`` (package scope): the driver and the launched Chromium.
- ``viewport``: desktop (1280x800) unless a test is parametrized, e.g. ``@both_viewports``
  (``harness``) or ``@pytest.mark.parametrize("viewport", ["phone"], indirect=True)``.
- ``context`` / ``page``: a new browser context and its page, at that viewport.
- ``network``: a ``NetworkLog`` of every request of the context (URL, all headers, body);
  ``harness.assert_not_exposed(page, network, secret)`` adds the cookies and web storage.
- ``console_errors``: ``ConsoleErrors``; a test fails when a page of its context logged a
  console error (a CSP violation is one) or threw; ``take()`` what a test provokes on purpose.
- ``screenshot(name)``: saves ``var/screenshots/<name>-<viewport>.png``; a failed test also
  leaves ``var/screenshots/failed/<test>.png``.

Tests wait with Playwright's auto-waiting (locators, ``expect``, ``expect_*``), never sleep.
Every test in this folder is marked ``browser``. Inside a browser test, ``asyncio.run`` needs
``harness.asyncio_allowed`` (``harness.live_gateway`` does it for ``LiveGateway.start``).
"""

from __future__ import annotations

import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Error, Page, Playwright, sync_playwright

from .harness import (
    CHROMIUM,
    CHROMIUM_ARGS,
    SCREENSHOTS,
    VIEWPORTS,
    ConsoleErrors,
    NetworkLog,
    Screenshot,
    Viewport,
)

HERE = Path(__file__).resolve().parent
# Fail fast: a missing element is a failure in seconds, not in Playwright's default 30.
ACTION_TIMEOUT_MS = 10_000
NAVIGATION_TIMEOUT_MS = 20_000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    result = yield  # a test that already failed keeps its own failure
    funcargs = getattr(item, "funcargs", {})
    errors, context = funcargs.get("console_errors"), funcargs.get("context")
    if isinstance(errors, ConsoleErrors):
        errors.check(context if isinstance(context, BrowserContext) else None)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    page = getattr(item, "funcargs", {}).get("page")
    if report.when == "call" and report.failed and isinstance(page, Page):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)
        try:
            page.screenshot(path=SCREENSHOTS / "failed" / f"{name}.png", full_page=True)
        except Error:  # the page is gone: the report says why
            pass
    return report


@pytest.fixture(scope="package")
def playwright(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Playwright]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    # The driver makes each launch's fresh --user-data-dir in its TMPDIR: the test session's.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TMPDIR", str(tmp_path_factory.mktemp("chromium")))
        driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()


@pytest.fixture(scope="package")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def viewport(request: pytest.FixtureRequest) -> Viewport:
    return VIEWPORTS[getattr(request, "param", "desktop")]


@pytest.fixture
def network() -> NetworkLog:
    return NetworkLog()


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
def context(
    browser: Browser, viewport: Viewport, network: NetworkLog, console_errors: ConsoleErrors
) -> Iterator[BrowserContext]:
    context = browser.new_context(
        viewport={"width": viewport.width, "height": viewport.height},
        is_mobile=viewport.mobile,
        has_touch=viewport.mobile,
        device_scale_factor=1,
        locale="en-US",
        timezone_id="UTC",
    )
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    context.set_default_navigation_timeout(NAVIGATION_TIMEOUT_MS)
    network.attach(context)
    console_errors.attach(context)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()  # closed with its context


@pytest.fixture
def screenshot(page: Page, viewport: Viewport) -> Screenshot:
    def take(name: str, *, full_page: bool = True) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}-{viewport.name}.png"
        page.screenshot(path=path, full_page=full_page, animations="disabled")
        return path

    return take
