"""Rotation with an overlap (issue 14): ``POST .../rotate`` with ``grace_seconds`` keeps the old
key and its tokens working until the end of the window, then kills them (on the clock, with no
store change); tokens the old key buys meanwhile die with it; rotating again ends an overlap
at once; the default stays "the old key dies now". On both stores, and in a second worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway.identity.service_users import MAX_GRACE
from gateway.state import AUTHENTICATOR

from ..conftest import ENGINES, Gateway
from .conftest import Worker
from .management_support import (
    assert_error,
    audit,
    call,
    catalog_status,
    create_service_user,
    iso,
    key_auth,
    matching,
    mint_token,
    ok,
    root,
    stored_state,
    token_for,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]

GRACE = 600  # shorter than a token's lifetime (3600 s), so only the overlap can end them


async def status_on(worker: Worker, auth: dict[str, str]) -> int:
    async with worker.get("/v1/namespaces", headers=auth) as resp:
        await resp.read()
        return resp.status


async def rotate(gw: Gateway, sid: str, body: Any = None) -> tuple[dict[str, Any], str]:
    kwargs = {} if body is None else {"body": body}
    answer = await ok(gw, "POST", f"/api/v1/service-users/{sid}/rotate", root(gw), **kwargs)
    return answer["service_user"], answer["api_key"]


async def test_during_the_overlap_both_keys_and_the_old_tokens_work_and_then_the_old_die(
    gateway: Gateway,
) -> None:
    created, old_key = await create_service_user(gateway, root(gateway), "etl")
    old_token = await token_for(gateway, created["id"], old_key)

    rotated, new_key = await rotate(gateway, created["id"], {"grace_seconds": GRACE})
    ends = gateway.clock.now + GRACE

    assert rotated["previous_key_id"] == created["key_id"]
    assert rotated["previous_key_expires_at"] == iso(ends)
    for auth in (key_auth(old_key), old_token, key_auth(new_key)):
        assert await catalog_status(gateway, auth) == 200
    # A token the old key buys during the overlap is of the old generation: it dies with it.
    bought = await token_for(gateway, created["id"], old_key)
    assert await catalog_status(gateway, bought) == 200

    gateway.clock.advance(GRACE - 1)
    assert await catalog_status(gateway, key_auth(old_key)) == 200
    gateway.clock.advance(1)  # the window's end: no store change, the clock decides

    for auth in (key_auth(old_key), old_token, bought):
        assert await catalog_status(gateway, auth) == 401
    assert (await mint_token(gateway, created["id"], old_key)).status == 401
    assert await catalog_status(gateway, key_auth(new_key)) == 200
    shown = await ok(gateway, "GET", f"/api/v1/service-users/{created['id']}", root(gateway))
    assert shown["previous_key_id"] is None and shown["previous_key_expires_at"] is None


async def test_a_token_exchanged_from_an_old_token_dies_when_the_overlap_ends(
    gateway: Gateway,
) -> None:
    created, old_key = await create_service_user(gateway, root(gateway), "etl")
    old_token = (await token_for(gateway, created["id"], old_key))["Authorization"].split()[1]
    await rotate(gateway, created["id"], {"grace_seconds": GRACE})
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
        "subject_token": old_token,
        "subject_token_type": "urn:ietf:params:oauth:token-type:access_token",
    }
    async with gateway.client.post("/v1/oauth/tokens", data=form) as resp:
        assert resp.status == 200
        renewed = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    assert await catalog_status(gateway, renewed) == 200

    gateway.clock.advance(GRACE)

    assert await catalog_status(gateway, renewed) == 401


async def test_rotating_again_ends_an_overlap_at_once(gateway: Gateway) -> None:
    created, first = await create_service_user(gateway, root(gateway), "etl")
    _, second = await rotate(gateway, created["id"], {"grace_seconds": GRACE})
    _, third = await rotate(gateway, created["id"], {"grace_seconds": GRACE})
    # One old key at most: the second's overlap keeps it, the first is dead now.
    assert await catalog_status(gateway, key_auth(first)) == 401
    assert await catalog_status(gateway, key_auth(second)) == 200

    rotated, fourth = await rotate(gateway, created["id"])  # no body: no overlap

    for key in (second, third):
        assert await catalog_status(gateway, key_auth(key)) == 401
    assert await catalog_status(gateway, key_auth(fourth)) == 200
    assert rotated["previous_key_id"] is None


async def test_another_worker_honours_the_overlap_and_its_end(
    gateway: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    created, old_key = await create_service_user(gateway, root(gateway), "etl")
    worker = await other_worker(gateway)
    assert await status_on(worker, key_auth(old_key)) == 200

    await rotate(gateway, created["id"], {"grace_seconds": GRACE})
    await worker.app[AUTHENTICATOR].check_for_changes()

    assert await status_on(worker, key_auth(old_key)) == 200
    gateway.clock.advance(GRACE)
    assert await status_on(worker, key_auth(old_key)) == 401


async def test_the_overlap_is_audited_with_the_rotation(gateway: Gateway) -> None:
    created, _ = await create_service_user(gateway, root(gateway), "etl")
    await rotate(gateway, created["id"], {"grace_seconds": GRACE})

    (record,) = matching(await audit(gateway), action="service_user.rotate")
    assert record["target_id"] == created["id"]
    assert record["detail"] == f"old key works for {GRACE} s more"


@pytest.mark.parametrize(
    "grace",
    [-1, MAX_GRACE + 1, "3600", None, True, [60]],
    ids=["negative", "past-a-week", "text", "null", "boolean", "list"],
)
async def test_a_bad_grace_is_400_and_rotates_nothing(gateway: Gateway, grace: Any) -> None:
    created, key = await create_service_user(gateway, root(gateway), "etl")
    before = await stored_state(gateway)

    reply = await call(
        gateway, "POST", f"/api/v1/service-users/{created['id']}/rotate", root(gateway),
        body={"grace_seconds": grace},
    )  # fmt: skip

    assert_error(reply, 400, "grace_seconds")
    assert await stored_state(gateway) == before
    assert await catalog_status(gateway, key_auth(key)) == 200


async def test_a_token_of_the_new_key_works_at_once_on_a_worker_that_has_not_polled(
    gateway: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    # Found by the soak: a client rotates through one worker, buys a token with the new key
    # there and uses it on another worker, whose cache still holds the old generation.
    created, old_key = await create_service_user(gateway, root(gateway), "etl")
    worker = await other_worker(gateway)  # polls an hour away: only the token can tell it
    old_token = await token_for(gateway, created["id"], old_key)
    assert await status_on(worker, old_token) == 200  # the old generation cached there

    _, new_key = await rotate(gateway, created["id"])
    fresh = await token_for(gateway, created["id"], new_key)

    assert await status_on(worker, fresh) == 200
    # What the fresh token taught it holds for the old one too, poll or no poll.
    assert await status_on(worker, old_token) == 401
