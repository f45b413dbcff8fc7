"""The admin UI in a hostile browser: security headers on every answer, no inline script or
style anywhere (templates and rendered pages), and the CSRF and cross-site checks on every
state-changing request, which refuse and change nothing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

import gateway.ui
from gateway.identity.models import Role
from gateway.settings import ServerSettings

from ..conftest import Gateway, MakeGateway
from .management_support import PASSWORD, stored_state
from .ui_support import (
    CSP,
    Page,
    UiSession,
    assert_ui_headers,
    human,
    inline_problems,
    service_user_named,
    ui_login,
)

UI_DIR = Path(gateway.ui.__file__).parent
TEMPLATES = sorted((UI_DIR / "templates").rglob("*.html"))
EVIL = "https://evil.example"


def origin(gw: Gateway) -> str:
    return str(gw.client.make_url("")).rstrip("/")


async def logged_in_root(gw: Gateway) -> UiSession:
    await human(gw, "alice")
    return await ui_login(gw, "alice")


# -- headers ---------------------------------------------------------------------------------


def test_the_csp_has_no_unsafe_inline_and_forbids_framing() -> None:
    assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert "frame-ancestors 'none'" in CSP and "default-src 'none'" in CSP


async def test_every_kind_of_ui_answer_carries_the_security_headers(gateway: Gateway) -> None:
    anonymous = UiSession(gateway, None)
    login_page = await anonymous.get("/ui/login")
    assert login_page.status == 200
    redirect = await anonymous.get("/ui/service-users")
    assert redirect.status == 303
    missing_static = await anonymous.get("/ui/static/nope.js")
    assert missing_static.status == 404
    alice = await logged_in_root(gateway)
    listing = await alice.get("/ui/service-users")
    not_found = await alice.get("/ui/service-users/00000000-0000-0000-0000-000000000000")
    not_found.assert_refused(404, "Not found")
    forbidden = await alice.post("/ui/service-users", {"name": "x", "csrf": "wrong"})
    forbidden.assert_refused(403)
    for page in (login_page, redirect, missing_static, listing, not_found, forbidden):
        # UiSession checks these on every answer already; said here once more, explicitly.
        assert_ui_headers(page)
        assert page.headers["Cache-Control"] == "no-store", page.path


async def test_a_failed_login_page_carries_the_security_headers(
    gateway: Gateway, login_delays: list[float]
) -> None:
    page = await UiSession(gateway, None).post(
        "/ui/login", {"username": "nobody", "password": "wrong"}, csrf_from=None
    )
    assert page.status == 401
    assert_ui_headers(page)


@pytest.mark.parametrize(
    ("name", "content_type"), [("ui.css", "text/css"), ("ui.js", "text/javascript")]
)
async def test_static_files_are_served_by_the_gateway_with_the_security_headers(
    gateway: Gateway, name: str, content_type: str
) -> None:
    page = await UiSession(gateway, None).get(f"/ui/static/{name}")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith(content_type)
    assert page.text == (UI_DIR / "static" / name).read_text()
    assert_ui_headers(page)


async def test_only_the_listed_static_files_are_served(gateway: Gateway) -> None:
    for name in ("..%2F__init__.py", "ui.css.map", "%2e%2e%2fguard.py"):
        page = await UiSession(gateway, None).get(f"/ui/static/{name}")
        assert page.status == 404, name
        assert "import" not in page.text


async def test_the_key_page_is_no_store(gateway: Gateway) -> None:
    alice = await logged_in_root(gateway)
    page = await alice.post("/ui/service-users", {"name": "nightly", "expiry": "30"})
    assert page.status == 200
    page.key()
    assert page.headers["Cache-Control"] == "no-store"


# -- no inline script or style ---------------------------------------------------------------

_TEMPLATE_PROBLEMS = {
    "an inline style attribute": re.compile(r"\sstyle\s*=", re.IGNORECASE),
    "a <style> element": re.compile(r"<style", re.IGNORECASE),
    "an inline event handler": re.compile(r"\son[a-z]+\s*=", re.IGNORECASE),
    "a javascript: URL": re.compile(r"javascript:", re.IGNORECASE),
    "an inline or outside script": re.compile(
        r"<script(?![^>]*\ssrc=\"/ui/static/[a-z.]+\")[^>]*>", re.IGNORECASE
    ),
    "an outside asset": re.compile(r"(src|href)=\"(https?:)?//", re.IGNORECASE),
}


def test_the_template_scan_finds_every_template() -> None:
    names = {path.relative_to(UI_DIR / "templates").as_posix() for path in TEMPLATES}
    assert {"base.html", "login.html", "service_users/key.html", "users/list.html"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_no_template_has_inline_script_style_or_handlers(template: Path) -> None:
    text = template.read_text()
    for problem, pattern in _TEMPLATE_PROBLEMS.items():
        assert pattern.search(text) is None, f"{template.name}: {problem}"


def test_the_template_scan_would_see_inline_script_and_style() -> None:
    # The scanners themselves: each catches what it is for.
    for bad in (
        '<p style="color:red">',
        "<style>p{}</style>",
        '<a onclick="x()">',
        "<script>alert(1)</script>",
        '<a href="javascript:x()">',
        '<script src="https://cdn.example/x.js"></script>',
    ):
        assert any(p.search(bad) for p in _TEMPLATE_PROBLEMS.values()), bad
        assert inline_problems(f"<html><body>{bad}</body></html>"), bad


def test_the_script_keeps_nothing_in_browser_storage() -> None:
    script = (UI_DIR / "static" / "ui.js").read_text()
    for storage in ("localStorage", "sessionStorage", "document.cookie", "indexedDB"):
        assert storage not in script


# -- CSRF and cross-site requests ------------------------------------------------------------


async def refused_and_unchanged(gw: Gateway, page: Page, before: tuple[int, ...]) -> None:
    page.assert_refused(403, "Not allowed")
    assert await stored_state(gw) == before
    assert await service_user_named(gw, "forged") is None


async def test_a_post_without_the_csrf_field_is_refused_and_changes_nothing(
    gateway: Gateway,
) -> None:
    alice = await logged_in_root(gateway)
    before = await stored_state(gateway)
    page = await alice.post("/ui/service-users", {"name": "forged", "expiry": "30"}, csrf_from=None)
    await refused_and_unchanged(gateway, page, before)


async def test_a_post_with_a_wrong_csrf_token_is_refused(gateway: Gateway) -> None:
    alice = await logged_in_root(gateway)
    before = await stored_state(gateway)
    page = await alice.post(
        "/ui/service-users", {"name": "forged", "expiry": "30", "csrf": "A" * 43}
    )
    await refused_and_unchanged(gateway, page, before)


async def test_the_csrf_token_of_another_session_is_refused(gateway: Gateway) -> None:
    alice = await logged_in_root(gateway)
    await human(gateway, "bob")
    bob = await ui_login(gateway, "bob")
    bobs_token = (await bob.get("/ui/service-users")).csrf()
    before = await stored_state(gateway)
    page = await alice.post(
        "/ui/service-users", {"name": "forged", "expiry": "30", "csrf": bobs_token}
    )
    await refused_and_unchanged(gateway, page, before)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_a_post_from_another_site_is_refused_despite_a_valid_token(
    gateway: Gateway, site: str
) -> None:
    alice = await logged_in_root(gateway)
    before = await stored_state(gateway)
    page = await alice.post(
        "/ui/service-users",
        {"name": "forged", "expiry": "30"},
        headers={"Sec-Fetch-Site": site, "Origin": origin(gateway)},
    )
    await refused_and_unchanged(gateway, page, before)


@pytest.mark.parametrize("sent_origin", [EVIL, "null"])
async def test_without_fetch_metadata_a_foreign_or_null_origin_is_refused(
    gateway: Gateway, sent_origin: str
) -> None:
    alice = await logged_in_root(gateway)
    before = await stored_state(gateway)
    page = await alice.post(
        "/ui/service-users",
        {"name": "forged", "expiry": "30"},
        headers={"Sec-Fetch-Site": None, "Origin": sent_origin},
    )
    await refused_and_unchanged(gateway, page, before)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Sec-Fetch-Site": None, "Origin": "own"},
        {"Sec-Fetch-Site": None, "Origin": None},
    ],
    ids=["same-origin", "user-initiated", "own-origin", "no-browser-headers"],
)
async def test_a_same_origin_post_with_its_token_works(
    gateway: Gateway, headers: dict[str, str | None]
) -> None:
    alice = await logged_in_root(gateway)
    if headers.get("Origin") == "own":
        headers = {**headers, "Origin": origin(gateway)}
    page = await alice.post("/ui/service-users", {"name": "legit", "expiry": "30"}, headers=headers)
    assert page.status == 200, page.text
    page.key()
    assert await service_user_named(gateway, "legit") is not None


async def test_the_same_origin_check_compares_with_the_public_url(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        server=dataclasses.replace(ServerSettings(), public_url="https://gw.example")
    )
    alice = await logged_in_root(gw)
    own = await alice.post(
        "/ui/service-users",
        {"name": "legit", "expiry": "30"},
        headers={"Sec-Fetch-Site": None, "Origin": "https://gw.example"},
    )
    assert own.status == 200, own.text
    # The test server's own address is not the origin browsers see: refused.
    local = await alice.post(
        "/ui/service-users",
        {"name": "forged", "expiry": "30"},
        headers={"Sec-Fetch-Site": None, "Origin": origin(gw)},
    )
    local.assert_refused(403)
    assert await service_user_named(gw, "forged") is None


@pytest.mark.parametrize(
    ("public_url", "sent", "allowed"),
    [
        ("https://gw.example:443", "https://gw.example", True),  # the default port, spelled out
        ("https://gw.example", "https://GW.example:443", True),
        ("https://gw.example", "http://gw.example", False),  # another scheme: another origin
        ("https://gw.example", "https://gw.example:8443", False),
        ("https://gw.example", "https://gw.example:bad", False),
    ],
)
async def test_origins_compare_as_browsers_do_scheme_host_and_port(
    make_gateway: MakeGateway, public_url: str, sent: str, allowed: bool
) -> None:
    gw = await make_gateway(server=dataclasses.replace(ServerSettings(), public_url=public_url))
    alice = await logged_in_root(gw)
    page = await alice.post("/ui/service-users", {"name": "maybe", "expiry": "30"},
                            headers={"Sec-Fetch-Site": None, "Origin": sent})  # fmt: skip
    if allowed:
        assert page.status == 200, page.text
    else:
        page.assert_refused(403)
        assert await service_user_named(gw, "maybe") is None


async def test_a_login_posted_from_another_site_is_refused(gateway: Gateway) -> None:
    await human(gateway, "alice")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": None, "Origin": EVIL}):
        page = await UiSession(gateway, None).post(
            "/ui/login",
            {"username": "alice", "password": PASSWORD},
            csrf_from=None,
            headers=headers,
        )
        page.assert_refused(403, "Not allowed")
        assert page.set_cookies == []


async def test_a_cross_site_or_tokenless_logout_is_refused_and_the_session_lives_on(
    gateway: Gateway,
) -> None:
    alice = await logged_in_root(gateway)
    page = await alice.post("/ui/logout", {}, headers={"Sec-Fetch-Site": "cross-site"})
    page.assert_refused(403)
    page = await alice.post("/ui/logout", {}, csrf_from=None)
    page.assert_refused(403)
    assert (await alice.get("/ui/service-users")).status == 200


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/ui/service-users/{id}/rotate", {"generation": "0"}),
        ("/ui/service-users/{id}/active", {"active": "false"}),
        ("/ui/service-users/{id}/delete", {"confirm_name": "etl"}),
        ("/ui/users", {"username": "mallory", "password": "a long enough password"}),
        ("/ui/tenants", {"name": "forged"}),
    ],
)
async def test_every_state_changing_form_checks_the_csrf_token(
    gateway: Gateway, path: str, form: dict[str, str]
) -> None:
    alice = await logged_in_root(gateway)
    etl = await gateway.user("etl")
    before = await stored_state(gateway)
    key_generation = (await gateway.admin.get(etl.user.id)).key_generation
    page = await alice.post(path.format(id=etl.user.id), form, csrf_from=None)
    page.assert_refused(403)
    assert await stored_state(gateway) == before
    after = await gateway.admin.get(etl.user.id)
    assert after.active and after.key_generation == key_generation


async def test_a_tenant_user_is_refused_by_the_csrf_check_before_any_rule(
    gateway: Gateway,
) -> None:
    await human(gateway, "tina", Role.TENANT_USER)
    tina = await ui_login(gateway, "tina")
    page = await tina.post("/ui/service-users", {"name": "forged"}, csrf_from=None)
    page.assert_refused(403, "stale")


# -- client text is escaped ------------------------------------------------------------------

HOSTILE = '<img src=x onerror="alert(1)">'


async def test_hostile_names_and_descriptions_are_escaped_on_every_page(gateway: Gateway) -> None:
    alice = await logged_in_root(gateway)
    page = await alice.post(
        "/ui/service-users",
        {"name": HOSTILE, "description": '"><script>alert(2)</script>', "expiry": "30"},
    )
    assert page.status == 200, page.text
    user_id = page.service_user_id()
    for path in (
        "/ui/service-users",
        f"/ui/service-users?q={HOSTILE}",
        f"/ui/service-users/{user_id}",
        f"/ui/service-users/{user_id}/rotate",
        f"/ui/service-users/{user_id}/delete",
        "/ui/audit",
    ):
        shown = await alice.get(path)
        assert shown.status == 200, path
        # UiSession found no handler attribute and no inline script on it; and it is there,
        # as text.
        assert HOSTILE not in shown.text and "<script>alert" not in shown.text
    assert "&lt;img src=x onerror=" in (await alice.get("/ui/service-users")).text
    assert len(alice.history) > 6


async def test_a_hostile_username_on_a_failed_login_is_escaped(
    gateway: Gateway, login_delays: list[float]
) -> None:
    page = await UiSession(gateway, None).post(
        "/ui/login", {"username": '"><script>alert(1)</script>', "password": "x"}, csrf_from=None
    )
    assert page.status == 401
    assert "<script>alert" not in page.text
    assert inline_problems(page.text) == []
