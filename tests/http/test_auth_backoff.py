"""The backoff after failed authentications (``gateway.auth.backoff``), through the real app:
per client address and per (address, key id), answered 429 with Retry-After, merged across
workers and replicas through the store, and never turned against a correct credential.

Clients here are told apart by X-Forwarded-For behind a trusted proxy (the test client's own
address), as a load balancer in front of the gateway makes them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.auth.backoff import AuthBackoff
from gateway.identity.models import ApiKey, generate_key
from gateway.identity.service_users import CreatedKey
from gateway.settings import LimitSettings, ServerSettings
from gateway.state import AUDIT, BACKOFF
from gateway.store import Store, StoreUnavailable

from ..conftest import ENGINES, Gateway, MakeGateway
from .conftest import Worker
from .management_support import audit, matching
from .test_authentication import CallCounter

pytestmark = pytest.mark.parametrize("store_engine", ENGINES, indirect=True)

CATALOG = "/v1/namespaces"
ATTACKER = "203.0.113.66"
VICTIM = "198.51.100.7"
PER_KEY = 3
PER_ADDRESS = 8
WINDOW = 300.0


@pytest.fixture
async def gw(make_gateway: MakeGateway) -> Gateway:
    return await make_gateway(
        server=ServerSettings(trusted_proxies=("127.0.0.0/8",)),
        limits=LimitSettings(
            failed_auth_per_key=PER_KEY,
            failed_auth_per_address=PER_ADDRESS,
            failed_auth_window_seconds=WINDOW,
        ),
    )


def wrong_secret(created: CreatedKey) -> str:
    """The victim's key id (public) with a secret that is not its own."""
    return ApiKey(created.api_key.key_id, generate_key().secret).plaintext()


async def get(
    client: Gateway | Worker, key: str, address: str, path: str = CATALOG
) -> tuple[int, dict[str, str], Any]:
    http = client.client if isinstance(client, Gateway) else client
    headers = {"X-API-Key": key, "X-Forwarded-For": address}
    async with http.get(path, headers=headers) as resp:
        return resp.status, dict(resp.headers), json.loads(await resp.text())


async def statuses(client: Gateway | Worker, key: str, address: str, times: int) -> list[int]:
    return [(await get(client, key, address))[0] for _ in range(times)]


async def test_failures_with_a_key_id_past_the_budget_are_429_with_a_doubling_retry_after(
    gw: Gateway,
) -> None:
    victim = await gw.user("victim")
    bad = wrong_secret(victim)

    assert await statuses(gw, bad, ATTACKER, PER_KEY) == [401] * PER_KEY
    waits = []
    for _ in range(3):
        status, headers, body = await get(gw, bad, ATTACKER)
        assert status == 429
        assert body == {
            "error": {
                "message": "Too many failed authentications from this address; retry later",
                "type": "TooManyRequestsException",
                "code": 429,
            }
        }
        waits.append(int(headers["Retry-After"]))
    assert waits == [1, 2, 4]
    assert not gw.upstream.catalog_requests()  # nothing refused ever reached the catalog


async def test_the_victims_correct_key_is_never_slowed_from_anywhere(gw: Gateway) -> None:
    victim = await gw.user("victim")
    good = victim.api_key.plaintext()
    assert (await get(gw, good, VICTIM))[0] == 200

    # An attacker who knows the key id (the public part of the key) fails with it at length.
    attacked = await statuses(gw, wrong_secret(victim), ATTACKER, 50)
    assert attacked.count(429) == 50 - PER_KEY

    # The victim is untouched: from its own address, and even from the attacker's.
    assert await statuses(gw, good, VICTIM, 5) == [200] * 5
    assert await statuses(gw, good, ATTACKER, 5) == [200] * 5
    # And the attacker's failures never counted against the victim's address.
    assert await statuses(gw, wrong_secret(victim), VICTIM, PER_KEY) == [401] * PER_KEY


