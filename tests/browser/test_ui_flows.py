"""The admin UI's flows in a real headless Chromium, against a live gateway in front of the real
SeaweedFS: log in, create a service user (the key shown once, in a dialog that neither Escape
nor a click outside closes), the key working for PyIceberg; rotate from the row icon (the old
key and its token dead at once); deactivate / activate / delete; a TenantAdmin of another
tenant; cross-site and token-less posts; sessions ending; and, over the whole module, the key
never leaving the one answer that showed it (no request, cookie, web storage, log line or
later page); and a grant added, listed and revoked on a service user's page.

One gateway for the module (``gateway``): every test makes identities of its own, so they do
not interfere. The gateway records every answer it sends (``served``) and every log line of
its loggers, the access log included (``gateway_logs``), for the leak checks.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from aiohttp import web
from playwright._impl._sync_base import EventContextManager
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from gateway.app import create_app
from gateway.connection import GatewayRunner
from gateway.identity.models import Role, ServiceUser, User, parse_key
from gateway.observability.access_log import ACCESS_LOGGER, AccessLogger
from gateway.state import AUDIT, GRANTS, SERVICE_USERS, USERS
from gateway.store import DEFAULT_TENANT, AuditQuery

from ..live import LiveGateway, SeaweedUpstream
from ..roundtrip import roundtrip
from .harness import ConsoleErrors, NetworkLog, assert_not_exposed, asyncio_allowed, serve_app

pytestmark = pytest.mark.seaweedfs

PASSWORD = "browser-test-password-1"
NEW_PASSWORD = "browser-test-password-2"
DAY = 86400.0
ORDERS = ("sales", "orders")
# Loggers whose lines must never carry a key: the gateway's modules, the access log, aiohttp.
LOGGERS = ("gateway", "pangolin", ACCESS_LOGGER, "aiohttp")


# -- the gateway, recording what it sends and logs ----------------------------------------------


@dataclass(frozen=True)
class Served:
    method: str
    path: str
    status: int
    body: str


class RecordingGateway(LiveGateway):
    """A ``LiveGateway`` served as ``serve`` serves it (with the access log), keeping the body
    of every answer it sends (``served``), in order."""

    served: list[Served]

    async def _serve(self) -> None:
        # LiveGateway._serve, plus the access log and the recording of every answer.
        self.served = []
        self.app = create_app(self.settings, clock=self.clock)
        self.app.on_response_prepare.append(self._record)
        self._runner = GatewayRunner(self.app, access_log_class=AccessLogger)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def _record(self, request: web.Request, response: web.StreamResponse) -> None:
        body = response.body if isinstance(response, web.Response) else None
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else ""
        self.served.append(Served(request.method, request.path, response.status, text))

    def human(self, prefix: str, role: Role = Role.ROOT, tenant: str = DEFAULT_TENANT) -> User:
        name = f"{prefix}-{secrets.token_hex(3)}"
        return self.call(
            self.app[USERS].create(
                username=name, password=PASSWORD, role=role, tenant=tenant, actor="test"
            )
        )

    def service_user_named(self, name: str) -> ServiceUser | None:
        users, _ = self.call(self.app[SERVICE_USERS].list(tenant_id=None, limit=1000, offset=0))
        return next((u for u in users if u.name == name), None)


class LogLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def gateway_logs() -> Iterator[LogLines]:
    handler = LogLines()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@pytest.fixture(scope="module")
def gateway(
    seaweed: SeaweedUpstream, tmp_path_factory: pytest.TempPathFactory, gateway_logs: LogLines
) -> Iterator[RecordingGateway]:
    with ExitStack() as stack:
        with asyncio_allowed():
            live = stack.enter_context(
                RecordingGateway.start(
                    tmp_path_factory.mktemp("ui-flows"), seaweed, tenants=["acme"]
                )
            )
        assert isinstance(live, RecordingGateway)
        yield live


@dataclass
class Keys:
    """Every key the module's browsers were shown, for the leak checks."""

    shown: list[str] = field(default_factory=list)

    def forms(self) -> list[str]:
        """Each key, and its secret part alone."""
        found = []
        for key in self.shown:
            parsed = parse_key(key)
            assert parsed is not None, "not a key"
            found += [key, parsed.secret]
        return found


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture(autouse=True)
def _no_key_exposed_in_the_browser(page: Page, network: NetworkLog, keys: Keys) -> Iterator[None]:
    """After each test: no key of the module rode on a request of the test's browser (URL,
    headers with cookies, body), nor rests in a cookie or web storage."""
    yield
    for secret in keys.forms():
        assert_not_exposed(page, network, secret)


