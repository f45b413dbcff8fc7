"""Forward-auth with a real Envoy (``ext_authz``, HTTP service) running the shipped bootstrap
template (``deploy/envoy/pangolin-forward-auth.yaml.template``) in front of a real gateway
process (issue 15): spoofed identity headers and the client's credentials never reach the
upstream; the token endpoint, ``/v1/config`` and the namespace list are the gateway's;
refusals arrive with their own status and the Iceberg error JSON; a rotated key is refused on
its next request; a gateway that is down lets nothing through; a PyIceberg round trip through
Envoy to the real SeaweedFS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import jwt
import pytest

from ..envoy import FORWARD_AUTH_TEMPLATE, running_envoy
from ..forward_auth_stack import (
    SECRET,
    SECRET_HEADER_NAME,
    UPSTREAM_TOKEN,
    Stack,
    assert_a_rotated_key_dies_at_once,
    assert_decided,
    call,
    pyiceberg_through,
    recording_catalog,
    seaweed_stack,
    until,
)
from ..live import SeaweedUpstream
from ..processes import HttpUpstream

Recorded = tuple[Stack, HttpUpstream, str]


def envoy(stack: Stack, catalog: str) -> AbstractContextManager[str]:
    """Envoy in front of the stack's gateway and of ``catalog`` (http://host:port)."""
    where = urlsplit(catalog)
    return running_envoy(
        stack.root / "envoy", FORWARD_AUTH_TEMPLATE,
        {"PANGOLIN_GATEWAY_HOST": "127.0.0.1", "PANGOLIN_GATEWAY_PORT": str(stack.port),
         "PANGOLIN_CATALOG_HOST": where.hostname or "", "PANGOLIN_CATALOG_PORT": str(where.port),
         "PANGOLIN_FORWARD_AUTH_SECRET": SECRET},
    )  # fmt: skip


def decided(stack: Stack, path: str) -> list[str]:
    """The access log's Envoy decisions on ``path``."""
    return [line for line in stack.decisions() if f" path={path} " in line]


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    """The stack in front of a recording upstream, with a static upstream credential."""
    upstream = HttpUpstream("catalog")
    stack = Stack(tmp_path, recording_catalog(upstream.url))
    try:
        with envoy(stack, upstream.url) as url:
            yield stack, upstream, url
    finally:
        stack.stop()
        upstream.close()


