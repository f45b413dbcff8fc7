"""Screenshots of the admin UI in Chromium: the service-user list (with users in every state),
the create form and the key dialog, at 1280x800 and at a phone's 390x844, under
``var/screenshots``. With ``PANGOLIN_UPDATE_SCREENSHOTS=1`` the desktop list and key dialog are
also copied to ``docs/`` (the README's pictures).

A throwaway gateway of its own (a temporary store, a catalog on a closed port): the key in the
pictures is a real key of a store that no longer exists. Its clock is moved back while the
users are made, so the list shows a key past the 90-day rotation interval, an expiry within
14 days, an expired and a deactivated user, and last use "3 days ago"."""

from __future__ import annotations

import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from gateway.identity.models import Role
from gateway.settings import CatalogSettings
from gateway.state import AUTHENTICATOR, USERS

from ..live import LiveGateway
from .harness import Screenshot, Viewport, both_viewports, live_gateway

DOCS = Path(__file__).resolve().parents[2] / "docs"
UPDATE = os.environ.get("PANGOLIN_UPDATE_SCREENSHOTS") == "1"
PASSWORD = "screenshot-password-1"
DAY = 86400.0


class ShiftedClock:
    """The wall clock, moved by ``offset`` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def _use(gateway: LiveGateway, key: str) -> None:
    """One authenticated request (the catalog behind is a closed port: 502, but used)."""
    request = urllib.request.Request(
        f"{gateway.url}/v1/default/v1/namespaces", headers={"X-API-Key": key}
    )
    try:
        urllib.request.urlopen(request, timeout=30).close()
    except urllib.error.HTTPError as err:
        err.close()
        assert err.code != 401


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    clock = ShiftedClock()
    catalogs = {"default": CatalogSettings(upstream="http://127.0.0.1:9/catalog")}
    with live_gateway(
        tmp_path_factory.mktemp("showcase"), catalogs=catalogs, clock=clock, tenants=["acme"]
    ) as gateway:
        admin = gateway.admin
        clock.offset = -120 * DAY  # made four months ago, never rotated
        legacy = gateway.call(admin.create(name="legacy-loader", actor="test",
                                           description="the old nightly load"))  # fmt: skip
        clock.offset = -40 * DAY
        gateway.call(
            admin.create(name="bi-dashboards", actor="test", expires_at=clock() + 365 * DAY)
        )
        reporting = gateway.call(admin.create(name="reporting", role=Role.TENANT_ADMIN,
                                              actor="test"))  # fmt: skip
        clock.offset = -3 * DAY
        nightly = gateway.call(admin.create(name="nightly-etl", actor="test",
                                            expires_at=clock() + 90 * DAY))  # fmt: skip
        _use(gateway, nightly.api_key.plaintext())
        _use(gateway, legacy.api_key.plaintext())
        gateway.call(gateway.app[AUTHENTICATOR].flush_last_used())
        clock.offset = 0.0
        gateway.call(admin.create(name="partner-sync", tenant="acme", actor="test",
                                  expires_at=clock() + 5 * DAY))  # fmt: skip
        gateway.call(admin.deactivate(reporting.user.id, actor="test"))
        gone = gateway.call(admin.create(name="spark-adhoc", actor="test"))
        gateway.call(admin.expire(gone.user.id, actor="test"))
        alice = gateway.app[USERS].create(
            username="alice", password=PASSWORD, role=Role.ROOT, tenant="default", actor="test"
        )
        gateway.call(alice)
        yield gateway


def _publish(shot: Path, name: str) -> None:
    if UPDATE:
        shutil.copyfile(shot, DOCS / name)


@both_viewports
def test_screenshots_of_the_list_the_create_form_and_the_key_dialog(
    showcase: LiveGateway, page: Page, viewport: Viewport, screenshot: Screenshot
) -> None:
    page.goto(f"{showcase.url}/ui/login")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{showcase.url}/ui/service-users")

    rows = page.locator("tbody tr")
    expect(rows).to_have_count(7 if viewport.name == "desktop" else 8)  # with the bootstrap root
    expect(page.locator('tr[data-name="legacy-loader"] td.warn')).to_contain_text("⚠")
    expect(page.locator('tr[data-name="partner-sync"]')).to_contain_text("soon")
    expect(page.locator('tr[data-name="nightly-etl"]')).to_contain_text("3 days ago")
    expect(page.locator('tr[data-name="reporting"] .status')).to_have_text("deactivated")
    expect(page.locator('tr[data-name="spark-adhoc"] .status')).to_have_text("expired")
    # Readable means no page-wide sideways scrolling: the table scrolls inside its frame.
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport.width
    shot = screenshot("ui-service-users")
    if viewport.name == "desktop":
        _publish(shot, "ui-service-users.png")

    page.get_by_role("link", name="Create Service User").click()
    name = "dashboard-reader" if viewport.name == "desktop" else "dashboard-reader-phone"
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Description").fill("read-only access for the BI dashboards")
    page.get_by_label("90 days").check()
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport.width
    screenshot("ui-create-service-user")

    page.get_by_role("button", name="Create").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    expect(page.locator("#api-key")).to_be_focused()
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport.width
    shot = screenshot("ui-key-dialog", full_page=False)
    if viewport.name == "desktop":
        _publish(shot, "ui-key-dialog.png")