async def test_an_address_past_its_budget_is_held_a_new_key_from_it_costs_no_store_read(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_use = await gw.user("in-use")
    fresh = await gw.user("fresh")
    assert (await get(gw, in_use.api_key.plaintext(), ATTACKER))[0] == 200  # now cached

    # Made-up keys from one address: each would be a store read (unknown key ids).
    answers = await statuses(gw, generate_key().plaintext(), ATTACKER, PER_ADDRESS + 1)
    assert answers == [401] * PER_ADDRESS + [429]
    counter = CallCounter(monkeypatch, gw.app[BACKOFF]._store)  # type: ignore[arg-type]
    for _ in range(20):
        status, headers, _ = await get(gw, generate_key().plaintext(), ATTACKER)
        assert status == 429 and int(headers["Retry-After"]) >= 1
    assert counter.calls.get("service_user_by_key_id", 0) == 0

    # A key already in use from the held address works; a key's first use waits there ...
    assert (await get(gw, in_use.api_key.plaintext(), ATTACKER))[0] == 200
    assert (await get(gw, fresh.api_key.plaintext(), ATTACKER))[0] == 429
    # ... and only there.
    assert (await get(gw, fresh.api_key.plaintext(), VICTIM))[0] == 200

    # Once the Retry-After has passed, the held address may cost a store read again.
    gw.clock.advance(WINDOW)
    other = await gw.user("other")
    assert (await get(gw, other.api_key.plaintext(), ATTACKER))[0] == 200


async def test_a_flood_of_failures_is_audited_as_one_backoff_not_one_record_each(
    gw: Gateway,
) -> None:
    victim = await gw.user("victim")
    await statuses(gw, wrong_secret(victim), ATTACKER, 100)
    await gw.app[AUDIT].flush()

    records = await audit(gw)
    assert len(matching(records, action="auth.failure")) == PER_KEY
    (started,) = matching(records, action="auth.backoff")
    assert started["target_id"] == victim.api_key.key_id
    assert started["client_addr"] == ATTACKER
    metrics = await (await gw.client.get("/metrics")).text()
    assert f'pangolin_throttled_requests_total{{scope="key"}} {100 - PER_KEY}.0' in metrics


async def test_an_ipv6_client_is_counted_by_its_64_prefix(gw: Gateway) -> None:
    # Every address of one /64 is one host's: rotating through them gains no fresh budget.
    answers = [
        (await get(gw, generate_key().plaintext(), f"2001:db8:0:1::{n:x}"))[0]
        for n in range(1, PER_ADDRESS + 2)
    ]
    assert answers == [401] * PER_ADDRESS + [429]
    # Another /64 is another host.
    assert (await get(gw, generate_key().plaintext(), "2001:db8:0:2::1"))[0] == 401


async def test_the_token_endpoint_backs_off_in_the_oauth_error_shape(gw: Gateway) -> None:
    victim = await gw.user("victim")
    form = {
        "grant_type": "client_credentials",
        "client_id": victim.user.id,
        "client_secret": wrong_secret(victim),
    }
    answers = []
    for _ in range(PER_KEY + 1):
        async with gw.client.post(
            "/v1/oauth/tokens", data=form, headers={"X-Forwarded-For": ATTACKER}
        ) as resp:
            answers.append((resp.status, await resp.json(), resp.headers.get("Retry-After")))
    assert [status for status, _, _ in answers] == [401] * PER_KEY + [429]
    assert answers[-1][1]["error"] == "temporarily_unavailable"
    assert answers[-1][2] == "1"

    # The victim's own client credentials still buy a token, from the attacker's address too.
    good = dict(form, client_secret=victim.api_key.plaintext())
    for address in (VICTIM, ATTACKER):
        async with gw.client.post(
            "/v1/oauth/tokens", data=good, headers={"X-Forwarded-For": address}
        ) as resp:
            assert resp.status == 200


async def test_failures_spread_over_two_processes_add_up_through_the_store(
    gw: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    victim = await gw.user("victim")
    bad = wrong_secret(victim)
    worker = await other_worker(gw)
    # Each process alone stays within the budget ...
    assert await statuses(gw, bad, ATTACKER, PER_KEY - 1) == [401] * (PER_KEY - 1)
    assert await statuses(worker, bad, ATTACKER, PER_KEY - 1) == [401] * (PER_KEY - 1)
    # ... and learns the total at its next flush.
    await gw.app[BACKOFF].flush()
    await worker.app[BACKOFF].flush()

    assert (await get(worker, bad, ATTACKER))[0] == 429


async def two_failures_pending(gw: Gateway) -> tuple[AuthBackoff, Store]:
    """Two failures counted and not yet flushed; the backoff and its store."""
    victim = await gw.user("victim")
    await statuses(gw, wrong_secret(victim), ATTACKER, 2)
    backoff = gw.app[BACKOFF]
    return backoff, backoff._store


async def assert_two_failures_stored(gw: Gateway) -> None:
    rows = await gw.committed_rows("SELECT failures FROM failure_counts")
    assert sorted(count for (count,) in rows) == [2, 2]  # the address's and the pair's


async def test_a_refused_flush_keeps_the_failures_for_the_next(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoff, store = await two_failures_pending(gw)
    real = store.add_failures

    async def down(*_: Any) -> dict[bytes, int]:
        raise StoreUnavailable()

    monkeypatch.setattr(store, "add_failures", down)
    await backoff.flush()
    monkeypatch.setattr(store, "add_failures", real)
    await backoff.flush()

    await assert_two_failures_stored(gw)


async def test_the_store_keeps_no_address_or_key_id_of_a_failure_in_clear(gw: Gateway) -> None:
    victim = await gw.user("victim")
    await statuses(gw, wrong_secret(victim), ATTACKER, 2)
    await gw.app[BACKOFF].flush()

    rows = await gw.committed_rows("SELECT key FROM failure_counts")
    stored = b"".join(bytes(key) for (key,) in rows)
    assert len(rows) == 2
    assert ATTACKER.encode() not in stored
    assert victim.api_key.key_id.encode() not in stored


async def test_missing_credentials_are_not_failures(gw: Gateway) -> None:
    for _ in range(PER_ADDRESS * 2):
        async with gw.client.get(CATALOG, headers={"X-Forwarded-For": ATTACKER}) as resp:
            assert resp.status == 401
    assert not gw.app[BACKOFF].held


async def test_a_shutdown_during_a_flush_waits_for_it_and_loses_nothing(
    gw: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    backoff, store = await two_failures_pending(gw)
    real = store.add_failures
    writing, release = asyncio.Event(), asyncio.Event()

    async def slow(*args: Any) -> dict[bytes, int]:
        writing.set()
        await release.wait()
        return await real(*args)

    monkeypatch.setattr(store, "add_failures", slow)
    task = asyncio.create_task(backoff.run(0))
    await writing.wait()
    task.cancel()  # the app's shutdown, mid-write
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task

    await assert_two_failures_stored(gw)
