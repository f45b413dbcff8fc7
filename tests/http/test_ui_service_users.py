"""Identity → Service Users in the admin UI: the list (columns, filters, paging), create with
each expiry, the one-time key page and its client settings, bad input, rotate (and its
replay), deactivate / activate, delete, and a service user's own page."""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, datetime

import pytest

from gateway.identity.models import Role

from ..conftest import Gateway
from .management_support import (
    CATALOG,
    audit,
    call,
    catalog_status,
    key_auth,
    mint_token,
    ok,
    root,
    secret_forms,
    token_for,
)
from .ui_support import Page, UiSession, human, service_user_named, ui_login, user_named

DAY = 86400.0


def exact(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def admin(gw: Gateway) -> UiSession:
    await human(gw, "alice")
    return await ui_login(gw, "alice")


async def create(session: UiSession, name: str, **fields: str) -> Page:
    page = await session.post("/ui/service-users", {"name": name, "expiry": "90", **fields})
    assert page.status == 200, page.text
    return page


def assert_key_absent(page: Page, api_key: str) -> None:
    for form in secret_forms(api_key):
        assert form not in page.text, page.path
        assert form not in page.location, page.path
        assert all(form not in header for header in page.set_cookies), page.path


# -- the list --------------------------------------------------------------------------------


async def test_the_list_shows_every_column_with_warnings_and_exact_times(
    gateway: Gateway,
) -> None:
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    await gateway.user("old-key")
    gateway.clock.advance(91 * DAY)
    start = gateway.clock()
    fresh = await gateway.user("fresh", expires_at=start + 10 * DAY)
    await gateway.user("later", expires_at=start + 60 * DAY)
    off = await gateway.user("off")
    await gateway.admin.deactivate(off.user.id, actor="test")
    gone = await gateway.user("gone")
    await gateway.admin.expire(gone.user.id, actor="test")
    await gateway.user("boss", Role.TENANT_ADMIN, "acme")
    assert await catalog_status(gateway, key_auth(fresh.api_key.plaintext())) == 200
    gateway.clock.advance(3 * DAY)

    alice = await admin(gateway)  # logged in now: a session would not live for 94 days
    page = await alice.get("/ui/service-users")
    assert page.status == 200
    for column in (
        "Name",
        "Role",
        "Tenant",
        "Status",
        "Expires",
        "Last used",
        "Key age",
        "Created",
    ):
        # (Tenant, Key age and Created are hidden on a phone's width: class="wide-only".)
        assert re.search(rf'<th scope="col"( class="wide-only")?>{column}</th>', page.text)
    rows = page.rows()
    assert set(rows) == {"root", "old-key", "fresh", "later", "off", "gone", "boss"}
    assert "TenantAdmin" in rows["boss"] and '<td class="wide-only">acme</td>' in rows["boss"]
    assert "TenantUser" in rows["fresh"] and '<td class="wide-only">default</td>' in rows["fresh"]
    # Status.
    assert 'status-active">active<' in rows["fresh"]
    assert 'status-deactivated">deactivated<' in rows["off"]
    assert 'status-expired">expired<' in rows["gone"]
    # Expires: within 14 days is flagged "soon"; 57 days away is not; no expiry says never.
    assert f'title="{exact(start + 10 * DAY)}" class="warn">in 7 days</time>' in rows["fresh"]
    assert "soon" in rows["fresh"]
    assert "in 57 days" in rows["later"] and "soon" not in rows["later"]
    assert "never" in rows["boss"] and "soon" not in rows["boss"]
    # Last used: relative, the exact time on hover; never for a key never used.
    assert f'title="{exact(start)}">3 days ago</time>' in rows["fresh"]
    assert re.search(r"<td>never</td>", rows["later"])
    # Key age: flagged past 90 days (the documented rotation interval).
    assert 'class="wide-only warn" title="Older than 90 days: rotate it">94 d' in rows["old-key"]
    assert ">3 d<" in rows["fresh"] and "Older than 90 days" not in rows["fresh"]
    # A Rotate Key icon, a toggle and a delete link on every row.
    for name, row in rows.items():
        assert 'title="Rotate Key"' in row and "/rotate" in row, name
        assert "/delete" in row and "/active" in row, name
    assert 'aria-label="Activate off"' in rows["off"]
    assert 'aria-label="Deactivate fresh"' in rows["fresh"]


async def test_the_key_age_counts_from_the_last_rotation(gateway: Gateway) -> None:
    etl = await gateway.user("etl")
    gateway.clock.advance(100 * DAY)
    alice = await admin(gateway)
    assert "Older than 90 days" in (await alice.get("/ui/service-users")).rows()["etl"]
    await gateway.admin.rotate(etl.user.id, actor="test")
    gateway.clock.advance(2 * DAY)
    alice = await ui_login(gateway, "alice")
    row = (await alice.get("/ui/service-users")).rows()["etl"]
    assert ">2 d<" in row and "Older than 90 days" not in row


async def test_a_key_used_at_90_days_is_not_yet_flagged(gateway: Gateway) -> None:
    await gateway.user("etl")
    gateway.clock.advance(90 * DAY)
    alice = await admin(gateway)
    row = (await alice.get("/ui/service-users")).rows()["etl"]
    assert ">90 d<" in row and "Older than 90 days" not in row


async def filtered(session: UiSession, query: str) -> set[str]:
    page = await session.get(f"/ui/service-users?{query}")
    assert page.status == 200, page.text
    return set(page.rows())


async def test_the_list_filters_by_status_role_staleness_and_name(gateway: Gateway) -> None:
    used = await gateway.user("Nightly-ETL")
    await gateway.user("idle-loader")
    boss = await gateway.user("boss", Role.TENANT_ADMIN)
    off = await gateway.user("off")
    await gateway.admin.deactivate(off.user.id, actor="test")
    gone = await gateway.user("gone")
    await gateway.admin.expire(gone.user.id, actor="test")
    assert await catalog_status(gateway, key_auth(boss.api_key.plaintext())) == 200
    gateway.clock.advance(40 * DAY)
    assert await catalog_status(gateway, key_auth(used.api_key.plaintext())) == 200
    gateway.clock.advance(DAY)

    alice = await admin(gateway)
    assert await filtered(alice, "status=active") == {"root", "Nightly-ETL", "idle-loader", "boss"}
    assert await filtered(alice, "status=deactivated") == {"off"}
    assert await filtered(alice, "status=expired") == {"gone"}
    assert await filtered(alice, "role=TenantAdmin") == {"boss"}
    assert await filtered(alice, "role=Root") == {"root"}
    # Stale: never used, or not for N days.
    assert await filtered(alice, "stale=30") == {"root", "idle-loader", "boss", "off", "gone"}
    assert await filtered(alice, "stale=45") == {"root", "idle-loader", "off", "gone"}
    # Search: part of the name, case-insensitively; combined with the other filters.
    assert await filtered(alice, "q=etl") == {"Nightly-ETL"}
    assert await filtered(alice, "q=LOAD&status=active") == {"idle-loader"}
    assert await filtered(alice, "q=loader&status=deactivated") == set()
    empty = await alice.get("/ui/service-users?q=zzz")
    assert "No service user matches" in empty.text
    # The filter form shows what was chosen.
    chosen = await alice.get("/ui/service-users?status=expired&role=TenantUser&q=go&stale=7")
    assert "<option selected>expired</option>" in chosen.text
    assert "<option selected>TenantUser</option>" in chosen.text
    assert 'name="q" value="go"' in chosen.text and 'value="7"' in chosen.text


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=gone", "status"),
        ("role=God", "role"),
        ("stale=abc", "number"),
        ("stale=-1", "number"),
        ("page=0", "number"),
    ],
)
async def test_a_bad_filter_is_a_400_page_that_says_why(
    gateway: Gateway, query: str, field: str
) -> None:
    alice = await admin(gateway)
    page = await alice.get(f"/ui/service-users?{query}")
    page.assert_refused(400, field)