# -- helpers -------------------------------------------------------------------------------------


def login(page: Page, gateway: LiveGateway, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{gateway.url}/ui/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{gateway.url}/ui/service-users")
    expect(page.get_by_role("heading", name="Service Users", exact=True)).to_be_visible()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class ShownKey:
    user_id: str
    key: str


def read_key_dialog(page: Page, keys: Keys) -> ShownKey:
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    key = page.locator("#api-key").input_value()
    assert parse_key(key) is not None, key
    keys.shown.append(key)
    user_id = dialog.locator("p.muted code").inner_text()
    return ShownKey(user_id, key)


def finish_key_dialog(page: Page, gateway: LiveGateway, shown: ShownKey) -> None:
    page.get_by_label("I have copied the key").check()
    page.get_by_role("button", name="Done").click()
    # A GET form without named fields: the URL ends in "?" (and carries nothing).
    page_url = f"{gateway.url}/ui/service-users/{shown.user_id}"
    expect(page).to_have_url(re.compile(re.escape(page_url) + r"\??$"))


def create_in_form(page: Page, gateway: LiveGateway, name: str, keys: Keys) -> ShownKey:
    page.goto(f"{gateway.url}/ui/service-users/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("30 days").check()
    page.get_by_role("button", name="Create").click()
    return read_key_dialog(page, keys)


def catalog_status(gateway: LiveGateway, headers: dict[str, str]) -> int:
    """The status of a catalog request (list namespaces) with ``headers``."""
    url = f"{gateway.url}/v1/default/v1/warehouse/namespaces"
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        with err:
            return err.code


def key_status(gateway: LiveGateway, key: str) -> int:
    return catalog_status(gateway, {"X-API-Key": key})


def mint_token(gateway: LiveGateway, shown: ShownKey) -> str:
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": shown.user_id, "client_secret": shown.key,
    }).encode()  # fmt: skip
    url = f"{gateway.url}/v1/default/v1/oauth/tokens"
    with urllib.request.urlopen(url, data=form, timeout=30) as response:
        token: str = json.loads(response.read())["access_token"]
        return token


def posted(page: Page, url: str) -> EventContextManager[Response]:
    """``with posted(page, url) as answer:``: the answer to the next POST to ``url``."""
    return page.expect_response(lambda r: r.request.method == "POST" and r.url == url)


def took_refusals(page: Page, console_errors: ConsoleErrors, *statuses: int) -> None:
    """Chromium logs each page answered with an error status as a console error: take those
    the test provoked (and only those), so that the test's end does not fail on them."""
    page.evaluate("0")  # a round trip: messages already on their way arrive first
    page_errors = [error for error in console_errors.take() if "Failed to load resource" in error]
    assert [int(e.split("status of ")[1][:3]) for e in page_errors] == list(statuses), page_errors


def fresh_context(
    browser: Browser, network: NetworkLog, console_errors: ConsoleErrors
) -> BrowserContext:
    """Another browser (no cookies, no storage), recorded like the test's own."""
    other = browser.new_context(viewport={"width": 1280, "height": 800})
    network.attach(other)
    console_errors.attach(other)
    return other


def with_cookies_of(
    browser: Browser, page: Page, network: NetworkLog, console_errors: ConsoleErrors
) -> BrowserContext:
    """A fresh browser holding a copy of ``page``'s cookies (the session cookie)."""
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["pangolin_session"]
    assert cookies[0].get("httpOnly") is True and cookies[0].get("sameSite") == "Strict"
    other = fresh_context(browser, network, console_errors)
    other.add_cookies([{
        "name": c["name"], "value": c["value"], "url": page.url.split("/ui/")[0] + "/",
        "httpOnly": True, "sameSite": "Strict",
    } for c in cookies])  # fmt: skip
    return other


# -- 1. log in, create with an expiry, the key dialog, the key works for PyIceberg -------------


