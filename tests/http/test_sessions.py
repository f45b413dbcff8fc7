"""Human sessions over HTTP: ``/api/v1/login`` hands out an opaque session token, ``/api/v1/logout``
ends it, and logout, a password change and a deletion end sessions at once on every worker
("another worker" is a second app over the same store file, as ``serve --workers`` runs them,
with its identity-change poll far away so that nothing but the store can tell it)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.settings import StoreSettings
from gateway.state import CONFIGURED

from ..conftest import ENGINES, Gateway, MakeGateway
from ..helpers import bearer
from .conftest import Worker
from .management_support import (
    NEW_PASSWORD,
    assert_error,
    audit,
    call,
    catalog_status,
    create_human,
    login,
    matching,
    me,
    ok,
    root,
    session,
)

pytestmark = [
    pytest.mark.usefixtures("login_delays"),  # the login throttle never sleeps
    # Sessions end on every worker and replica, on both stores (issue 13).
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]


async def status_on(worker: Worker, auth: dict[str, str], path: str = "/api/v1/me") -> int:
    async with worker.get(path, headers=auth) as resp:
        await resp.read()
        return resp.status


async def session_rows(gateway: Gateway) -> list[tuple[Any, ...]]:
    return await gateway.committed_rows("SELECT * FROM sessions ORDER BY created_at")


async def every_row(gateway: Gateway) -> str:
    """Every row of every table, as text (bytes as their repr), to search for a secret."""
    sqlite = not gateway.app[CONFIGURED].settings.store.url
    tables = await gateway.committed_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if sqlite
        else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )
    rows = [await gateway.committed_rows(f"SELECT * FROM {name}") for (name,) in tables]
    return repr(rows)


# -- login and logout ------------------------------------------------------------------------------


async def test_login_answers_an_opaque_session_token_that_is_not_stored(gateway: Gateway) -> None:
    alice = await create_human(gateway, root(gateway), "alice")
    reply = await login(gateway, "alice")
    assert reply.status == 200, reply.text
    answer = reply.body
    assert set(answer) == {"token", "token_type", "expires_in", "user"}
    assert (answer["token_type"], answer["expires_in"]) == ("bearer", 8 * 3600)
    token = answer["token"]
    assert token.startswith("pgs_") and "." not in token  # no JWT: nothing to decode
    assert answer["user"]["id"] == alice["id"]
    ((_, user_id, *_),) = await session_rows(gateway)
    assert user_id == alice["id"]
    secret = token.removeprefix("pgs_")
    assert secret not in await every_row(gateway)
    if not gateway.app[CONFIGURED].settings.store.url:  # the files too: freed pages, the WAL
        for file in Path(gateway.store.path).parent.iterdir():
            assert secret.encode() not in file.read_bytes(), file.name


async def test_logout_ends_the_callers_session_on_every_worker_and_is_audited(
    gateway: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    alice = await create_human(gateway, root(gateway), "alice")
    auth, other_tab = await session(gateway, "alice"), await session(gateway, "alice")
    worker = await other_worker(gateway)
    assert await status_on(worker, auth) == 200

    await ok(gateway, "POST", "/api/v1/logout", auth, status=204)

    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert await status_on(worker, auth) == 401  # no poll, no wait
    assert await status_on(worker, other_tab) == 200  # only that one session ended
    assert_error(await call(gateway, "POST", "/api/v1/logout", auth), 401)
    records = await audit(gateway, action="logout")
    assert [(r["actor"], r["target_id"], r["outcome"]) for r in records] == [
        (alice["id"], alice["id"], "success")
    ]
    assert matching(await audit(gateway, action="login", outcome="success"), actor=alice["id"])


async def test_logout_without_a_session_is_a_clear_refusal(gateway: Gateway) -> None:
    refused = await call(gateway, "POST", "/api/v1/logout", root(gateway))
    assert_error(refused, 400, "session token")
    assert_error(await call(gateway, "POST", "/api/v1/logout"), 401)
    token = bearer(await gateway.token(gateway.root))
    assert_error(await call(gateway, "POST", "/api/v1/logout", token), 400)


@pytest.mark.parametrize("change", ["own password", "reset by an admin", "deletion"])
async def test_a_change_ends_every_session_of_the_user_on_every_worker_at_once(
    gateway: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]], change: str
) -> None:
    alice = await create_human(gateway, root(gateway), "alice")
    await create_human(gateway, root(gateway), "bob")
    sessions = [await session(gateway, "alice") for _ in range(2)]
    bobs = await session(gateway, "bob")
    worker = await other_worker(gateway)
    for auth in sessions:
        assert await status_on(worker, auth) == 200

    path = f"/api/v1/users/{alice['id']}"
    if change == "own password":
        body = {"password": NEW_PASSWORD, "current_password": "correct horse battery staple"}
        await ok(gateway, "PUT", path + "/password", sessions[0], body=body)
    elif change == "reset by an admin":
        await ok(gateway, "PUT", path + "/password", root(gateway), body={"password": NEW_PASSWORD})
    else:
        await ok(gateway, "DELETE", path, root(gateway), status=204)

    for auth in sessions:
        assert await status_on(worker, auth) == 401
        assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert await status_on(worker, bobs) == 200
    assert len(await session_rows(gateway)) == 1  # bob's


async def test_a_session_ended_on_one_worker_is_refused_on_the_other(
    gateway: Gateway, other_worker: Callable[[Gateway], Awaitable[Worker]]
) -> None:
    await create_human(gateway, root(gateway), "alice")
    worker = await other_worker(gateway)
    async with worker.post(
        "/api/v1/login", json={"username": "alice", "password": "correct horse battery staple"}
    ) as resp:
        assert resp.status == 200
        auth = bearer((await resp.json())["token"])
    assert (await me(gateway, auth))["name"] == "alice"  # made there, valid here
    async with worker.post("/api/v1/logout", headers=auth) as resp:
        assert resp.status == 204
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)


# -- timeouts ----------------------------------------------------------------------------------


async def test_an_idle_session_ends_and_a_refusal_changes_nothing(gateway: Gateway) -> None:
    await create_human(gateway, root(gateway), "alice")
    auth = await session(gateway, "alice")
    idle = gateway.app[CONFIGURED].settings.tokens.session_idle_seconds
    assert idle == 30 * 60
    for _ in range(3):  # used every 20 minutes: alive for an hour
        gateway.clock.advance(20 * 60)
        assert (await me(gateway, auth))["name"] == "alice"
    gateway.clock.advance(idle)
    before = await session_rows(gateway)
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert await session_rows(gateway) == before
    failure = (await audit(gateway, action="auth.failure"))[0]
    assert failure["detail"].startswith("idle: ")


async def test_a_busy_session_still_ends_at_its_absolute_lifetime(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await make_gateway(store=StoreSettings(path=str(tmp_path / "abs" / "p.db")))
    await create_human(gateway, root(gateway), "alice")
    reply = await login(gateway, "alice")
    auth, lifetime = bearer(reply.body["token"]), reply.body["expires_in"]
    used = 0
    while used + 25 * 60 < lifetime:
        gateway.clock.advance(25 * 60)
        used += 25 * 60
        assert await catalog_status(gateway, auth) == 403  # alive, but not for catalogs
    gateway.clock.advance(lifetime - used)
    before = await session_rows(gateway)
    assert_error(await call(gateway, "GET", "/api/v1/me", auth), 401)
    assert await catalog_status(gateway, auth) == 401
    assert await session_rows(gateway) == before


async def test_an_unknown_or_forged_session_token_is_a_plain_401(gateway: Gateway) -> None:
    for token in ("pgs_" + "A" * 43, "pgs_short", "pgs_" + "A" * 43 + "."):
        assert_error(await call(gateway, "GET", "/api/v1/me", bearer(token)), 401)
    assert await session_rows(gateway) == []