def test_spoofed_identity_headers_and_client_credentials_never_reach_the_upstream(
    recorded: Recorded,
) -> None:
    stack, upstream, url = recorded
    spoofed = {
        # Values the real ones are not, so that their replacement shows.
        "X-Pangolin-Role": "TenantAdmin", "x-pangolin-principal-id": "someone-else",
        "X_Pangolin_Tenant": "other", "X-Pangolin-Principal-Name": "admin",
        SECRET_HEADER_NAME: "guess",  # replaced in the check request (else: 403), then dropped
        "X-Pangolin-Assertion": "forged",  # the catalog has none: nothing replaces it
    }  # fmt: skip
    status, _, body = call(f"{url}/v1/namespaces/sales?x=1", headers={
        "X-API-Key": stack.root_key, **spoofed})  # fmt: skip
    assert status == 200, body
    assert json.loads(body)["served_by"] == "catalog"  # carried by Envoy, decided by the gateway
    assert upstream.paths[-1] == "/v1/namespaces/sales?x=1"  # the client's raw path and query
    got = lower(upstream.headers[-1])
    assert got["x-pangolin-role"] == "Root"
    assert got["x-pangolin-principal-id"] == stack.root_id
    assert got["x-pangolin-principal-name"] == "root"
    assert got["x-pangolin-tenant"] == "default"
    assert "x_pangolin_tenant" not in got
    assert got["authorization"] == f"Bearer {UPSTREAM_TOKEN}"  # the gateway's, not the client's
    assert "x-api-key" not in got
    assert SECRET_HEADER_NAME.lower() not in got
    assert "x-pangolin-assertion" not in got
    assert "x-envoy-auth-headers-to-remove" not in got
    until(lambda: bool(decided(stack, "/v1/namespaces/sales")), "the decision in the access log")
    assert "status=200" in decided(stack, "/v1/namespaces/sales")[0]

    # A bearer token from the token endpoint (the gateway's own, through Envoy) does not
    # reach the upstream either: the decision's Authorization replaces it.
    status, _, body = call(
        f"{url}/v1/oauth/tokens", "POST",
        {"Content-Type": "application/x-www-form-urlencoded"},
        f"grant_type=client_credentials&client_id={stack.root_id}&"
        f"client_secret={stack.root_key}".encode(),
    )  # fmt: skip
    assert status == 200, body
    token = json.loads(body)["access_token"]
    status, _, _ = call(
        f"{url}/v1/namespaces/sales", "DELETE", {"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    assert lower(upstream.headers[-1])["authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert not any("oauth/tokens" in path for path in upstream.paths)


def test_the_decisions_identity_assertion_replaces_a_forged_one(tmp_path: Path) -> None:
    upstream = HttpUpstream("catalog")
    stack = Stack(tmp_path, f'[catalogs.default]\nupstream = "{upstream.url}"\n'
                  "identity_assertion = true\n")  # fmt: skip
    try:
        with envoy(stack, upstream.url) as url:
            status, _, body = call(f"{url}/v1/namespaces/sales", headers={
                "X-API-Key": stack.root_key, "X-Pangolin-Assertion": "forged"})  # fmt: skip
            assert status == 200, body
            assertion = lower(upstream.headers[-1])["x-pangolin-assertion"]
            keys = jwt.PyJWKSet.from_dict(json.loads(call(f"{url}/.well-known/jwks.json")[2]))
            key = keys[jwt.get_unverified_header(assertion)["kid"]]
            claims = jwt.decode(assertion, key, algorithms=["ES256"], audience="default")
            assert (claims["sub"], claims["role"]) == (stack.root_id, "Root")
    finally:
        stack.stop()
        upstream.close()


def test_the_token_endpoint_config_and_namespace_list_are_served_by_the_gateway(
    recorded: Recorded,
) -> None:
    stack, upstream, url = recorded
    status, _, body = call(f"{url}/v1/config", headers={"X-API-Key": stack.root_key})
    assert status == 200, body
    until(lambda: "path=/v1/config status=200" in stack.log.read_text(), "the gateway's answer")
    status, _, body = call(
        f"{url}/v1/oauth/tokens", "POST", {"Content-Type": "application/x-www-form-urlencoded"},
        b"grant_type=client_credentials&client_id=x&client_secret=y",
    )  # fmt: skip
    assert status == 401
    assert json.loads(body)["error"] == "invalid_client"  # the gateway's OAuth2 answer
    # The list goes upstream through the gateway's proxy (which filters it for a confined
    # caller), with the gateway's own headers.
    status, _, body = call(f"{url}/v1/namespaces", headers={"X-API-Key": stack.root_key})
    assert status == 200, body
    assert upstream.paths[-1] == "/v1/namespaces"
    until(lambda: "path=/v1/namespaces status=200" in stack.log.read_text(), "the gateway's log")
    for path in ("/v1/config", "/v1/oauth/tokens", "/v1/namespaces"):
        assert not decided(stack, path), stack.decisions()


def test_refusals_arrive_with_their_status_as_iceberg_json_and_a_rotated_key_dies_at_once(
    recorded: Recorded,
) -> None:
    stack, upstream, url = recorded
    status, headers, body = call(f"{url}/v1/namespaces/sales")
    assert status == 401
    assert headers["content-type"].startswith("application/json")  # the gateway's own
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["type"] == "NotAuthorizedException"
    # Not flattened to 403 as under nginx: a malformed name is the gateway's 400, an unknown
    # method its 405 with Allow.
    status, _, body = call(f"{url}/v1/namespaces/a%27b", headers={"X-API-Key": stack.root_key})
    assert (status, json.loads(body)["error"]["code"]) == (400, 400), body
    status, headers, body = call(
        f"{url}/v1/namespaces/sales", "PUT", {"X-API-Key": stack.root_key}, b""
    )
    assert (status, json.loads(body)["error"]["code"]) == (405, 405), body
    assert "GET" in headers["allow"]
    assert upstream.paths == []  # nothing refused reached the catalog

    assert_a_rotated_key_dies_at_once(url, stack)


def test_a_gateway_that_is_down_lets_nothing_through(recorded: Recorded) -> None:
    stack, upstream, url = recorded
    stack.stop()
    status, _, _ = call(f"{url}/v1/namespaces/sales", headers={"X-API-Key": stack.root_key})
    assert status == 503  # status_on_error, not failure_mode_allow
    assert upstream.paths == []


@pytest.mark.seaweedfs
def test_a_pyiceberg_round_trip_through_envoy_to_seaweedfs(
    tmp_path: Path, seaweed: SeaweedUpstream
) -> None:
    stack = seaweed_stack(tmp_path, seaweed)
    try:
        with envoy(stack, seaweed.catalog().upstream) as url:
            pyiceberg_through(url, stack, seaweed)
    finally:
        stack.stop()
    # Loading, probing and dropping namespaces: decided by the gateway, carried by the proxy
    # (the rest of the round trip went through the gateway's own proxy).
    assert_decided(stack, "envoy")
