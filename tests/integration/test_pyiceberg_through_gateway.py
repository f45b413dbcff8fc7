"""Real PyIceberg 0.12 through the gateway, in front of a real SeaweedFS that requires
credentials (so the gateway authenticates upstream with OAuth2 client_credentials)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import UnauthorizedError

from ..live import LiveGateway, SeaweedUpstream
from ..roundtrip import roundtrip

pytestmark = pytest.mark.seaweedfs


def test_seed_snippet_credential_flow_creates_appends_and_scans(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    created = live_gateway.user("seed")
    roundtrip(live_gateway.pyiceberg_properties(created, seaweed))


def test_x_api_key_header_works_although_pyiceberg_also_sends_bearer_none(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    created = live_gateway.user("header")
    roundtrip(
        {
            "type": "rest",
            "uri": f"{live_gateway.url}/v1/default/",
            "header.X-API-Key": created.api_key.plaintext(),
            **seaweed.s3_properties(),
        }
    )


def test_api_key_as_static_token_works(live_gateway: LiveGateway, seaweed: SeaweedUpstream) -> None:
    created = live_gateway.user("token")
    roundtrip(
        {
            "type": "rest",
            "uri": f"{live_gateway.url}/v1/default/",
            "token": created.api_key.plaintext(),
            **seaweed.s3_properties(),
        }
    )


def test_rotated_key_is_refused_and_new_key_works(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    created = live_gateway.user("rotate")
    old = load_catalog("old", **live_gateway.pyiceberg_properties(created, seaweed))
    old.list_namespaces()
    rotated = live_gateway.call(live_gateway.admin.rotate(created.user.id, actor="test"))
    # PyIceberg retries a 401 once after fetching a new token; the old key cannot get one.
    with pytest.raises(Exception, match="(?i)unauthorized|invalid_client|not authorized"):
        old.list_namespaces()
    new = load_catalog("new", **live_gateway.pyiceberg_properties(rotated, seaweed))
    new.list_namespaces()


def test_deactivated_service_user_is_refused(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream
) -> None:
    created = live_gateway.user("deactivate")
    catalog = load_catalog(
        "c", type="rest", uri=f"{live_gateway.url}/v1/default/",
        token=created.api_key.plaintext(),
    )  # fmt: skip
    catalog.list_namespaces()
    live_gateway.call(live_gateway.admin.deactivate(created.user.id, actor="test"))
    with pytest.raises(UnauthorizedError):
        catalog.list_namespaces()


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def _token(gateway: LiveGateway, user_id: str, key: str) -> str:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": user_id, "client_secret": key}
    ).encode()
    url = f"{gateway.url}/v1/default/v1/oauth/tokens"
    with urllib.request.urlopen(url, data=form, timeout=30) as response:
        token: str = json.loads(response.read())["access_token"]
        return token


def test_token_minted_before_rotation_is_refused_on_the_next_request(
    live_gateway: LiveGateway,
) -> None:
    created = live_gateway.user("rotate-token")
    token = _token(live_gateway, created.user.id, created.api_key.plaintext())
    url = f"{live_gateway.url}/v1/default/v1/warehouse/namespaces"
    assert _get(url, {"Authorization": f"Bearer {token}"})[0] == 200
    rotated = live_gateway.call(live_gateway.admin.rotate(created.user.id, actor="test"))
    status, body = _get(url, {"Authorization": f"Bearer {token}"})
    assert (status, body["error"]["code"]) == (401, 401)
    assert _get(url, {"X-API-Key": created.api_key.plaintext()})[0] == 401
    assert _get(url, {"X-API-Key": rotated.api_key.plaintext()})[0] == 200


@pytest.mark.parametrize("action", ["deactivate", "delete", "expire"])
def test_retired_service_user_is_refused_with_key_and_token(
    live_gateway: LiveGateway, action: str
) -> None:
    created = live_gateway.user(action)
    key = created.api_key.plaintext()
    token = _token(live_gateway, created.user.id, key)
    url = f"{live_gateway.url}/v1/default/v1/warehouse/namespaces"
    assert _get(url, {"X-API-Key": key})[0] == 200
    live_gateway.call(getattr(live_gateway.admin, action)(created.user.id, actor="test"))
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {token}"}):
        status, body = _get(url, headers)
        assert status == 401
        assert body["error"]["type"] == "NotAuthorizedException"


def test_upstream_errors_pass_through_unchanged(live_gateway: LiveGateway) -> None:
    created = live_gateway.user("errors")
    url = f"{live_gateway.url}/v1/default/v1/warehouse/namespaces/missing_ns/tables/missing"
    status, body = _get(url, {"X-API-Key": created.api_key.plaintext()})
    assert status == 404
    assert body["error"]["code"] == 404


def test_last_used_is_recorded_after_a_flush(live_gateway: LiveGateway) -> None:
    created = live_gateway.user("last-used")
    url = f"{live_gateway.url}/v1/default/v1/warehouse/namespaces"
    assert _get(url, {"X-API-Key": created.api_key.plaintext()})[0] == 200
    live_gateway.flush_last_used()
    stored = live_gateway.call(live_gateway.admin.get(created.user.id))
    assert stored.last_used_at is not None
