"""Management API: the OpenAPI document, and the last permanent Root cannot be retired."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ..conftest import Gateway
from .management_support import (
    NO_BODY,
    assert_error,
    audit,
    call,
    create_service_user,
    key_auth,
    ok,
    root,
)

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


# -- OpenAPI -----------------------------------------------------------------------------------


async def test_the_openapi_document_describes_exactly_the_api_v1_routes(gateway: Gateway) -> None:
    reply = await call(gateway, "GET", "/api/v1/openapi.json")  # public, no credential
    assert reply.status == 200, reply.text
    document = reply.body
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] and document["info"]["version"]
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    registered = {
        (route.method, route.resource.canonical)
        for route in gateway.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/v1/")
        and route.method != "HEAD"
    }
    assert documented == registered

    # Every reference resolves, and every operation answers something.
    schemas = document["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', reply.text)
    assert refs and set(refs) <= set(schemas)
    for operations in document["paths"].values():
        for operation in operations.values():
            assert operation["responses"] and operation["summary"]


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("PUT", {"active": False}),
        ("PUT", {"role": "TenantAdmin"}),
        ("PUT", {"expires_at": "2000-01-01T00:00:00Z"}),
        ("PUT", {"expires_in": 2}),
        ("PUT", {"expires_at": "2999-01-01T00:00:00Z"}),
        ("DELETE", NO_BODY),
    ],
    ids=["deactivate", "demote", "expire", "expire-soon", "expire-one-day", "delete"],
)
async def test_the_last_root_cannot_be_retired(gateway: Gateway, method: str, body: Any) -> None:
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    refused = await call(gateway, method, path, root(gateway), body=body)
    assert_error(refused, 409, "Root")
    assert (await ok(gateway, "GET", "/api/v1/me", root(gateway)))["role"] == "Root"
    assert not await audit(gateway, action="service_user.update", outcome="success")


async def test_a_root_can_be_retired_once_another_root_exists(gateway: Gateway) -> None:
    second, key = await create_service_user(gateway, root(gateway), "second-root", role="Root")
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    await ok(gateway, "DELETE", path, root(gateway), status=204)
    await ok(gateway, "GET", "/api/v1/me", key_auth(key))
    last = await call(gateway, "DELETE", f"/api/v1/service-users/{second['id']}", key_auth(key))
    assert_error(last, 409, "Root")


async def test_an_expiry_is_allowed_on_a_root_while_another_root_never_expires(
    gateway: Gateway,
) -> None:
    second, key = await create_service_user(gateway, root(gateway), "second-root", role="Root")
    path = f"/api/v1/service-users/{gateway.root.user.id}"
    expiring = await ok(gateway, "PUT", path, root(gateway), body={"expires_in": 3600})
    assert expiring["expires_at"] is not None
    # Now the second Root is the last one without an expiry: it must stay that way.
    refused = await call(
        gateway, "PUT", f"/api/v1/service-users/{second['id']}", key_auth(key),
        body={"expires_in": 7200},
    )  # fmt: skip
    assert_error(refused, 409, "expiry")
    # Changes that keep a permanent Root are fine, on either.
    await ok(gateway, "PUT", path, root(gateway), body={"description": "expires in an hour"})
    await ok(gateway, "PUT", path, root(gateway), body={"expires_at": None})
