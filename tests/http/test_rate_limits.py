"""Per-service-user request rate limits (issue 14, ``gateway.auth.rate_limit``): a default in
the config, an override per service user in the API; over the limit 429 with Retry-After and
the Iceberg error JSON (at the token endpoint the OAuth2 shape); refusals counted in /metrics
and audited once a minute per service user."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest

from gateway.auth.rate_limit import RateLimiter, SharedRates
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey
from gateway.settings import LimitSettings, ServerSettings

from ..conftest import Gateway, MakeGateway
from ..fakes import FakeClock
from ..helpers import key_header
from .management_support import assert_error, audit, call, matching, ok, root

pytestmark = pytest.mark.usefixtures("login_delays")

CATALOG = "/v1/namespaces"


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    # Every service user: 2 requests/s, bursts of 3; but Root, given no limit of its own (0),
    # so that managing and reading the audit never run into it.
    gw = await make_gateway(limits=LimitSettings(requests_per_second=2, burst=3))
    await gw.admin.update(gw.root.user.id, {"rate_limit": 0}, actor="test")
    return gw


async def statuses(gw: Gateway, created: CreatedKey, times: int) -> list[int]:
    found = []
    for _ in range(times):
        async with gw.client.get(CATALOG, headers=key_header(created)) as resp:
            await resp.read()
            found.append(resp.status)
    return found


async def test_past_its_burst_a_service_user_gets_429_with_retry_after_until_tokens_return(
    gw: Gateway,
) -> None:
    etl = await gw.user("etl")
    other = await gw.user("other")

    assert await statuses(gw, etl, 3) == [200, 200, 200]
    async with gw.client.get(CATALOG, headers=key_header(etl)) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert await resp.json() == {
            "error": {
                "message": "Rate limit exceeded for this service user; retry later",
                "type": "TooManyRequestsException",
                "code": 429,
            }
        }
    assert await statuses(gw, other, 3) == [200] * 3  # each service user has its own bucket

    gw.clock.advance(0.5)  # one request's worth at 2/s
    assert await statuses(gw, etl, 2) == [200, 429]
    assert len(gw.upstream.catalog_requests()) == 3 + 3 + 1  # the refused never went upstream


async def test_a_service_users_own_limit_overrides_the_default_and_null_restores_it(
    gw: Gateway,
) -> None:
    answer = await ok(
        gw, "POST", "/api/v1/service-users", root(gw), status=201,
        body={"name": "bulk", "rate_limit": 0},
    )  # fmt: skip
    bulk = answer["service_user"]
    assert (bulk["rate_limit"], bulk["rate_burst"]) == (0.0, None)
    key = {"X-API-Key": answer["api_key"]}
    for _ in range(10):  # 0: no limit at all
        assert (await call(gw, "GET", CATALOG, key)).status == 200

    path = f"/api/v1/service-users/{bulk['id']}"
    slow = await ok(gw, "PUT", path, root(gw), body={"rate_limit": 1, "rate_burst": 1})
    assert (slow["rate_limit"], slow["rate_burst"]) == (1.0, 1)
    assert [(await call(gw, "GET", CATALOG, key)).status for _ in range(2)] == [200, 429]

    back = await ok(gw, "PUT", path, root(gw), body={"rate_limit": None, "rate_burst": None})
    assert (back["rate_limit"], back["rate_burst"]) == (None, None)
    gw.clock.advance(10)
    assert [(await call(gw, "GET", CATALOG, key)).status for _ in range(4)] == [200] * 3 + [429]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"rate_limit": -1}, "rate_limit"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"rate_limit": 2e6}, "rate_limit"),
        ({"rate_burst": 0}, "rate_burst"),
        ({"rate_burst": 1.5}, "rate_burst"),
    ],
)
async def test_a_bad_limit_is_400(gw: Gateway, body: dict[str, Any], field: str) -> None:
    reply = await call(gw, "POST", "/api/v1/service-users", root(gw), body={"name": "x", **body})
    assert_error(reply, 400, field)


async def test_token_requests_count_and_are_refused_in_the_oauth_shape(gw: Gateway) -> None:
    etl = await gw.user("etl")
    form = {"grant_type": "client_credentials", "client_id": etl.user.id,
            "client_secret": etl.api_key.plaintext()}  # fmt: skip
    answers = []
    for _ in range(4):
        async with gw.client.post("/v1/oauth/tokens", data=form) as resp:
            answers.append((resp.status, await resp.json()))
    assert [status for status, _ in answers] == [200, 200, 200, 429]
    assert answers[-1][1] == {
        "error": "temporarily_unavailable",
        "error_description": "Rate limit exceeded for this service user; retry later",
    }


async def test_refusals_are_counted_and_audited_once_a_minute(gw: Gateway) -> None:
    etl = await gw.user("etl")
    assert (await statuses(gw, etl, 20)).count(429) == 17
    gw.clock.advance(60)
    assert (await statuses(gw, etl, 5)).count(429) == 2

    records = matching(await audit(gw), action="rate_limit")
    assert len(records) == 2
    assert {r["target_id"] for r in records} == {etl.user.id}
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'pangolin_throttled_requests_total{scope="rate"} 19.0' in metrics


def test_workers_share_one_table_so_a_limit_is_the_instances() -> None:
    # Two limiters over one shared table, as two workers hold them: the bucket is one.
    memory = SharedRates.create()
    lock = multiprocessing.get_context("spawn").Lock()
    clock = FakeClock()
    try:
        a, b = (
            RateLimiter(SharedRates(memory.name, lock, "host", merges_others=False), clock)
            for _ in range(2)
        )
        waits = [limiter.wait("etl", 2.0, 3) for limiter in (a, b, a, b)]
        assert waits[:3] == [0.0, 0.0, 0.0] and waits[3] == pytest.approx(0.5)
        clock.advance(0.5)
        assert b.wait("etl", 2.0, 3) == 0.0
        assert a.wait("other", 2.0, 3) == 0.0  # another key, another bucket
    finally:
        memory.close()
        memory.unlink()


async def test_requests_without_a_credential_are_limited_per_address_when_asked(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(
        server=ServerSettings(trusted_proxies=("127.0.0.1",)),
        limits=LimitSettings(anonymous_per_second=1, anonymous_burst=2),
    )

    async def anonymous(address: str, path: str = "/healthz") -> int:
        async with gw.client.get(path, headers={"X-Forwarded-For": address}) as resp:
            await resp.read()
            return resp.status

    assert [await anonymous("198.51.100.7") for _ in range(3)] == [200, 200, 429]
    assert await anonymous("198.51.100.8") == 200  # another address, another bucket
    # A /64 is one host: its other addresses share the bucket.
    assert [await anonymous(f"2001:db8::{n}") for n in (1, 2, 3)] == [200, 200, 429]
    # Requests with a credential are not counted there.
    async with gw.client.get(
        CATALOG, headers={**key_header(gw.root), "X-Forwarded-For": "198.51.100.7"}
    ) as resp:
        assert resp.status == 200
    gw.clock.advance(1)
    assert await anonymous("198.51.100.7") == 200
    metrics = await (await gw.client.get("/metrics", headers=key_header(gw.root))).text()
    assert 'pangolin_throttled_requests_total{scope="anonymous"} 2.0' in metrics


async def test_a_management_request_counts_once_however_often_it_asks_for_its_caller(
    gw: Gateway,
) -> None:
    admin = await gw.user("admin", role=Role.TENANT_ADMIN)
    target = await gw.user("target")
    path = f"/api/v1/service-users/{target.user.id}"
    # PUT asks for its caller twice (manager, then the target's check): one request.
    answers = [
        (await call(gw, "PUT", path, key_header(admin), body={"description": str(n)})).status
        for n in range(4)
    ]
    assert answers == [200, 200, 200, 429]


def test_a_lock_left_held_by_a_killed_worker_never_stalls_the_others() -> None:
    memory = SharedRates.create()
    lock = multiprocessing.get_context("spawn").Lock()
    try:
        table = SharedRates(memory.name, lock, "host", merges_others=False)
        limiter = RateLimiter(table, FakeClock())
        lock.acquire()  # as a worker SIGKILLed inside its update would leave it
        # The request passes uncounted after a bounded wait, rather than hang the loop.
        assert [limiter.wait("etl", 1.0, 1) for _ in range(3)] == [0.0, 0.0, 0.0]
    finally:
        memory.close()
        memory.unlink()
