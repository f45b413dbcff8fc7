"""Management API: the audit log: what is recorded, filtering, and a full or closing queue."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.identity.models import generate_key
from gateway.settings import StoreSettings
from gateway.state import AUDIT

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer
from .management_support import (
    CATALOG,
    CLIENT_ADDR,
    NEW_PASSWORD,
    NO_BODY,
    PASSWORD,
    assert_error,
    assert_no_secrets,
    audit,
    call,
    catalog_status,
    create_human,
    create_service_user,
    iso,
    key_auth,
    login,
    make_acme,
    matching,
    mint_token,
    ok,
    root,
    session,
    stored_state,
    token_for,
)

pytestmark = pytest.mark.usefixtures("login_delays")  # the login throttle never sleeps


# -- audit -------------------------------------------------------------------------------------


async def test_every_lifecycle_action_is_audited_with_actor_target_outcome_and_client(
    gateway: Gateway,
) -> None:
    agent = {"User-Agent": "pangolin-admin/1.0 " + "x" * 300}
    actor = gateway.root.user.id

    async def act(method: str, path: str, body: Any = NO_BODY, status: int = 200) -> Any:
        reply = await call(gateway, method, path, root(gateway), body=body, headers=agent)
        assert reply.status == status, reply.text
        return reply.body if reply.text else None

    created = (await act("POST", "/api/v1/service-users", {"name": "etl"}, 201))["service_user"]
    su = f"/api/v1/service-users/{created['id']}"
    await act("PUT", su, {"description": "d"})
    await act("PUT", su, {"active": False})
    await act("PUT", su, {"active": True})
    await act("POST", f"{su}/rotate")
    await act("DELETE", su, status=204)
    human = await act("POST", "/api/v1/users", {"username": "henry", "password": PASSWORD}, 201)
    await act("PUT", f"/api/v1/users/{human['id']}/password", {"password": NEW_PASSWORD})
    await act("DELETE", f"/api/v1/users/{human['id']}", status=204)
    tenant = await act("POST", "/api/v1/tenants", {"name": "acme"}, 201)
    await act("DELETE", f"/api/v1/tenants/{tenant['id']}", status=204)

    records = await audit(gateway, actor=actor)
    for action, target in (
        ("service_user.create", created["id"]),
        ("service_user.update", created["id"]),
        ("service_user.deactivate", created["id"]),
        ("service_user.activate", created["id"]),
        ("service_user.rotate", created["id"]),
        ("service_user.delete", created["id"]),
        ("user.create", human["id"]),
        ("user.change_password", human["id"]),
        ("user.delete", human["id"]),
        ("tenant.create", tenant["id"]),
        ("tenant.delete", tenant["id"]),
    ):
        (record,) = matching(records, action=action)
        assert record["target_id"] == target, record
        assert record["outcome"] == "success"
        assert record["client_addr"] == CLIENT_ADDR
        assert record["user_agent"] == agent["User-Agent"][:200]
        assert record["at"] == iso(gateway.clock.now)
    (update,) = matching(records, action="service_user.update")
    assert update["target_type"] == "service_user" and "description" in update["detail"]


async def test_logins_token_requests_and_authentication_failures_are_audited(
    gateway: Gateway,
) -> None:
    worker, api_key = await create_service_user(gateway, root(gateway), "worker")
    ivy = await create_human(gateway, root(gateway), "ivy")
    await session(gateway, "ivy")
    assert (await login(gateway, "ivy", "wrong password!")).status == 401
    await token_for(gateway, worker["id"], api_key)
    stranger = generate_key().plaintext()
    assert (await mint_token(gateway, worker["id"], stranger)).status == 401
    assert await catalog_status(gateway, key_auth(stranger)) == 401
    assert (await call(gateway, "GET", "/api/v1/me", key_auth(stranger))).status == 401
    assert (await call(gateway, "GET", "/api/v1/me", bearer("forged"))).status == 401

    records = await audit(gateway)
    assert matching(records, action="login", outcome="success", actor=ivy["id"],
                    target_id=ivy["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="login", outcome="failure", actor=ivy["id"],
                    target_id=ivy["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="token.issue", outcome="success", actor=worker["id"],
                    target_id=worker["id"], client_addr=CLIENT_ADDR)  # fmt: skip
    assert matching(records, action="token.issue", outcome="failure", actor="anonymous",
                    client_addr=CLIENT_ADDR)  # fmt: skip
    (on_catalog,) = matching(records, action="auth.failure", target_type="catalog")
    assert (on_catalog["outcome"], on_catalog["actor"]) == ("failure", "anonymous")
    assert on_catalog["target_id"] == "default" and CATALOG in on_catalog["detail"]
    on_api = matching(records, action="auth.failure", target_type="api")
    assert len(on_api) == 2 and all("/api/v1/me" in r["detail"] for r in on_api)
    assert all(r["client_addr"] == CLIENT_ADDR for r in on_api)
    assert_no_secrets(json.dumps(records), stranger, api_key)


async def test_a_refused_management_action_leaves_a_failure_record(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    await call(gateway, "POST", "/api/v1/service-users", acme.auth,
               body={"name": "sneaky", "role": "Root"})  # fmt: skip
    victim = gateway.root.user.id
    await call(gateway, "POST", f"/api/v1/service-users/{victim}/rotate", acme.auth)
    records = await audit(gateway, actor=acme.admin["id"], outcome="failure")
    (create,) = matching(records, action="service_user.create")
    assert create["detail"].startswith("403") and create["client_addr"] == CLIENT_ADDR
    (rotate,) = matching(records, action="service_user.rotate")
    assert rotate["target_id"] == victim and rotate["detail"].startswith("404")
    assert not await audit(gateway, action="service_user.create", actor=acme.admin["id"],
                           outcome="success")  # fmt: skip


async def test_audit_filters_by_actor_action_target_since_and_outcome_and_paginates(
    gateway: Gateway,
) -> None:
    acme = await make_acme(gateway)
    first, _ = await create_service_user(gateway, root(gateway), "first")
    gateway.clock.advance(100)
    since = iso(gateway.clock.now)
    second, _ = await create_service_user(gateway, acme.auth, "second")
    await ok(gateway, "PUT", f"/api/v1/service-users/{second['id']}", acme.auth,
             body={"active": False})  # fmt: skip
    await call(gateway, "DELETE", f"/api/v1/service-users/{uuid.uuid4()}", acme.auth)

    by_acme = await audit(gateway, actor=acme.admin["id"])
    newest_first = ["service_user.delete", "service_user.deactivate", "service_user.create"]
    assert [r["action"] for r in by_acme] == newest_first
    assert {r["target_id"] for r in await audit(gateway, target=first["id"])} == {first["id"]}
    assert [r["target_id"] for r in await audit(gateway, action="service_user.create",
                                                since=since)] == [second["id"]]  # fmt: skip
    assert {r["outcome"] for r in await audit(gateway, outcome="failure")} == {"failure"}
    assert len(await audit(gateway, since=since, outcome="success")) == 2
    assert await audit(gateway, actor="nobody") == []

    everything = await ok(gateway, "GET", "/api/v1/audit", root(gateway))
    page = await ok(gateway, "GET", "/api/v1/audit?limit=2&offset=1", root(gateway))
    assert (page["total"], page["limit"], page["offset"]) == (everything["total"], 2, 1)
    assert page["items"] == everything["items"][1:3]

    for query, field in (
        ("outcome=maybe", "outcome"),
        ("since=yesterday", "since"),
        ("since=2030-01-01T00:00:00", "since"),
        ("limit=0", "limit"),
    ):
        assert_error(await call(gateway, "GET", f"/api/v1/audit?{query}", root(gateway)), 400,
                     field)  # fmt: skip


async def test_a_tenant_admin_sees_only_its_tenants_audit_records(gateway: Gateway) -> None:
    acme = await make_acme(gateway)
    await create_service_user(gateway, root(gateway), "default-etl")
    own, _ = await create_service_user(gateway, acme.auth, "acme-etl")
    await login(gateway, "nobody", PASSWORD)  # an anonymous failure: no tenant
    seen = await audit(gateway, acme.auth)
    assert seen and all(r["tenant_id"] == acme.tenant["id"] for r in seen)
    assert matching(seen, action="service_user.create", target_id=own["id"])
    assert matching(seen, action="service_user.create", target_id=acme.admin["id"])
    # Root's actions in acme: creating the tenant itself, and its admin.
    filtered = await audit(gateway, acme.auth, actor=gateway.root.user.id)
    assert [(r["action"], r["target_id"]) for r in filtered] == [
        ("service_user.create", acme.admin["id"]),
        ("tenant.create", acme.tenant["id"]),
    ]


async def test_a_duplicate_create_leaves_no_row_and_no_success_record(gateway: Gateway) -> None:
    await create_service_user(gateway, root(gateway), "etl")
    await create_human(gateway, root(gateway), "jack")
    await ok(gateway, "POST", "/api/v1/tenants", root(gateway), status=201, body={"name": "acme"})
    before = await stored_state(gateway)
    for path, body, field in (
        ("/api/v1/service-users", {"name": "etl"}, "name"),
        ("/api/v1/service-users", {"name": "  etl  "}, "name"),  # the same name, once trimmed
        ("/api/v1/users", {"username": "jack", "password": PASSWORD}, "username"),
        ("/api/v1/tenants", {"name": "acme"}, "name"),
    ):
        assert_error(await call(gateway, "POST", path, root(gateway), body=body), 409, field)
    assert await stored_state(gateway) == before
    failures = await audit(gateway, outcome="failure")
    assert {r["action"] for r in failures} == {"service_user.create", "user.create",
                                               "tenant.create"}  # fmt: skip
    assert all(r["detail"].startswith("409") for r in failures)
    # The same name in another tenant is a different service user.
    await create_service_user(gateway, root(gateway), "etl", tenant="acme")


async def test_a_full_audit_queue_drops_and_counts_records_and_answers_normally(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # No background flush during the test, so what is queued, written and dropped is exact.
    store = StoreSettings(path=str(tmp_path / "quiet.db"), audit_flush_seconds=3600)
    gw = await make_gateway(store=store)
    queue = gw.app[AUDIT]
    queue._max_pending = 2
    bad = key_auth(generate_key().plaintext())
    for _ in range(5):
        assert_error(await call(gw, "GET", CATALOG, bad), 401)
    assert_error(await call(gw, "GET", "/api/v1/me", bad), 401)
    assert (queue.pending, queue.dropped) == (2, 4)
    assert await catalog_status(gw, root(gw)) == 200  # the gateway still works

    records = await audit(gw, action="auth.failure")  # flushes the queue first
    assert len(records) == 2 and queue.pending == 0
    assert queue.dropped == 4


async def test_a_shutdown_during_an_audit_write_waits_for_it_and_loses_nothing(
    make_gateway: MakeGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StoreSettings(path=str(tmp_path / "slow.db"), audit_flush_seconds=0.01)
    gw = await make_gateway(store=store)
    writing, release = asyncio.Event(), asyncio.Event()
    real_insert = gw.store.insert_audit_records

    async def slow_insert(records: Any, *, batch: str | None = None) -> bool:  # a spy
        writing.set()
        await release.wait()
        return await real_insert(records, batch=batch)  # the real write, only later

    monkeypatch.setattr(gw.store, "insert_audit_records", slow_insert)
    assert_error(await call(gw, "GET", CATALOG, key_auth(generate_key().plaintext())), 401)
    async with asyncio.timeout(10):
        await writing.wait()  # the writer is inside its write
        closing = asyncio.create_task(gw.client.close())
        (writer,) = (t for t in asyncio.all_tasks() if t.get_name() == "pangolin-audit-writer")
        while not writer.cancelling():  # the shutdown has cancelled the writer mid-write
            await asyncio.sleep(0)
        release.set()
        await closing
    stored = [r for r in await gw.store.audit_records() if r.action == "auth.failure"]
    assert len(stored) == 1