def test_create_shows_the_key_once_in_a_dialog_and_the_key_works_for_pyiceberg(
    gateway: RecordingGateway,
    seaweed: SeaweedUpstream,
    page: Page,
    network: NetworkLog,
    keys: Keys,
) -> None:
    admin = gateway.human("admin")
    login(page, gateway, admin.username)

    # The 30-day preset.
    page.get_by_role("link", name="Create Service User").click()
    expect(page).to_have_url(f"{gateway.url}/ui/service-users/new")
    name = unique("nightly-etl")
    page.get_by_label("Name", exact=True).fill(name)
    expect(page.get_by_label("Tenant")).to_have_value("default")
    page.get_by_label("Description").fill("the nightly load")
    page.get_by_label("30 days").check()
    before = time.time()
    page.get_by_role("button", name="Create").click()
    shown = read_key_dialog(page, keys)
    after = time.time()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", level=2)).to_have_text(f"Service user “{name}” created")
    expect(dialog).to_contain_text("shown only this once")
    # Ready-to-paste PyIceberg settings with this key, for this gateway's catalog.
    expect(page.locator("#snippet-pyiceberg")).to_contain_text(f'"{shown.user_id}:{shown.key}"')
    expect(page.locator("#snippet-pyiceberg")).to_contain_text(f"{gateway.url}/v1/default/")
    stored = gateway.call(gateway.admin.get(shown.user_id))
    # The admin's own tenant, preselected in the form although "acme" comes first by name.
    assert (stored.name, stored.role, stored.tenant_name) == (name, Role.TENANT_USER, "default")
    assert stored.expires_at is not None
    assert before + 30 * DAY - 5 <= stored.expires_at <= after + 30 * DAY + 5

    # Neither Escape nor a click on the backdrop closes the dialog; the key stays shown.
    page.keyboard.press("Escape")
    expect(dialog).to_be_visible()
    expect(page.locator("#api-key")).to_have_value(shown.key)
    page.locator(".backdrop").click(position={"x": 5, "y": 5})
    expect(dialog).to_be_visible()
    expect(page.locator("#api-key")).to_have_value(shown.key)
    # The page behind the dialog takes no clicks or focus while it is open.
    expect(page.locator("main")).to_have_attribute("inert", "")
    # Done does nothing until "I have copied the key" is checked.
    sent = len(network.urls())
    page.get_by_role("button", name="Done").click()
    expect(page.get_by_label("I have copied the key")).not_to_be_checked()
    assert page.evaluate("document.getElementById('copied-confirm').validity.valueMissing")
    expect(dialog).to_be_visible()
    expect(page).to_have_url(f"{gateway.url}/ui/service-users")  # still the POST's answer
    assert f"{gateway.url}/ui/service-users/{shown.user_id}" not in network.urls()[sent:]
    finish_key_dialog(page, gateway, shown)
    expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.locator("dl.fields")).to_contain_text(stored.key_id)
    expect(page.locator("#api-key")).to_have_count(0)

    # The date picker: picking a date chooses "On a date".
    dated = unique("quarterly")
    page.goto(f"{gateway.url}/ui/service-users/new")
    page.get_by_label("Name", exact=True).fill(dated)
    day = datetime.fromtimestamp(time.time() + 45 * DAY, UTC).strftime("%Y-%m-%d")
    page.locator("#expires_on").fill(day)
    expect(page.get_by_label("On a date")).to_be_checked()
    page.get_by_role("button", name="Create").click()
    dated_key = read_key_dialog(page, keys)
    expires = gateway.call(gateway.admin.get(dated_key.user_id)).expires_at
    assert expires == datetime.fromisoformat(f"{day}T00:00:00+00:00").timestamp()
    finish_key_dialog(page, gateway, dated_key)
    expect(page.locator("dl.fields")).to_contain_text(f"{day} 00:00:00 UTC")

    # The key from the dialog, as its PyIceberg settings say: namespace, table, append, scan.
    properties = {
        "type": "rest",
        "uri": f"{gateway.url}/v1/default/",
        "credential": f"{shown.user_id}:{shown.key}",
        "oauth2-server-uri": f"{gateway.url}/v1/default/v1/oauth/tokens",
        "scope": "catalog",
        **seaweed.s3_properties(),
    }
    # On a thread of its own: the test's thread belongs to Playwright's event loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(roundtrip, properties).result(timeout=120)


# -- 2. rotate from the row icon ------------------------------------------------------------------


