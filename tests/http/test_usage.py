"""Requests per day per service user: counted in memory where ``last_used`` is, written by the
same batched flush (added to the stored counts, so workers merge), and answered by
``GET /api/v1/service-users/{id}/usage`` with every day present and unflushed counts
included."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.settings import StoreSettings
from gateway.state import AUTHENTICATOR, CONFIGURED

from ..conftest import ENGINES, Gateway, GatewayTestServer, MakeGateway
from ..helpers import bearer, key_header
from .management_support import (
    assert_error,
    call,
    create_human,
    make_acme,
    ok,
    root,
    session,
)
from .test_authentication import CallCounter

DAY = 86400
CATALOG = "/v1/namespaces"

pytestmark = [
    pytest.mark.usefixtures("login_delays"),
    # Requests per day and last_used_at from several processes merge on both stores (issue 13).
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]


async def hit(gateway: Gateway, headers: dict[str, str], times: int = 1) -> None:
    for _ in range(times):
        async with gateway.client.get(CATALOG, headers=headers) as resp:
            assert resp.status == 200, await resp.text()


async def usage(gateway: Gateway, id_: str, query: str = "") -> list[tuple[str, int]]:
    answer = await ok(gateway, "GET", f"/api/v1/service-users/{id_}/usage{query}", root(gateway))
    assert set(answer) == {"days"}
    return [(day["day"], day["requests"]) for day in answer["days"]]


def utc_day(at: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(at, UTC).date().isoformat()


async def test_requests_are_counted_per_utc_day_with_every_day_present(gateway: Gateway) -> None:
    etl = await gateway.user()
    start = gateway.clock.now
    await hit(gateway, key_header(etl), 3)
    gateway.clock.advance(DAY)
    await hit(gateway, bearer(await gateway.token(etl)))  # the token request counts too
    await hit(gateway, key_header(etl))
    gateway.clock.advance(2 * DAY)
    await hit(gateway, key_header(etl))

    days = await usage(gateway, etl.user.id)
    assert len(days) == 14 and days[-1][0] == utc_day(gateway.clock.now)
    assert [d for d, _ in days] == sorted(d for d, _ in days)  # oldest first, no gaps below
    assert dict(days)[utc_day(start)] == 3
    assert dict(days)[utc_day(start + DAY)] == 3  # token request, token use, key use
    assert dict(days)[utc_day(start + 2 * DAY)] == 0
    assert days[-1][1] == 1
    assert sum(n for _, n in days) == 7
    assert [n for _, n in await usage(gateway, etl.user.id, "?days=2")] == [0, 1]
    assert len(await usage(gateway, etl.user.id, "?days=90")) == 90


async def test_counts_still_in_memory_are_in_the_answer_and_nothing_is_counted_twice(
    gateway: Gateway,
) -> None:
    etl = await gateway.user()
    await hit(gateway, key_header(etl), 2)
    assert gateway.app[AUTHENTICATOR].pending_requests_of(etl.user.id) == {
        utc_day(gateway.clock.now): 2
    }
    assert await gateway.store.usage_of(etl.user.id, "2000-01-01") == {}  # nothing written yet
    assert (await usage(gateway, etl.user.id))[-1][1] == 2

    await gateway.flush()
    assert gateway.app[AUTHENTICATOR].pending_requests_of(etl.user.id) == {}
    assert await gateway.store.usage_of(etl.user.id, "2000-01-01") == {
        utc_day(gateway.clock.now): 2
    }
    await hit(gateway, key_header(etl))
    assert (await usage(gateway, etl.user.id))[-1][1] == 3  # 2 stored + 1 pending


async def test_two_credentials_for_one_request_count_one_request(gateway: Gateway) -> None:
    etl = await gateway.user()
    both = {**key_header(etl), **bearer(await gateway.token(etl))}
    await hit(gateway, both)
    assert (await usage(gateway, etl.user.id))[-1][1] == 2  # the token request and this one


async def test_a_token_exchange_counts_one_request_and_a_refused_request_none(
    gateway: Gateway,
) -> None:
    etl = await gateway.user()
    token = await gateway.token(etl)  # 1: the client_credentials request
    exchanged = await gateway.client.post(
        "/v1/oauth/tokens",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
              "subject_token": token,
              "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
              "client_id": etl.user.id, "client_secret": etl.api_key.plaintext()},
    )  # fmt: skip
    assert exchanged.status == 200, await exchanged.text()  # 2: one request, two credentials
    refused = {**key_header(etl), **bearer("not-a-token")}
    async with gateway.client.get(CATALOG, headers=refused) as resp:
        assert resp.status == 401
    assert (await usage(gateway, etl.user.id))[-1][1] == 2


async def test_counting_does_no_store_access_on_the_hot_path(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    etl = await gateway.user()
    headers = key_header(etl)
    await hit(gateway, headers)  # warm the cache
    counter = CallCounter(monkeypatch, gateway.store)
    monkeypatch.setattr(gateway.store, "usage_of", _refuse)
    for _ in range(50):
        gateway.clock.advance(3600)  # across a day boundary or two as well
        await hit(gateway, headers)
    assert counter.calls == {}
    await gateway.flush()  # one transaction for last_used and the counts of every day
    assert counter.calls == {"record_last_used": 1, "transaction": 1}


async def _refuse(*args: object) -> None:
    raise AssertionError("the hot path read the usage table")


async def test_workers_counts_add_up_in_the_store(
    make_gateway: MakeGateway, tmp_path: Path, aiohttp_client: object
) -> None:
    gateway = await make_gateway(
        store=StoreSettings(path=str(tmp_path / "shared" / "p.db"), last_used_flush_seconds=3600)
    )
    etl = await gateway.user()
    other_store = gateway.another_store()
    await other_store.open()
    try:
        settings = gateway.app[CONFIGURED].settings
        app = create_app(settings, store=other_store, clock=gateway.clock)
        worker = await aiohttp_client(GatewayTestServer(app))  # type: ignore[operator]
        try:
            for _ in range(4):
                async with worker.get(CATALOG, headers=key_header(etl)) as resp:
                    assert resp.status == 200
            await hit(gateway, key_header(etl), 3)
            await app[AUTHENTICATOR].flush_last_used()
            await gateway.flush()
            await hit(gateway, key_header(etl))
            await app[AUTHENTICATOR].flush_last_used()  # nothing new there: no write
        finally:
            await worker.close()
    finally:
        await other_store.close()
    await gateway.flush()
    assert (await usage(gateway, etl.user.id))[-1][1] == 8
    assert (await gateway.admin.get(etl.user.id)).last_used_at == gateway.clock.now


async def test_a_flush_that_fails_keeps_the_counts_for_the_next(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    etl = await gateway.user()
    await hit(gateway, key_header(etl), 2)
    real = gateway.store.record_last_used

    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(gateway.store, "record_last_used", broken)
    with pytest.raises(OSError):
        await gateway.flush()
    await hit(gateway, key_header(etl))
    monkeypatch.setattr(gateway.store, "record_last_used", real)
    await gateway.flush()
    assert await gateway.store.usage_of(etl.user.id, "2000-01-01") == {
        utc_day(gateway.clock.now): 3
    }


async def test_usage_follows_the_management_rules(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    etl = await gateway.user()
    path = f"/api/v1/service-users/{etl.user.id}/usage"
    # Another tenant's admin: 404, as for an id that does not exist.
    assert_error(await call(gateway, "GET", path, acme.auth), 404)
    assert_error(await call(gateway, "GET", path, key_header(etl)), 403)  # a TenantUser
    missing = "/api/v1/service-users/00000000-0000-4000-8000-000000000000/usage"
    assert_error(await call(gateway, "GET", missing, root(gateway)), 404)
    for bad in ("0", "91", "-1", "x", "1.5"):
        assert_error(await call(gateway, "GET", f"{path}?days={bad}", root(gateway)), 400, "days")
    assert_error(await call(gateway, "GET", f"{path}?day=3", root(gateway)), 400)
    # A human admin's session sees it like a key of the same role.
    await create_human(gateway, root(gateway), "alice")
    answer = await ok(gateway, "GET", path, await session(gateway, "alice"))
    assert len(answer["days"]) == 14


async def test_old_counts_are_pruned_during_a_flush_at_most_hourly(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    etl = await gateway.user()
    await hit(gateway, key_header(etl))
    await gateway.flush()
    gateway.clock.advance(100 * DAY)
    prunes: list[str | None] = []
    real = gateway.store.record_last_used

    async def spy(last_used: object, **kwargs: object) -> None:
        prunes.append(kwargs.get("prune_before"))  # type: ignore[arg-type]
        await real(last_used, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(gateway.store, "record_last_used", spy)
    for _ in range(2):
        await hit(gateway, key_header(etl))
        await gateway.flush()
    gateway.clock.advance(3601)
    await hit(gateway, key_header(etl))
    await gateway.flush()
    assert prunes[0] == utc_day(gateway.clock.now - 3601 - 90 * DAY)
    assert prunes[1] is None and prunes[2] is not None
    stored = await gateway.store.usage_of(etl.user.id, "2000-01-01")
    assert list(stored.values()) == [3]  # the day 100 days ago is gone


async def test_usage_is_in_the_openapi_document(gateway: Gateway) -> None:
    doc = await ok(gateway, "GET", "/api/v1/openapi.json", None)
    operation = doc["paths"]["/api/v1/service-users/{id}/usage"]["get"]
    assert [p["name"] for p in operation["parameters"] if p["in"] == "query"] == ["days"]
    assert "/api/v1/logout" in doc["paths"]
