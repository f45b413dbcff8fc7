"""Stale identities (issue 14): listing the service users not used for a while or expiring
soon, and pruning (deactivating) the stale ones, through the API and ``pangolin-admin``, with
a dry run, a confirmation, and one audit record per service user; never the last active
Root, never one above the caller's role, never one in use."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from admin_cli.main import main as admin_main
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey

from ..conftest import ENGINES, Gateway
from ..helpers import key_header
from .management_support import assert_error, audit, call, matching, ok, root, stored_state

pytestmark = [
    pytest.mark.usefixtures("login_delays"),
    pytest.mark.parametrize("store_engine", ENGINES, indirect=True),
]

DAY = 86400
BASE = "/api/v1/service-users"


async def status(gw: Gateway, created: CreatedKey) -> int:
    async with gw.client.get("/v1/namespaces", headers=key_header(created)) as resp:
        await resp.read()
        return resp.status


async def names(gw: Gateway, query: str) -> list[str]:
    page = await ok(gw, "GET", f"{BASE}?{query}", root(gw))
    return [user["name"] for user in page["items"]]


async def aged(gw: Gateway) -> dict[str, Any]:
    """idle (made 100 days ago, used 95 days ago), never (made 100 days ago, never used),
    fresh (used 10 days ago), new (made today, never used), soon (expires in 7 days)."""
    made = {name: await gw.user(name) for name in ("idle", "never", "fresh")}
    gw.clock.advance(5 * DAY)
    assert await status(gw, made["idle"]) == 200
    gw.clock.advance(85 * DAY)
    assert await status(gw, made["fresh"]) == 200
    await gw.flush()
    gw.clock.advance(10 * DAY)
    made["new"] = await gw.user("new")
    made["soon"] = await gw.user("soon", expires_at=gw.clock.now + 7 * DAY)
    return made


async def test_stale_and_expiring_lists_say_which_ones(gateway: Gateway) -> None:
    await aged(gateway)
    # Root was made with the first clock reading and used by these calls: not stale.
    assert await names(gateway, f"unused_for={30 * DAY}") == ["idle", "never"]
    assert await names(gateway, f"unused_for={97 * DAY}") == ["never"]
    assert await names(gateway, f"expiring_within={14 * DAY}") == ["soon"]
    assert await names(gateway, f"expiring_within={3 * DAY}") == []
    reply = await call(gateway, "GET", f"{BASE}?unused_for=soon", root(gateway))
    assert_error(reply, 400, "unused_for")


async def test_a_dry_run_lists_what_a_prune_would_deactivate_and_changes_nothing(
    gateway: Gateway,
) -> None:
    await aged(gateway)
    before = await stored_state(gateway)

    answer = await ok(
        gateway, "POST", f"{BASE}/prune", root(gateway),
        body={"unused_for": 30 * DAY, "dry_run": True},
    )  # fmt: skip

    assert answer["dry_run"] is True
    assert [u["name"] for u in answer["deactivated"]] == ["idle", "never"]
    assert all(u["active"] for u in answer["deactivated"])
    assert await stored_state(gateway) == before


async def test_a_prune_deactivates_the_stale_ones_each_audited(gateway: Gateway) -> None:
    made = await aged(gateway)

    answer = await ok(
        gateway, "POST", f"{BASE}/prune", root(gateway), body={"unused_for": 30 * DAY}
    )

    assert [u["name"] for u in answer["deactivated"]] == ["idle", "never"]
    assert not any(u["active"] for u in answer["deactivated"])
    assert (
        await gateway.client.get("/v1/namespaces", headers=key_header(made["idle"]))
    ).status == 401
    assert (
        await gateway.client.get("/v1/namespaces", headers=key_header(made["fresh"]))
    ).status == 200
    records = matching(await audit(gateway), action="service_user.deactivate")
    assert sorted(r["target_id"] for r in records) == sorted(
        made[n].user.id for n in ("idle", "never")
    )
    assert {r["detail"] for r in records} == {"pruned: unused for 30 days"}
    # Nothing stale is left; a second prune finds nothing (deactivated ones are not active).
    again = await ok(gateway, "POST", f"{BASE}/prune", root(gateway), body={"unused_for": 30 * DAY})
    assert again["deactivated"] == []


async def test_a_prune_keeps_the_last_active_root(gateway: Gateway) -> None:
    # Only Root exists, unused for a year by anything this gateway counted: it stays.
    gateway.clock.advance(365 * DAY)
    other = await gateway.user("admin", role=Role.TENANT_ADMIN)  # the caller, in use
    gateway.clock.advance(1)

    answer = await ok(
        gateway, "POST", f"{BASE}/prune", key_header(other), body={"unused_for": 30 * DAY}
    )

    # A TenantAdmin never reaches a Root (above its role): not even listed.
    assert answer["deactivated"] == [] and answer["kept"] == []
    root_answer = await ok(
        gateway, "POST", f"{BASE}/prune", root(gateway), body={"unused_for": 30 * DAY}
    )
    assert root_answer["deactivated"] == []  # Root just used itself: not stale


async def test_the_last_active_root_is_kept_and_said_to_be(gateway: Gateway) -> None:
    gateway.clock.advance(365 * DAY)  # Root unused for a year, and the only Root

    gone, kept = await gateway.admin.prune(30 * DAY, actor="test")

    assert gone == [] and [u.id for u in kept] == [gateway.root.user.id]
    assert (await gateway.admin.get(gateway.root.user.id)).active


async def test_a_key_used_just_now_in_this_process_is_not_pruned(gateway: Gateway) -> None:
    etl = await gateway.user("etl")
    gateway.clock.advance(100 * DAY)
    # Used now: counted in memory, not yet written (store.last_used_flush_seconds).
    assert (await gateway.client.get("/v1/namespaces", headers=key_header(etl))).status == 200

    answer = await ok(
        gateway, "POST", f"{BASE}/prune", root(gateway), body={"unused_for": 30 * DAY}
    )

    assert [u["name"] for u in answer["deactivated"]] == []


@pytest.mark.parametrize("unused_for", [0, DAY - 1, "90d", None, -DAY])
async def test_a_prune_with_a_bad_span_is_400_and_changes_nothing(
    gateway: Gateway, unused_for: Any
) -> None:
    await aged(gateway)
    before = await stored_state(gateway)
    reply = await call(
        gateway, "POST", f"{BASE}/prune", root(gateway), body={"unused_for": unused_for}
    )
    assert_error(reply, 400, "unused_for")
    assert await stored_state(gateway) == before


def cli(gw: Gateway, tmp_path: Path, *args: str, input: str | None = None) -> Result:
    url = str(gw.client.make_url("")).rstrip("/")
    return CliRunner().invoke(
        admin_main,
        ["--url", url, "--api-key", gw.root.api_key.plaintext(), *args],
        input=input,
        env={"XDG_CONFIG_HOME": str(tmp_path), "PANGOLIN_URL": None, "PANGOLIN_API_KEY": None},
    )


async def test_pangolin_admin_lists_stale_ones_and_prunes_after_asking(
    gateway: Gateway, tmp_path: Path
) -> None:
    await aged(gateway)

    # The CLI is synchronous: it runs in a thread while this loop serves its requests.
    listed = await asyncio.to_thread(cli, gateway, tmp_path, "list-service-users", "--stale", "30d")
    assert listed.exit_code == 0, listed.output
    assert "idle" in listed.stdout and "never" in listed.stdout and "fresh" not in listed.stdout
    expiring = await asyncio.to_thread(
        cli, gateway, tmp_path, "list-service-users", "--expiring", "14d", "--json"
    )
    assert [u["name"] for u in json.loads(expiring.stdout)["items"]] == ["soon"]

    dry = await asyncio.to_thread(
        cli, gateway, tmp_path, "prune-service-users", "--unused-for", "30d", "--dry-run"
    )
    assert dry.exit_code == 0 and "2 would be deactivated." in dry.stderr
    declined = await asyncio.to_thread(
        cli, gateway, tmp_path, "prune-service-users", "--unused-for", "30d", input="n\n"
    )
    assert declined.exit_code == 1 and "Deactivate these 2 service users?" in declined.stderr
    assert await names(gateway, f"unused_for={30 * DAY}&active=true") == ["idle", "never"]

    done = await asyncio.to_thread(
        cli, gateway, tmp_path, "prune-service-users", "--unused-for", "30d", input="y\n"
    )
    assert done.exit_code == 0 and "2 deactivated." in done.stderr
    assert await names(gateway, f"unused_for={30 * DAY}&active=true") == []