def test_rotate_from_the_row_icon_kills_the_old_key_and_its_token(
    gateway: RecordingGateway, page: Page, keys: Keys
) -> None:
    admin = gateway.human("admin")
    login(page, gateway, admin.username)
    name = unique("rotating")
    old = create_in_form(page, gateway, name, keys)
    finish_key_dialog(page, gateway, old)
    token = mint_token(gateway, old)
    assert catalog_status(gateway, {"Authorization": f"Bearer {token}"}) == 200
    assert key_status(gateway, old.key) == 200

    page.goto(f"{gateway.url}/ui/service-users")
    page.get_by_role("link", name=f"Rotate the key of {name}").click()
    expect(page).to_have_url(f"{gateway.url}/ui/service-users/{old.user_id}/rotate")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Rotate the key of “{name}”?")
    page.get_by_role("button", name="Rotate key").click()
    new = read_key_dialog(page, keys)
    assert new.user_id == old.user_id and new.key != old.key
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading", level=2)).to_have_text(f"New key for “{name}”")
    expect(dialog).to_contain_text("The old key and its tokens no longer work.")

    # The very next requests: the old key and the token minted from it are refused.
    assert catalog_status(gateway, {"Authorization": f"Bearer {token}"}) == 401
    assert key_status(gateway, old.key) == 401
    assert key_status(gateway, new.key) == 200
    finish_key_dialog(page, gateway, new)
    expect(page.locator("dl.fields")).to_contain_text("Key generation2")


# -- 3. deactivate, activate, delete ---------------------------------------------------------------


def test_deactivate_activate_and_delete_from_the_list(
    gateway: RecordingGateway, page: Page, keys: Keys, console_errors: ConsoleErrors
) -> None:
    admin = gateway.human("admin")
    login(page, gateway, admin.username)
    name = unique("toggled")
    shown = create_in_form(page, gateway, name, keys)
    finish_key_dialog(page, gateway, shown)
    assert key_status(gateway, shown.key) == 200

    page.goto(f"{gateway.url}/ui/service-users?q={name}")
    row = page.locator(f'tr[data-name="{name}"]')
    expect(row.locator(".status")).to_have_text("active")
    row.get_by_role("button", name=f"Deactivate {name}").click()
    expect(page).to_have_url(f"{gateway.url}/ui/service-users")
    expect(row.locator(".status")).to_have_text("deactivated")
    assert key_status(gateway, shown.key) == 401
    row.get_by_role("button", name=f"Activate {name}").click()
    expect(row.locator(".status")).to_have_text("active")
    expect(row.get_by_role("button", name=f"Deactivate {name}")).to_be_visible()
    assert key_status(gateway, shown.key) == 200

    row.get_by_role("link", name=f"Delete {name}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Delete service user “{name}”?")
    # Another name does not confirm it.
    page.get_by_label("to confirm").fill(name + "x")
    with posted(page, f"{gateway.url}/ui/service-users/{shown.user_id}/delete") as answer:
        page.get_by_role("button", name="Delete service user").click()
    assert answer.value.status == 400
    expect(page.get_by_role("heading", level=1)).to_have_text("That did not work")
    took_refusals(page, console_errors, 400)
    assert gateway.service_user_named(name) is not None
    page.go_back()
    page.get_by_label("to confirm").fill(name)
    page.get_by_role("button", name="Delete service user").click()
    expect(page.get_by_role("status")).to_have_text(f"Deleted service user “{name}”.")
    expect(page.locator(f'tr[data-name="{name}"]')).to_have_count(0)
    assert gateway.service_user_named(name) is None
    assert key_status(gateway, shown.key) == 401


# -- 4. a TenantAdmin of another tenant ------------------------------------------------------------


