"""Management API: bad bodies, fields, queries and ids are refused and change nothing."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from ..conftest import Gateway
from .management_support import (
    NEW_PASSWORD,
    NO_BODY,
    PASSWORD,
    assert_error,
    audit,
    call,
    create_service_user,
    login,
    ok,
    root,
    stored_state,
)

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


MAX_BODY = 64 * 1024


# -- bad input ---------------------------------------------------------------------------------

BAD_CREATES = [
    pytest.param({"name": ""}, "name", id="empty-name"),
    pytest.param({"name": "   "}, "name", id="whitespace-name"),
    pytest.param({"name": "n" * 129}, "name", id="129-char-name"),
    pytest.param({"name": "a\x00b"}, "name", id="nul"),
    pytest.param({"name": "a\x1b[31mb"}, "name", id="esc"),
    pytest.param({"name": "a\u009bb"}, "name", id="c1-csi"),
    pytest.param({"name": "a\nb"}, "name", id="newline"),
    pytest.param({}, "name", id="missing-name"),
    pytest.param({"name": None}, "name", id="null-name"),
    pytest.param({"name": 7}, "name", id="number-name"),
    pytest.param({"name": "ok", "colour": "red"}, "colour", id="unknown-field"),
    pytest.param({"name": "ok", "role": 5}, "role", id="numeric-role"),
    pytest.param({"name": "ok", "role": "Boss"}, "role", id="unknown-role"),
    pytest.param({"name": "ok", "description": "d\x1b"}, "description", id="esc-description"),
    pytest.param({"name": "ok", "description": "d" * 1025}, "description", id="long-description"),
    pytest.param({"name": "ok", "expires_in": True}, "expires_in", id="boolean-expires-in"),
    pytest.param({"name": "ok", "expires_in": "60"}, "expires_in", id="string-expires-in"),
    pytest.param({"name": "ok", "expires_in": 0}, "expires_in", id="zero-expires-in"),
    pytest.param({"name": "ok", "expires_in": -5}, "expires_in", id="negative-expires-in"),
    pytest.param({"name": "ok", "expires_in": 1e300}, "expires_in", id="huge-expires-in"),
    pytest.param({"name": "ok", "expires_at": "2031-01-31T00:00:00"}, "expires_at", id="naive"),
    pytest.param({"name": "ok", "expires_at": "2001-01-31T00:00:00Z"}, "expires_at", id="past"),
    pytest.param({"name": "ok", "expires_at": "soon"}, "expires_at", id="not-a-time"),
    pytest.param({"name": "ok", "expires_at": 1999999999}, "expires_at", id="epoch-number"),
    pytest.param(
        {"name": "ok", "expires_at": "2031-01-31T00:00:00Z", "expires_in": 5},
        "expires_at",
        id="both-expiries",
    ),  # fmt: skip
    pytest.param({"name": "ok", "tenant": 1}, "tenant", id="numeric-tenant"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATES)
async def test_a_bad_create_is_a_400_naming_the_field_and_stores_nothing(
    gateway: Gateway, body: dict[str, Any], field: str
) -> None:
    before = await stored_state(gateway)
    reply = await call(gateway, "POST", "/api/v1/service-users", root(gateway), body=body)
    assert_error(reply, 400, field)
    assert "api_key" not in reply.text
    assert await stored_state(gateway) == before


async def test_a_create_in_an_unknown_tenant_is_a_404_naming_the_tenant(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    for path, body in (
        ("/api/v1/service-users", {"name": "etl", "tenant": "nowhere"}),
        ("/api/v1/users", {"username": "kim", "password": PASSWORD, "tenant": "nowhere"}),
    ):
        assert_error(await call(gateway, "POST", path, root(gateway), body=body), 404, "tenant")
    assert await stored_state(gateway) == before


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"name": "etl"', ("JSON",)),
        (b"name=etl", ("JSON",)),
        (b'["etl"]', ("object",)),
        (b'"etl"', ("object",)),
        (b"null", ("object",)),
        (b"\xff\xfe\x00", ("JSON",)),
        (b"[" * 5000 + b"]" * 5000, ()),
    ],
    ids=["truncated", "form", "array", "string", "null", "not-utf8", "deeply-nested"],
)
async def test_a_body_that_is_not_a_json_object_is_a_400_and_stores_nothing(
    gateway: Gateway, raw: bytes, words: tuple[str, ...]
) -> None:
    before = await stored_state(gateway)
    for path in ("/api/v1/service-users", "/api/v1/users", "/api/v1/tenants", "/api/v1/login"):
        assert_error(await call(gateway, "POST", path, root(gateway), raw=raw), 400, *words)
    assert await stored_state(gateway) == before


async def test_text_that_is_not_valid_unicode_is_a_400_naming_the_field(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    lone_surrogate = b'"a\\ud800b"'
    for path, template, field in (
        ("/api/v1/service-users", b'{"name": %s}', "name"),
        ("/api/v1/service-users", b'{"name": "ok", "description": %s}', "description"),
        ("/api/v1/users", b'{"username": "kim", "password": %s}', "password"),
        ("/api/v1/tenants", b'{"name": %s}', "name"),
        ("/api/v1/login", b'{"username": "kim", "password": %s}', "password"),
    ):
        reply = await call(gateway, "POST", path, root(gateway), raw=template % lone_surrogate)
        assert_error(reply, 400, field)
    assert await stored_state(gateway) == before


async def test_hostile_text_in_a_refused_request_cannot_corrupt_or_jam_the_audit_log(
    gateway: Gateway,
) -> None:
    # An unknown field's name and a path id are client text that ends up in failure records.
    for raw in (b'{"\\ud800": 1}', b'{"\\u001b[2J\\u001b[31mred": 1}'):
        reply = await call(gateway, "POST", "/api/v1/service-users", root(gateway), raw=raw)
        assert assert_error(reply, 400, "unknown field").isprintable()
    missing = await call(gateway, "PUT", "/api/v1/service-users/%1B%5B2Jx", root(gateway),
                         body={"description": "x"})  # fmt: skip
    assert_error(missing, 404)

    records = await audit(gateway, outcome="failure")  # the queue flushes fine
    assert len(records) == 3
    for record in records:
        for value in (record["detail"], record["target_id"] or ""):
            assert value.isprintable(), value
    # And the queue keeps working afterwards.
    assert (await login(gateway, "nobody", PASSWORD)).status == 401
    assert len(await audit(gateway, action="login")) == 1


async def test_bad_updates_are_400_naming_the_field_and_change_nothing(gateway: Gateway) -> None:
    created, _ = await create_service_user(gateway, root(gateway), "etl", description="keep")
    path = f"/api/v1/service-users/{created['id']}"
    before = await stored_state(gateway)
    for body, field in (
        ({"active": "yes"}, "active"),
        ({"active": 1}, "active"),
        ({"role": 5}, "role"),
        ({"role": "root"}, "role"),
        ({"expires_in": True}, "expires_in"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2031-01-31T00:00:00"}, "expires_at"),
        ({"description": "x\x00"}, "description"),
        ({"description": None}, "description"),
        ({"name": "renamed"}, "name"),
        ({"key_digest": "00"}, "key_digest"),
        ({"description": "new", "tenant": "acme"}, "tenant"),
        ({}, "description"),
    ):
        assert_error(await call(gateway, "PUT", path, root(gateway), body=body), 400, field)
    assert await stored_state(gateway) == before
    assert await ok(gateway, "GET", path, root(gateway)) == created


async def test_a_body_over_64_kib_is_refused_with_413_and_stores_nothing(gateway: Gateway) -> None:
    before = await stored_state(gateway)
    created, _ = await create_service_user(gateway, root(gateway), "etl")
    huge = {"name": "big", "description": "d" * (MAX_BODY + 1)}
    for method, path in (
        ("POST", "/api/v1/service-users"),
        ("PUT", f"/api/v1/service-users/{created['id']}"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/tenants"),
        ("POST", "/api/v1/login"),
    ):
        assert_error(await call(gateway, method, path, root(gateway), body=huge), 413)
    state = await stored_state(gateway)
    assert state[0] == before[0] + 1  # only "etl"
    unchanged = await ok(gateway, "GET", f"/api/v1/service-users/{created['id']}", root(gateway))
    assert unchanged == created


async def test_a_time_outside_years_1_to_9999_in_utc_is_a_400_and_never_breaks_the_list(
    gateway: Gateway,
) -> None:
    created, _ = await create_service_user(gateway, root(gateway), "etl")
    path = f"/api/v1/service-users/{created['id']}"
    before = await stored_state(gateway)
    for at in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        create = await call(gateway, "POST", "/api/v1/service-users", root(gateway),
                            body={"name": "far", "expires_at": at})  # fmt: skip
        assert_error(create, 400, "expires_at")
        update = await call(gateway, "PUT", path, root(gateway), body={"expires_at": at})
        assert_error(update, 400, "expires_at")
        since = await call(gateway, "GET", "/api/v1/audit?" + urlencode({"since": at}),
                           root(gateway))  # fmt: skip
        assert_error(since, 400, "since")
    assert await stored_state(gateway) == before
    assert (await ok(gateway, "GET", path, root(gateway)))["expires_at"] is None
    # The extremes themselves are fine.
    last = await ok(
        gateway, "PUT", path, root(gateway), body={"expires_at": "9999-12-31T23:59:59Z"}
    )
    assert last["expires_at"] == "9999-12-31T23:59:59Z"
    first = await ok(
        gateway, "PUT", path, root(gateway), body={"expires_at": "0001-01-01T00:00:00Z"}
    )
    assert first["expires_at"] == "0001-01-01T00:00:00Z"
    assert (await ok(gateway, "GET", "/api/v1/service-users", root(gateway)))["total"] == 2


async def test_unknown_paths_and_methods_answer_json_errors(gateway: Gateway) -> None:
    assert_error(await call(gateway, "GET", "/api/v1/nothing-here", root(gateway)), 404)
    wrong_method = await call(gateway, "PATCH", "/api/v1/service-users", root(gateway),
                              body={"name": "x"})  # fmt: skip
    assert_error(wrong_method, 405)
    assert set(wrong_method.headers["Allow"].split(",")) >= {"GET", "POST"}


@pytest.mark.parametrize("path", ["/api/v1/service-users", "/api/v1/users", "/api/v1/audit"])
async def test_bad_pagination_or_filter_queries_are_400_naming_the_parameter(
    gateway: Gateway, path: str
) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("limit=-1", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("limit=", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("limit=%C2%B2", "limit"),  # "²": a digit to str.isdigit(), not to int()
        ("offset=%C2%B2", "offset"),
    ):
        assert_error(await call(gateway, "GET", f"{path}?{query}", root(gateway)), 400, field)
    assert (await ok(gateway, "GET", f"{path}?limit=1000&offset=0", root(gateway)))["limit"] == 1000


async def test_bad_service_user_list_filters_are_400_naming_the_parameter(
    gateway: Gateway,
) -> None:
    for query, field in (("active=yes", "active"), ("active=1", "active"), ("role=Boss", "role")):
        reply = await call(gateway, "GET", f"/api/v1/service-users?{query}", root(gateway))
        assert_error(reply, 400, field)


@pytest.mark.parametrize(
    "target",
    [str(uuid.uuid4()), "../x", "..%2Fx", "%2E%2E%2Fx", "not-a-uuid", "%00", quote("ü" * 40)],
    ids=["random-uuid", "dotdot", "encoded-dotdot", "encoded-dots", "word", "nul", "unicode"],
)
async def test_unknown_ids_are_404_everywhere_and_store_nothing(
    gateway: Gateway, target: str
) -> None:
    before = await stored_state(gateway)
    for method, path, body in (
        ("GET", "/api/v1/service-users/{id}", NO_BODY),
        ("PUT", "/api/v1/service-users/{id}", {"description": "x"}),
        ("POST", "/api/v1/service-users/{id}/rotate", NO_BODY),
        ("DELETE", "/api/v1/service-users/{id}", NO_BODY),
        ("GET", "/api/v1/users/{id}", NO_BODY),
        ("DELETE", "/api/v1/users/{id}", NO_BODY),
        ("PUT", "/api/v1/users/{id}/password", {"password": NEW_PASSWORD}),
        ("DELETE", "/api/v1/tenants/{id}", NO_BODY),
    ):
        reply = await call(gateway, method, path.format(id=target), root(gateway), body=body)
        assert_error(reply, 404)
    assert await stored_state(gateway) == before


# -- strict JSON (RFC 8259) ----------------------------------------------------------------------


STRICT_JSON_CASES = [
    # (raw body, Content-Type, status, words in the message)
    (b'{"name": "a", "role": "TenantUser", "role": "TenantAdmin"}', "application/json", 400,
     ("role", "more than once")),
    (b'{"name": "a", "name": "b"}', "application/json", 400, ("name", "more than once")),
    ('{"name": "a"}'.encode("utf-16"), "application/json", 400, ("UTF-8",)),
    ('{"name": "a"}'.encode("utf-16-be"), "application/json", 400, ("Malformed JSON",)),
    ('{"name": "a"}'.encode("utf-32"), "application/json", 400, ("UTF-8",)),
    (b'\xef\xbb\xbf{"name": "a"}', "application/json", 400, ("byte order mark",)),
    (b'{"name": "a"}', "text/plain", 415, ("application/json",)),
    (b'{"name": "a"}', "application/x-www-form-urlencoded", 415, ("application/json",)),
    (b'{"name": "a"}', "application/json; charset=utf-16", 415, ("UTF-8",)),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "content_type", "status", "words"), STRICT_JSON_CASES)
async def test_management_bodies_must_be_unambiguous_utf8_json_or_nothing_changes(
    gateway: Gateway, raw: bytes, content_type: str, status: int, words: tuple[str, ...]
) -> None:
    victim, _ = await create_service_user(gateway, root(gateway), "victim")
    before = (await gateway.admin.list())[0]
    for method, path in (
        ("POST", "/api/v1/service-users"),
        ("PUT", f"/api/v1/service-users/{victim['id']}"),
        ("POST", "/api/v1/tenants"),  # a body of a tenant's fields: "name" fits here too
    ):
        reply = await call(
            gateway, method, path, root(gateway), raw=raw, headers={"Content-Type": content_type}
        )
        assert_error(reply, status, *words)
    assert (await gateway.admin.list())[0] == before
    assert [t.name for t in await gateway.store.list_tenants()] == ["default"]


async def test_a_body_without_content_type_is_415(gateway: Gateway) -> None:
    url = gateway.client.make_url("/api/v1/service-users")
    async with gateway.client.session.post(
        url, data=b'{"name": "a"}', headers={**root(gateway), "Content-Type": ""}
    ) as resp:
        assert resp.status == 415
    assert [u.name for u in (await gateway.admin.list())[0]] == ["root"]


async def test_json_with_a_utf8_charset_parameter_is_accepted(gateway: Gateway) -> None:
    reply = await call(
        gateway, "POST", "/api/v1/service-users", root(gateway), raw=b'{"name": "ok"}',
        headers={"Content-Type": "application/json; charset=UTF-8"},
    )  # fmt: skip
    assert reply.status == 201, reply.text
