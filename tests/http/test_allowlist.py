"""A service user's IP allowlist (issue 14): its key and its tokens work only from the
networks listed (CIDRs, IPv4 and IPv6), checked on key use, at the token endpoint and on
token use; from elsewhere a good credential gets the same 401 as a bad one. The client address
is the peer, or behind a trusted proxy the first untrusted X-Forwarded-For hop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.errors import UNAUTHENTICATED_MESSAGE
from gateway.settings import ServerSettings
from gateway.state import AUDIT, AUTHENTICATOR

from ..conftest import ENGINES, Gateway, MakeGateway
from .conftest import Worker
from .management_support import (
    assert_error,
    audit,
    call,
    create_service_user,
    matching,
    ok,
    root,
    stored_state,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]

CATALOG = "/v1/namespaces"
INSIDE = "10.20.30.40"
OUTSIDE = "203.0.113.9"
REFUSED = {
    "error": {"message": UNAUTHENTICATED_MESSAGE, "type": "NotAuthorizedException", "code": 401}
}


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    # The test client is the trusted proxy; X-Forwarded-For names the client.
    return await make_gateway(server=ServerSettings(trusted_proxies=("127.0.0.1",)))


async def status_from(gw: Gateway | Worker, address: str, auth: dict[str, str]) -> int:
    client = gw.client if isinstance(gw, Gateway) else gw
    async with client.get(CATALOG, headers={**auth, "X-Forwarded-For": address}) as resp:
        body = await resp.json()
        if resp.status == 401:
            assert body == REFUSED  # the same answer as any bad credential
        return resp.status


async def token_from(gw: Gateway, address: str, user_id: str, key: str) -> tuple[int, Any]:
    form = {"grant_type": "client_credentials", "client_id": user_id, "client_secret": key}
    async with gw.client.post(
        "/v1/oauth/tokens", data=form, headers={"X-Forwarded-For": address}
    ) as resp:
        return resp.status, await resp.json()


async def test_a_key_works_only_from_its_networks_and_the_refusal_is_audited(
    gw: Gateway,
) -> None:
    user, key = await create_service_user(
        gw, root(gw), "etl", allowed_networks=["10.0.0.0/8", "2001:db8::/32"]
    )
    auth = {"X-API-Key": key}

    assert await status_from(gw, INSIDE, auth) == 200
    assert await status_from(gw, "2001:db8:1::7", auth) == 200
    assert await status_from(gw, OUTSIDE, auth) == 401
    assert await status_from(gw, "2001:db9::1", auth) == 401
    assert len(gw.upstream.catalog_requests()) == 2  # the refused never reached the catalog

    await gw.app[AUDIT].flush()
    refusals = matching(await audit(gw), action="auth.failure", target_id=user["id"])
    assert len(refusals) == 2
    assert all(r["detail"].startswith("address_not_allowed: GET ") for r in refusals)
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'pangolin_auth_failures_total{reason="address_not_allowed"} 2.0' in metrics


async def test_the_token_endpoint_and_the_tokens_keep_to_the_networks(gw: Gateway) -> None:
    user, key = await create_service_user(gw, root(gw), "etl", allowed_networks=["10.0.0.0/8"])

    refused, body = await token_from(gw, OUTSIDE, user["id"], key)
    assert (refused, body["error"]) == (401, "invalid_client")
    status, body = await token_from(gw, INSIDE, user["id"], key)
    assert status == 200
    bearer = {"Authorization": f"Bearer {body['access_token']}"}

    assert await status_from(gw, INSIDE, bearer) == 200
    assert await status_from(gw, OUTSIDE, bearer) == 401  # a token taken elsewhere is no use


async def test_the_allowlist_is_kept_in_canonical_form_and_shown(gw: Gateway) -> None:
    user, _ = await create_service_user(
        gw, root(gw), "etl", allowed_networks=["10.1.2.3/8", "192.0.2.7", "10.0.0.0/8", "::1"]
    )
    assert user["allowed_networks"] == ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]
    shown = await ok(gw, "GET", f"/api/v1/service-users/{user['id']}", root(gw))
    assert shown["allowed_networks"] == user["allowed_networks"]


async def test_changing_the_allowlist_takes_effect_at_once_here_and_in_another_worker(
    gw: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    user, key = await create_service_user(gw, root(gw), "etl")
    auth = {"X-API-Key": key}
    worker = await other_worker(gw)
    assert await status_from(gw, OUTSIDE, auth) == 200
    assert await status_from(worker, OUTSIDE, auth) == 200

    path = f"/api/v1/service-users/{user['id']}"
    changed = await ok(gw, "PUT", path, root(gw), body={"allowed_networks": ["10.0.0.0/8"]})
    assert changed["allowed_networks"] == ["10.0.0.0/8"]
    await worker.app[AUTHENTICATOR].check_for_changes()

    for where in (gw, worker):
        assert await status_from(where, OUTSIDE, auth) == 401
        assert await status_from(where, INSIDE, auth) == 200

    cleared = await ok(gw, "PUT", path, root(gw), body={"allowed_networks": []})
    assert cleared["allowed_networks"] == []
    assert await status_from(gw, OUTSIDE, auth) == 200


async def test_without_a_trusted_proxy_a_forwarded_address_is_not_believed(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway()  # no trusted proxies: the peer (127.0.0.1) is the client
    _, key = await create_service_user(gw, root(gw), "etl", allowed_networks=["10.0.0.0/8"])
    assert await status_from(gw, INSIDE, {"X-API-Key": key}) == 401  # a claim, not a fact
    _, local = await create_service_user(gw, root(gw), "local", allowed_networks=["127.0.0.1"])
    assert await status_from(gw, OUTSIDE, {"X-API-Key": local}) == 200


@pytest.mark.parametrize(
    ("networks", "word"),
    [
        (["10.0.0.300"], "is not an IP address or CIDR"),
        (["banana"], "is not an IP address or CIDR"),
        (["10.0.0.0/33"], "is not an IP address or CIDR"),
        ("10.0.0.0/8", "allowed_networks"),
        ([f"10.0.{n // 256}.{n % 256}" for n in range(101)], "allowed_networks"),
        ([7], "allowed_networks"),
    ],
    ids=["octet", "word", "prefix", "not-a-list", "too-many", "number"],
)
async def test_a_bad_allowlist_is_400_and_changes_nothing(
    gw: Gateway, networks: Any, word: str
) -> None:
    user, _ = await create_service_user(gw, root(gw), "etl")
    before = await stored_state(gw)

    created = await call(
        gw, "POST", "/api/v1/service-users", root(gw),
        body={"name": "other", "allowed_networks": networks},
    )  # fmt: skip
    updated = await call(
        gw, "PUT", f"/api/v1/service-users/{user['id']}", root(gw),
        body={"allowed_networks": networks},
    )  # fmt: skip

    assert_error(created, 400, word)
    assert_error(updated, 400, word)
    assert await stored_state(gw) == before