def test_a_tenant_admin_of_another_tenant_sees_none_of_it_and_cannot_create_a_root(
    gateway: RecordingGateway, page: Page, console_errors: ConsoleErrors
) -> None:
    theirs = gateway.user("default-etl")  # a service user of tenant default
    ours = gateway.user("acme-etl", tenant="acme")
    boss = gateway.human("acme-boss", Role.TENANT_ADMIN, "acme")
    login(page, gateway, boss.username)

    expect(page.locator(".who")).to_contain_text("TenantAdmin in acme")
    rows = page.locator("tbody tr")
    names = rows.evaluate_all("rows => rows.map(r => r.dataset.name)")
    assert ours.user.name in names and theirs.user.name not in names
    expect(page.locator("tbody td:nth-child(3)")).to_have_text(["acme"] * len(names))
    # Another tenant's service user is a "Not found" page, as if it did not exist.
    response = page.goto(f"{gateway.url}/ui/service-users/{theirs.user.id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    response = page.goto(f"{gateway.url}/ui/service-users/{theirs.user.id}/rotate")
    assert response is not None and response.status == 404
    took_refusals(page, console_errors, 404, 404)
    # Nor are another tenant's humans listed.
    page.goto(f"{gateway.url}/ui/users")
    assert boss.username in page.locator("tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.name)"
    )
    expect(page.locator("tbody td:nth-child(3)")).to_have_text(
        ["acme"] * page.locator("tbody tr").count()
    )

    # The create form offers no Root role and no other tenant.
    page.goto(f"{gateway.url}/ui/service-users/new")
    options = page.locator("#role option").all_inner_texts()
    assert options == ["TenantAdmin", "TenantUser"]
    expect(page.locator("#tenant")).to_have_count(0)

    # A forged form: Root added to the select by hand, then submitted.
    forged = unique("forged-root")
    page.get_by_label("Name", exact=True).fill(forged)
    page.locator("#role").evaluate("s => s.add(new Option('Root', 'Root', true, true))")
    with posted(page, f"{gateway.url}/ui/service-users") as answer:
        page.get_by_role("button", name="Create").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_role("alert")).to_contain_text("cannot grant a role above your own")
    expect(page.locator("#api-key")).to_have_count(0)
    assert gateway.service_user_named(forged) is None
    took_refusals(page, console_errors, 403)

    # The same with the session's cookie and CSRF token, straight from the browser's context,
    # for the other tenant too.
    page.goto(f"{gateway.url}/ui/service-users/new")
    csrf = page.locator("main input[name=csrf]").input_value()
    for fields in ({"role": "Root"}, {"role": "Root", "tenant": DEFAULT_TENANT}):
        sent = page.request.post(f"{gateway.url}/ui/service-users", form={
            "csrf": csrf, "name": forged, "expiry": "30", **fields,
        }, max_redirects=0)  # fmt: skip
        assert sent.status == 403, sent.text()
        assert "cannot grant a role above your own" in sent.text()
    # And the other tenant with a role it may grant: 404, as if that tenant did not exist.
    sent = page.request.post(f"{gateway.url}/ui/service-users", form={
        "csrf": csrf, "name": forged, "expiry": "30", "tenant": DEFAULT_TENANT,
    }, max_redirects=0)  # fmt: skip
    assert sent.status == 404, sent.text()
    assert gateway.service_user_named(forged) is None


# -- 5. cross-site posts and posts without the CSRF token ---------------------------------------


@dataclass
class Attacker:
    """A page on another origin that posts a form to the gateway as soon as it loads."""

    form: str = ""

    async def page(self, request: web.Request) -> web.Response:
        html = (
            "<!doctype html><title>win a prize</title>" + self.form +
            "<script>document.forms[0].submit()</script>"
        )  # fmt: skip
        return web.Response(text=html, content_type="text/html")