async def test_the_list_pages_by_50_keeping_the_filters(gateway: Gateway) -> None:
    alice = await admin(gateway)
    for number in range(51):
        await gateway.user(f"bulk-{number:02}")
    first = await alice.get("/ui/service-users")
    assert len(first.rows()) == 50
    assert "52 service users" in first.text and "Page 1 of 2" in first.text
    assert "page=2" in first.text and "Previous" not in first.text
    second = await alice.get("/ui/service-users?page=2")
    assert set(second.rows()) == {"bulk-50", "root"}
    assert "Page 2 of 2" in second.text and "page=1" in second.text
    assert "Next" not in second.text
    searched = await alice.get("/ui/service-users?q=bulk&page=2")
    assert set(searched.rows()) == {"bulk-50"}
    assert "q=bulk" in html.unescape(searched.text)
    beyond = await alice.get("/ui/service-users?page=3")
    assert beyond.rows() == {}


# -- create ----------------------------------------------------------------------------------


async def test_the_create_form_offers_the_expiry_presets_and_the_grantable_roles(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    page = await alice.get("/ui/service-users/new")
    assert page.status == 200
    for value in ("30", "90", "365", "never", "date"):
        assert f'name="expiry" value="{value}"' in page.text
    assert 'name="expiry" value="90" checked' in page.text
    assert 'type="date"' in page.text
    for role in ("Root", "TenantAdmin", "TenantUser"):
        assert f">{role}</option>" in page.text
    assert '<label for="name">Name</label>' in page.text


@pytest.mark.parametrize(
    ("fields", "expires_in"),
    [
        ({"expiry": "30"}, 30 * DAY),
        ({"expiry": "90"}, 90 * DAY),
        ({"expiry": "365"}, 365 * DAY),
        ({"expiry": "never"}, None),
    ],
)
async def test_each_expiry_preset_sets_the_expiry(
    gateway: Gateway, fields: dict[str, str], expires_in: float | None
) -> None:
    alice = await admin(gateway)
    page = await create(alice, "etl", **fields)
    user = await gateway.admin.get(page.service_user_id())
    if expires_in is None:
        assert user.expires_at is None
    else:
        assert user.expires_at == gateway.clock() + expires_in
    view = await ok(gateway, "GET", f"/api/v1/service-users/{user.id}", root(gateway))
    assert (view["expires_at"] is None) == (expires_in is None)


async def test_an_expiry_on_a_date_expires_at_that_days_start(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await create(alice, "etl", expiry="date", expires_on="2031-01-15")
    user = await gateway.admin.get(page.service_user_id())
    assert user.expires_at == datetime(2031, 1, 15, tzinfo=UTC).timestamp()
    view = await ok(gateway, "GET", f"/api/v1/service-users/{user.id}", root(gateway))
    assert view["expires_at"].startswith("2031-01-15T00:00:00")


async def test_a_new_service_user_gets_the_role_tenant_and_description_chosen(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    page = await create(
        alice, "acme-etl", role="TenantAdmin", tenant="acme", description="loads the lake"
    )
    user = await gateway.admin.get(page.service_user_id())
    assert (user.role, user.tenant_name, user.description) == (
        Role.TENANT_ADMIN,
        "acme",
        "loads the lake",
    )
    assert user.created_by == (await user_named(gateway, "alice")).id


async def test_the_key_page_shows_the_key_once_with_client_settings_that_work(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    page = await create(alice, "nightly", expiry="30")
    key, user_id = page.key(), page.service_user_id()
    assert page.headers["Cache-Control"] == "no-store"
    assert page.set_cookies == []
    assert "shown only this once" in page.text
    text = html.unescape(page.text)
    base = str(gateway.client.make_url("")).rstrip("/")
    token_uri = f"{base}/v1/default/v1/oauth/tokens"
    # PyIceberg: credential <id>:<key> and the catalog's oauth2-server-uri.
    assert f'"uri": "{base}/v1/default/"' in text
    assert f'"credential": "{user_id}:{key}"' in text
    assert f'"oauth2-server-uri": "{token_uri}"' in text
    # curl with X-API-Key; DuckDB CREATE SECRET with the id and key.
    assert f'curl -H "X-API-Key: {key}" {base}/v1/default/v1/namespaces' in text
    assert "CREATE SECRET pangolin (TYPE iceberg" in text
    assert f"CLIENT_ID '{user_id}'" in text and f"CLIENT_SECRET '{key}'" in text
    assert f"OAUTH2_SERVER_URI '{token_uri}'" in text
    # The dialog closes only by confirming, to the detail page (no key in that URL).
    assert 'id="copied-confirm" required' in text
    assert f'action="/ui/service-users/{user_id}"' in text
    assert "<dialog" not in text
    # The key works through the gateway, to the fake upstream.
    before = len(gateway.upstream.catalog_requests())
    assert await catalog_status(gateway, key_auth(key)) == 200
    forwarded = gateway.upstream.catalog_requests()[before:]
    assert len(forwarded) == 1 and forwarded[0].raw_path.endswith("/v1/namespaces")
    # And so does the snippet's token endpoint, with the snippet's credential.
    async with gateway.client.post(
        "/v1/default/v1/oauth/tokens",
        data={"grant_type": "client_credentials", "client_id": user_id, "client_secret": key},
    ) as resp:
        assert resp.status == 200, await resp.text()


async def test_the_key_never_appears_on_any_later_page_cookie_location_or_log_line(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await admin(gateway)
    page = await create(alice, "nightly")
    key, user_id = page.key(), page.service_user_id()
    assert await catalog_status(gateway, key_auth(key)) == 200
    start = len(alice.history)
    for path in (
        "/ui/service-users",
        f"/ui/service-users/{user_id}",
        "/ui/audit",
        f"/ui/audit?target={user_id}",
        f"/ui/service-users/{user_id}/rotate",
        f"/ui/service-users/{user_id}/delete",
        "/ui/catalogs",
        "/ui/users",
        "/ui/service-users?q=nightly",
    ):
        shown = await alice.get(path)
        assert shown.status == 200, (path, shown.text)
    await alice.post(
        f"/ui/service-users/{user_id}/active",
        {"active": "false", "back": f"/ui/service-users/{user_id}"},
    )
    await alice.post(f"/ui/service-users/{user_id}/active", {"active": "true"})
    again = await alice.post("/ui/service-users", {"name": "nightly", "expiry": "90"})
    assert again.status == 409
    later = alice.history[start:]
    assert len(later) >= 12
    for shown in later:
        assert_key_absent(shown, key)
    records = await audit(gateway)
    assert all(key not in str(record) for record in records)
    assert caplog.records  # the access log saw the requests
    for form in secret_forms(key):
        assert form not in caplog.text


async def test_the_create_form_takes_an_allowlist_one_network_per_line(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await alice.post(
        "/ui/service-users",
        {"name": "etl", "expiry": "30", "allowed_networks": "10.1.2.3/8\r\n2001:db8::/32\n"},
    )
    key = page.key()
    created = await service_user_named(gateway, "etl")
    assert created is not None
    assert created.allowed_networks == ("10.0.0.0/8", "2001:db8::/32")
    assert await catalog_status(gateway, key_auth(key)) == 401  # the test client is 127.0.0.1
    detail = await alice.get(f"/ui/service-users/{created.id}")
    assert "<dt>Allowed from</dt><dd><code>10.0.0.0/8</code>, <code>2001:db8::/32</code></dd>" in (
        detail.text
    )

    refused = await alice.post(
        "/ui/service-users", {"name": "other", "expiry": "30", "allowed_networks": "10.0.0.300"}
    )
    assert refused.status == 400 and "is not an IP address or CIDR" in refused.text
    assert "10.0.0.300" in refused.text  # the form keeps what was typed
    assert await service_user_named(gateway, "other") is None


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [("", 400, ("name",)), ("x" * 129, 400, ("name",)), ("taken", 409, ("name", "already exists"))],
    ids=["empty", "too-long", "duplicate"],
)
async def test_bad_input_shows_the_form_again_naming_the_field_and_creates_nothing(
    gateway: Gateway, name: str, status: int, words: tuple[str, ...]
) -> None:
    alice = await admin(gateway)
    await gateway.user("taken")
    users_before = (await gateway.admin.list(limit=1000))[1]
    failures_before = len(await audit(gateway, action="service_user.create", outcome="failure"))
    page = await alice.post(
        "/ui/service-users", {"name": name, "expiry": "30", "description": "kept"}
    )
    assert page.status == status, page.text
    assert 'class="error" role="alert"' in page.text
    error = re.search(r'role="alert">([^<]*)<', page.text)
    assert error is not None
    for word in words:
        assert word in error.group(1)
    assert '<form method="post" action="/ui/service-users"' in page.text
    assert 'value="kept"' in page.text  # what was typed is kept
    assert 'id="api-key"' not in page.text
    assert (await gateway.admin.list(limit=1000))[1] == users_before
    failures = await audit(gateway, action="service_user.create", outcome="failure")
    assert len(failures) == failures_before + 1
    assert failures[0]["actor"] == (await user_named(gateway, "alice")).id


@pytest.mark.parametrize(
    ("fields", "word"),
    [
        ({"expiry": "date"}, "expires_at"),
        ({"expiry": "soon"}, "expires_at"),
        ({"expiry": "date", "expires_on": "someday"}, "expires_at"),
        ({"expiry": "30", "role": "God"}, "role"),
        ({"expiry": "30", "tenant": "nowhere"}, "tenant"),
    ],
)
async def test_a_bad_expiry_role_or_tenant_is_refused_naming_the_field(
    gateway: Gateway, fields: dict[str, str], word: str
) -> None:
    alice = await admin(gateway)
    page = await alice.post("/ui/service-users", {"name": "etl", **fields})
    assert page.status in (400, 404), page.text
    assert word in page.text
    assert await service_user_named(gateway, "etl") is None


# -- rotate ----------------------------------------------------------------------------------


async def test_rotating_asks_first_then_shows_the_new_key_and_kills_the_old_one(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    old_key = etl.api_key.plaintext()
    old_token = await gateway.token(etl)
    assert await catalog_status(gateway, key_auth(old_key)) == 200
    confirm = await alice.get(f"/ui/service-users/{etl.user.id}/rotate")
    assert confirm.status == 200
    assert "Rotate the key of “etl”?" in confirm.text
    assert etl.user.key_id in confirm.text
    generation = etl.user.key_generation
    assert f'name="generation" value="{generation}"' in confirm.text
    # The GET changed nothing.
    assert (await gateway.admin.get(etl.user.id)).key_generation == generation
    assert await catalog_status(gateway, key_auth(old_key)) == 200

    form = {"generation": str(generation), "csrf": confirm.csrf()}
    page = await alice.post(f"/ui/service-users/{etl.user.id}/rotate", form)
    assert page.status == 200, page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert "New key for “etl”" in page.text and "no longer work" in page.text
    new_key = page.key()
    assert new_key != old_key
    assert await catalog_status(gateway, key_auth(old_key)) == 401
    assert await catalog_status(gateway, {"Authorization": f"Bearer {old_token}"}) == 401
    assert (await mint_token(gateway, etl.user.id, old_key)).status == 401
    assert await catalog_status(gateway, key_auth(new_key)) == 200
    assert await catalog_status(gateway, await token_for(gateway, etl.user.id, new_key)) == 200
    assert new_key in html.unescape(page.text).split("CLIENT_SECRET '")[1]

    # Replaying the same POST (a reload) rotates nothing and shows no key.
    replay = await alice.post(f"/ui/service-users/{etl.user.id}/rotate", form)
    replay.assert_refused(409, "rotated already")
    assert 'id="api-key"' not in replay.text
    assert (await gateway.admin.get(etl.user.id)).key_generation == generation + 1
    assert await catalog_status(gateway, key_auth(new_key)) == 200
    assert len(await audit(gateway, action="service_user.rotate", outcome="success")) == 1


async def test_rotating_with_an_overlap_keeps_the_old_key_until_the_page_says(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    old_key = etl.api_key.plaintext()
    confirm = await alice.get(f"/ui/service-users/{etl.user.id}/rotate")
    assert '<option value="86400">1 day</option>' in confirm.text

    form = {"generation": str(etl.user.key_generation), "grace": "86400", "csrf": confirm.csrf()}
    page = await alice.post(f"/ui/service-users/{etl.user.id}/rotate", form)

    assert page.status == 200, page.text
    ends = exact(gateway.clock.now + 86400)
    assert f"keep working until {ends}, then stop" in page.text
    assert await catalog_status(gateway, key_auth(old_key)) == 200
    detail = await alice.get(f"/ui/service-users/{etl.user.id}")
    assert f"<code>{etl.user.key_id}</code> and its tokens keep working until" in detail.text
    # Rotating again offers to end it, and does.
    again = await alice.get(f"/ui/service-users/{etl.user.id}/rotate")
    assert "stops working now either way" in again.text
    generation = str(etl.user.key_generation + 1)
    await alice.post(
        f"/ui/service-users/{etl.user.id}/rotate", {"generation": generation, "csrf": again.csrf()}
    )
    assert await catalog_status(gateway, key_auth(old_key)) == 401
    gateway.clock.advance(86400)
    detail = await alice.get(f"/ui/service-users/{etl.user.id}")
    assert "Old key" not in detail.text


@pytest.mark.parametrize("grace", ["60", "-1", "lots", "604801"])
async def test_an_overlap_the_form_does_not_offer_is_refused(gateway: Gateway, grace: str) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    confirm = await alice.get(f"/ui/service-users/{etl.user.id}/rotate")
    form = {"generation": str(etl.user.key_generation), "grace": grace, "csrf": confirm.csrf()}
    page = await alice.post(f"/ui/service-users/{etl.user.id}/rotate", form)
    page.assert_refused(400, "grace")
    assert (await gateway.admin.get(etl.user.id)).key_generation == etl.user.key_generation


async def test_a_rotation_without_the_generation_is_refused(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    page = await alice.post(f"/ui/service-users/{etl.user.id}/rotate", {})
    page.assert_refused(409)
    assert (await gateway.admin.get(etl.user.id)).key_generation == etl.user.key_generation


# -- deactivate / activate -------------------------------------------------------------------


async def test_deactivate_and_activate_toggle_the_key(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    key = key_auth(etl.api_key.plaintext())
    token = {"Authorization": f"Bearer {await gateway.token(etl)}"}
    path = f"/ui/service-users/{etl.user.id}/active"
    off = await alice.post(path, {"active": "false", "back": "/ui/service-users"})
    assert off.status == 303 and off.location == "/ui/service-users"
    assert await catalog_status(gateway, key) == 401
    assert await catalog_status(gateway, token) == 401
    listed = (await alice.get("/ui/service-users")).rows()["etl"]
    assert "deactivated" in listed and 'value="true"' in listed
    detail_back = f"/ui/service-users/{etl.user.id}"
    on = await alice.post(path, {"active": "true", "back": detail_back})
    assert on.status == 303 and on.location == detail_back
    assert await catalog_status(gateway, key) == 200
    assert (await gateway.admin.get(etl.user.id)).active
    assert len(await audit(gateway, action="service_user.deactivate", outcome="success")) == 1
    assert len(await audit(gateway, action="service_user.activate", outcome="success")) == 1


@pytest.mark.parametrize("back", ["https://evil.example/", "//evil.example/", "/api/v1/me"])
async def test_the_toggle_returns_only_to_a_service_users_page(gateway: Gateway, back: str) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    page = await alice.post(
        f"/ui/service-users/{etl.user.id}/active", {"active": "false", "back": back}
    )
    assert page.status == 303 and page.location == "/ui/service-users"


async def test_a_toggle_to_anything_but_true_or_false_is_refused(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    page = await alice.post(f"/ui/service-users/{etl.user.id}/active", {"active": "no"})
    page.assert_refused(400, "active")
    assert (await gateway.admin.get(etl.user.id)).active


# -- delete ----------------------------------------------------------------------------------


async def test_delete_needs_the_typed_name(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    confirm = await alice.get(f"/ui/service-users/{etl.user.id}/delete")
    assert confirm.status == 200 and "Delete service user “etl”?" in confirm.text
    assert 'name="confirm_name"' in confirm.text
    for typed in ("", "ETL", "etl "):
        page = await alice.post(f"/ui/service-users/{etl.user.id}/delete", {"confirm_name": typed})
        page.assert_refused(400, "name")
    assert await catalog_status(gateway, key_auth(etl.api_key.plaintext())) == 200
    assert await service_user_named(gateway, "etl") is not None


async def test_delete_with_the_right_name_removes_it_and_says_so(gateway: Gateway) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    page = await alice.post(f"/ui/service-users/{etl.user.id}/delete", {"confirm_name": "etl"})
    assert page.status == 303
    assert page.location == "/ui/service-users?deleted=etl"
    after = await alice.get(page.location)
    assert "Deleted service user “etl”." in after.text
    assert "etl" not in after.rows()
    assert await service_user_named(gateway, "etl") is None
    assert await catalog_status(gateway, key_auth(etl.api_key.plaintext())) == 401
    gone = await alice.get(f"/ui/service-users/{etl.user.id}")
    gone.assert_refused(404)


# -- a service user's page -------------------------------------------------------------------


async def test_the_detail_page_shows_every_field_and_the_audit_trail(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await create(alice, "etl", description="loads the lake", expiry="30")
    user_id = page.service_user_id()
    start = gateway.clock()
    gateway.clock.advance(600)
    generation = (await gateway.admin.get(user_id)).key_generation
    rotated = await alice.post(
        f"/ui/service-users/{user_id}/rotate", {"generation": str(generation)}
    )
    key = rotated.key()
    await alice.post(f"/ui/service-users/{user_id}/active", {"active": "false"})
    await alice.post(f"/ui/service-users/{user_id}/active", {"active": "true"})
    assert await catalog_status(gateway, key_auth(key)) == 200
    used = gateway.clock()
    gateway.clock.advance(2 * DAY)
    user = await gateway.admin.get(user_id)
    alice = await ui_login(gateway, "alice")  # the session idled out over the two days

    detail = await alice.get(f"/ui/service-users/{user_id}")
    assert detail.status == 200, detail.text
    text = detail.text
    assert "<h1>etl</h1>" in text and 'status-active">active<' in text
    assert "TenantUser" in text and "default" in text
    for shown in (
        user.id,
        user.key_id,
        "loads the lake",
        exact(start + 30 * DAY),
        exact(used),
        exact(start + 600),
        exact(start),
    ):
        assert shown in text, shown
    assert f"<dt>Key generation</dt><dd>{generation + 1}</dd>" in text
    assert "<dt>Key age</dt><dd>2 days</dd>" in text
    assert "2 days ago" in text  # last used
    assert f"by <code>{(await user_named(gateway, 'alice')).id}</code>" in text
    # The trail: created, rotated, deactivated and activated again.
    trail = text.split("<h2>Audit trail</h2>")[1]
    for action in (
        "service_user.create",
        "service_user.rotate",
        "service_user.deactivate",
        "service_user.activate",
    ):
        assert f"<td>{action}</td>" in trail, action
    # Rotate, toggle and delete from this page too.
    assert f'href="/ui/service-users/{user_id}/rotate"' in text
    assert f'href="/ui/service-users/{user_id}/delete"' in text
    assert ">Deactivate</button>" in text
    assert_key_absent(detail, key)


async def test_the_detail_page_lists_authentication_failures_with_its_key_id(
    gateway: Gateway,
) -> None:
    alice = await admin(gateway)
    etl = await gateway.user("etl")
    wrong = f"pgl_{etl.user.key_id}_{'A' * 43}"
    assert await catalog_status(gateway, key_auth(wrong)) == 401
    assert (await mint_token(gateway, etl.user.id, wrong)).status == 401
    detail = await alice.get(f"/ui/service-users/{etl.user.id}")
    assert detail.status == 200
    assert "Authentication failures with its key id" in detail.text
    failures = detail.text.split("Authentication failures with its key id")[1]
    assert "GET /v1/namespaces" in failures
    assert_key_absent(detail, wrong)
    # Another service user's page shows none of them.
    other = await gateway.user("other")
    clean = await alice.get(f"/ui/service-users/{other.user.id}")
    assert "Authentication failures" not in clean.text


async def test_records_whose_target_a_client_chose_are_not_shown_as_key_failures(
    gateway: Gateway,
) -> None:
    # A refused management call names its path id as the target: with the victim's (public)
    # key id as that id, anyone could otherwise plant rows on the victim's page.
    alice = await admin(gateway)
    victim = await gateway.user("victim")
    for _ in range(3):
        async with gateway.client.delete(f"/api/v1/service-users/{victim.user.key_id}") as resp:
            assert resp.status == 401
    detail = await alice.get(f"/ui/service-users/{victim.user.id}")
    assert "Authentication failures with its key id" not in detail.text


async def test_an_unknown_service_user_is_a_404_page(gateway: Gateway) -> None:
    alice = await admin(gateway)
    missing = "00000000-0000-0000-0000-000000000000"
    for path in (
        f"/ui/service-users/{missing}",
        f"/ui/service-users/{missing}/rotate",
        f"/ui/service-users/{missing}/delete",
    ):
        (await alice.get(path)).assert_refused(404, "Not found")
    page = await alice.post(f"/ui/service-users/{missing}/delete", {"confirm_name": "x"})
    page.assert_refused(404)


async def test_the_api_sees_what_the_ui_made(gateway: Gateway) -> None:
    alice = await admin(gateway)
    page = await create(alice, "etl", expiry="never")
    reply = await call(
        gateway, "GET", f"/api/v1/service-users/{page.service_user_id()}", root(gateway)
    )
    assert reply.status == 200
    assert reply.body["name"] == "etl" and reply.body["expires_at"] is None
    assert await catalog_status(gateway, key_auth(page.key())) == 200
    assert CATALOG == "/v1/namespaces"
