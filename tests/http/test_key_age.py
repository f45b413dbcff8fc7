"""The key-age policy (issue 14, ``gateway.auth.key_age``): answers tell a client when its
credential stops working or should be rotated by, the access log reminds once a day per key,
``refuse`` turns a key past the maximum age (and its tokens) away, and /metrics counts the
service users past and near the maximum age."""

from __future__ import annotations

import datetime
import logging

import pytest

from gateway.auth.key_age import EXPIRES_HEADER, NOTICE_HEADER
from gateway.settings import KeySettings
from gateway.state import KEY_POLICY, STORE

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer, key_header

DAY = 86400.0
CATALOG = "/v1/namespaces"


def iso(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def answer(
    gw: Gateway, headers: dict[str, str], path: str = CATALOG
) -> tuple[int, dict[str, str]]:
    async with gw.client.get(path, headers=headers) as resp:
        await resp.read()
        return resp.status, dict(resp.headers)


async def test_without_a_policy_or_an_expiry_nothing_is_said(gateway: Gateway) -> None:
    etl = await gateway.user()
    gateway.clock.advance(1000 * DAY)
    status, headers = await answer(gateway, key_header(etl))
    assert status == 200
    assert EXPIRES_HEADER not in headers and NOTICE_HEADER not in headers


async def test_an_expiry_is_announced_from_notice_days_before_on_every_kind_of_answer(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(keys=KeySettings(notice_days=14))
    ends = gw.clock.now + 20 * DAY
    etl = await gw.user(expires_at=ends)
    assert EXPIRES_HEADER not in (await answer(gw, key_header(etl)))[1]

    gw.clock.advance(7 * DAY)  # 13 days left
    token = bearer(await gw.token(etl))
    for headers, path in ((key_header(etl), CATALOG), (token, CATALOG),
                          (key_header(etl), "/api/v1/me")):  # fmt: skip
        status, got = await answer(gw, headers, path)
        assert status == 200
        assert got[EXPIRES_HEADER] == iso(ends)
        assert got[NOTICE_HEADER] == f"at {iso(ends)} the key stops working"


async def test_warn_says_when_a_key_passes_the_maximum_age_and_keeps_it_working(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(keys=KeySettings(max_age_days=90, notice_days=14))
    etl = await gw.user()
    aged = gw.clock.now + 90 * DAY
    gw.clock.advance(80 * DAY)
    status, got = await answer(gw, key_header(etl))
    assert status == 200
    assert got[NOTICE_HEADER] == (
        f"at {iso(aged)} the key passes the maximum age of 90 days and should be rotated"
    )
    gw.clock.advance(11 * DAY)
    status, got = await answer(gw, key_header(etl))
    assert status == 200 and got[NOTICE_HEADER].startswith(f"since {iso(aged)} ")

    rotated = await gw.admin.rotate(etl.user.id, actor="test")  # a new key starts over
    status, got = await answer(gw, key_header(rotated))
    assert status == 200 and NOTICE_HEADER not in got


async def test_refuse_turns_away_a_key_past_the_maximum_age_and_its_tokens(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(keys=KeySettings(max_age_days=90, max_age_action="refuse"))
    etl = await gw.user()
    gw.clock.advance(90 * DAY - 60)
    token = bearer(await gw.token(etl))  # good for an hour, past the key's maximum age
    assert (await answer(gw, token))[0] == 200
    gw.clock.advance(60)

    assert (await answer(gw, key_header(etl)))[0] == 401
    assert (await answer(gw, token))[0] == 401
    form = {"grant_type": "client_credentials", "client_id": etl.user.id,
            "client_secret": etl.api_key.plaintext()}  # fmt: skip
    async with gw.client.post("/v1/oauth/tokens", data=form) as resp:
        assert resp.status == 401 and (await resp.json())["error"] == "invalid_client"
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'pangolin_auth_failures_total{reason="key_too_old"} 2.0' in metrics

    rotated = await gw.admin.rotate(etl.user.id, actor="test")
    assert (await answer(gw, key_header(rotated)))[0] == 200


async def test_the_access_log_reminds_once_a_day_per_key(
    make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await make_gateway(keys=KeySettings(notice_days=14))
    etl = await gw.user(expires_at=gw.clock.now + 3 * DAY)
    caplog.set_level(logging.WARNING, logger="pangolin.access")

    for _ in range(3):
        await answer(gw, key_header(etl))
    gw.clock.advance(DAY)
    await answer(gw, key_header(etl))

    reminders = [r for r in caplog.records if r.getMessage().startswith("key notice:")]
    assert len(reminders) == 2
    assert etl.user.id in reminders[0].getMessage()
    assert etl.api_key.secret not in caplog.text


async def test_metrics_count_the_service_users_past_and_near_the_maximum_age(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(keys=KeySettings(max_age_days=90, notice_days=14))
    await gw.user("old")
    gw.clock.advance(80 * DAY)
    await gw.user("new")
    gw.clock.advance(15 * DAY)  # old: 95 days, past; new: 15 days, fine
    await gw.user("newest")
    await gw.app[KEY_POLICY].count(gw.app[STORE])

    metrics = await (await gw.client.get("/metrics")).text()
    # Root was made with the first clock reading too: it is past as well.
    assert "pangolin_keys_past_max_age 2.0" in metrics
    assert "pangolin_keys_near_max_age 0.0" in metrics
    gw.clock.advance(70 * DAY)  # new: 85 days, within the 14 days before 90
    await gw.app[KEY_POLICY].count(gw.app[STORE])
    metrics = await (await gw.client.get("/metrics")).text()
    assert "pangolin_keys_near_max_age 1.0" in metrics


async def test_a_replaced_key_in_its_overlap_is_told_when_the_overlap_ends(
    make_gateway: MakeGateway,
) -> None:
    gw = await make_gateway(keys=KeySettings(notice_days=14))
    etl = await gw.user()
    await gw.admin.rotate(etl.user.id, actor="test", grace_seconds=3600)

    status, got = await answer(gw, key_header(etl))

    assert status == 200
    assert got[EXPIRES_HEADER] == iso(gw.clock.now + 3600)