def test_cross_site_and_tokenless_posts_are_refused_and_change_nothing(
    gateway: RecordingGateway, page: Page, console_errors: ConsoleErrors
) -> None:
    admin = gateway.human("admin")
    login(page, gateway, admin.username)
    # Even with the session's real CSRF token in the forged form (as if it had leaked), the
    # Sec-Fetch-Site check refuses a post from another origin.
    csrf = page.locator("input[name=csrf]").first.input_value()
    attacker = Attacker()
    app = web.Application()
    app.router.add_get("/prize", attacker.page)
    target = f"{gateway.url}/ui/service-users"
    with serve_app(app) as base:
        port = base.rsplit(":", 1)[1]
        # 127.0.0.1 on another port: another origin but the same site, so the browser sends
        # the SameSite=Strict cookie; localhost: another site, so it does not.
        for origin, cookie_sent in ((f"http://127.0.0.1:{port}", True),
                                    (f"http://localhost:{port}", False)):  # fmt: skip
            name = unique("cross-site")
            attacker.form = (
                f'<form method="post" action="{target}">'
                f'<input name="csrf" value="{csrf}"><input name="name" value="{name}">'
                '<input name="expiry" value="30"><input name="role" value="Root"></form>'
            )
            with posted(page, target) as answer:
                page.goto(f"{origin}/prize", wait_until="commit")
            assert answer.value.status == 403, (origin, answer.value.text())
            request = answer.value.request
            site = "same-site" if cookie_sent else "cross-site"
            assert request.header_value("sec-fetch-site") == site
            assert request.header_value("origin") == origin
            assert (request.header_value("cookie") is not None) is cookie_sent, origin
            expect(page.get_by_role("alert")).to_have_text("Forbidden: cross-site request")
            assert gateway.service_user_named(name) is None
            took_refusals(page, console_errors, 403)

    # Same origin, but the form's CSRF field removed before it is sent: refused, nothing made.
    name = unique("no-csrf")
    page.goto(f"{gateway.url}/ui/service-users/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.locator("main input[name=csrf]").evaluate("input => input.remove()")
    with posted(page, target) as answer:
        page.get_by_role("button", name="Create").click()
    assert answer.value.status == 403
    assert answer.value.request.header_value("sec-fetch-site") == "same-origin"
    expect(page.get_by_role("alert")).to_have_text(
        "Forbidden: the form is stale or was sent from elsewhere"
    )
    assert gateway.service_user_named(name) is None
    took_refusals(page, console_errors, 403)

    # The same for a toggle in the list: the service user stays active.
    victim = gateway.user("victim")
    page.goto(f"{gateway.url}/ui/service-users?q={victim.user.name}")
    row = page.locator(f'tr[data-name="{victim.user.name}"]')
    row.locator("input[name=csrf]").evaluate("input => input.remove()")
    with posted(page, f"{gateway.url}/ui/service-users/{victim.user.id}/active") as answer:
        row.get_by_role("button", name=f"Deactivate {victim.user.name}").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    took_refusals(page, console_errors, 403)
    assert gateway.call(gateway.admin.get(victim.user.id)).active
    assert key_status(gateway, victim.api_key.plaintext()) == 200


# -- 6. sessions end --------------------------------------------------------------------------


def expect_login_page(context: BrowserContext, gateway: LiveGateway) -> None:
    other = context.new_page()
    other.goto(f"{gateway.url}/ui/service-users")
    expect(other).to_have_url(f"{gateway.url}/ui/login")
    expect(other.get_by_role("heading", level=1)).to_have_text("Log in")


def expect_logged_in(context: BrowserContext, gateway: LiveGateway, username: str) -> None:
    other = context.new_page()
    other.goto(f"{gateway.url}/ui/service-users")
    expect(other).to_have_url(f"{gateway.url}/ui/service-users")
    expect(other.locator(".who")).to_contain_text(username)


def test_the_old_session_cookie_is_refused_after_logout_password_change_and_deletion(
    gateway: RecordingGateway,
    browser: Browser,
    page: Page,
    network: NetworkLog,
    console_errors: ConsoleErrors,
) -> None:
    # Logout.
    admin = gateway.human("leaving")
    login(page, gateway, admin.username)
    copy = with_cookies_of(browser, page, network, console_errors)
    expect_logged_in(copy, gateway, admin.username)  # the copy works while the session lives
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{gateway.url}/ui/login")
    assert page.context.cookies() == []
    expect_login_page(copy, gateway)
    copy.close()

    # A password change, one's own, through the form.
    changing = gateway.human("changing", Role.TENANT_ADMIN)
    login(page, gateway, changing.username)
    copy = with_cookies_of(browser, page, network, console_errors)
    page.get_by_role("link", name="Users", exact=True).click()
    page.locator(f'tr[data-name="{changing.username}"]').get_by_role(
        "link", name="Change password"
    ).click()
    page.get_by_label("Current password").fill(PASSWORD)
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(f"{gateway.url}/ui/login")
    expect_login_page(copy, gateway)
    copy.close()
    page.goto(f"{gateway.url}/ui/users")  # the browser's own cookie is dead as well
    expect(page).to_have_url(f"{gateway.url}/ui/login")
    login(page, gateway, changing.username, NEW_PASSWORD)

    # The admin deleted, by another Root through the admin objects.
    doomed = gateway.human("doomed")
    fresh = fresh_context(browser, network, console_errors)
    doomed_page = fresh.new_page()
    login(doomed_page, gateway, doomed.username)
    copy = with_cookies_of(browser, doomed_page, network, console_errors)
    gateway.call(gateway.app[USERS].delete(doomed.id, actor=admin.id))
    expect_login_page(copy, gateway)
    doomed_page.reload()
    expect(doomed_page).to_have_url(f"{gateway.url}/ui/login")
    copy.close()
    fresh.close()


# -- 7. a grant from the service user's page ---------------------------------------------------


def test_a_grant_added_on_the_service_users_page_is_listed_and_can_be_revoked(
    gateway: RecordingGateway, page: Page, console_errors: ConsoleErrors
) -> None:
    admin = gateway.human("admin")
    etl = gateway.user(unique("granted"))
    login(page, gateway, admin.username)
    detail = f"{gateway.url}/ui/service-users/{etl.user.id}"
    page.goto(detail)
    access = page.locator('section[aria-labelledby="access"]')
    expect(access.locator('tr[data-catalog="default"] .pill')).to_have_text("write")
    expect(access).to_contain_text("No grants of its own.")

    # A glob in a name: the page comes back with the error and what was typed.
    access.get_by_label("Resource").fill("sales.ord*")
    with posted(page, f"{detail}/grants") as answer:
        access.get_by_role("button", name="Add grant").click()
    assert answer.value.status == 400
    expect(page.get_by_role("alert")).to_contain_text("resource: names may not contain *")
    expect(access.get_by_label("Resource")).to_have_value("sales.ord*")
    took_refusals(page, console_errors, 400)

    access.get_by_label("Catalog").select_option("default")
    access.get_by_label("Resource").fill("sales.orders")
    access.get_by_label("Action").select_option("write")
    access.get_by_role("button", name="Add grant").click()
    expect(page).to_have_url(f"{detail}?done=granted#access")
    expect(access.get_by_role("status")).to_have_text("Grant added.")
    (grant,) = gateway.call(gateway.app[GRANTS].grants(service_user_id=etl.user.id))
    assert (grant.catalog, grant.resource, grant.action) == ("default", ORDERS, "write")
    listed = access.locator(f'tr[data-grant="{grant.id}"]')
    expect(listed.locator("td").nth(0)).to_have_text("default:sales.orders")
    expect(listed.locator("td").nth(1)).to_have_text("write")

    listed.get_by_role("button", name="Revoke write on default:sales.orders").click()
    expect(page).to_have_url(f"{detail}?done=revoked#access")
    expect(access.get_by_role("status")).to_have_text("Grant revoked.")
    expect(access).to_contain_text("No grants of its own.")
    assert gateway.call(gateway.app[GRANTS].grants(service_user_id=etl.user.id)) == []


# -- 8. the key, over the whole module ---------------------------------------------------------


def test_no_key_was_logged_or_served_after_its_dialog(
    gateway: RecordingGateway, gateway_logs: LogLines, keys: Keys
) -> None:
    # Runs last in the module (pytest keeps the file's order): every flow above showed keys.
    assert len(keys.shown) >= 5, keys.shown
    access = [line for line in gateway_logs.lines if line.startswith(ACCESS_LOGGER)]
    assert any("path=/ui/service-users " in line for line in access), "no access log?"
    assert any("path=/v1/default/v1/oauth/tokens " in line for line in access)
    # The audit log, a log too: every refusal and change of the module is in it.
    gateway.call(gateway.app[AUDIT].flush())
    audit, total = gateway.call(gateway.store.query_audit(AuditQuery(), limit=100_000, offset=0))
    assert total == len(audit) > 0
    for secret in keys.forms():
        logged = [line for line in gateway_logs.lines if secret in line]
        assert not logged, logged
        assert not [record for record in audit if secret in repr(record)]
    for key in keys.shown:
        # Exactly one answer ever carried the key: the one that showed it (create or rotate).
        carried = [answer for answer in gateway.served if key in answer.body]
        assert len(carried) == 1, [(a.method, a.path) for a in carried]
        (dialog,) = carried
        assert dialog.method == "POST" and dialog.status == 200
        assert dialog.path == "/ui/service-users" or dialog.path.endswith("/rotate")
        parsed = parse_key(key)
        assert parsed is not None
        assert [a for a in gateway.served if parsed.secret in a.body] == carried
