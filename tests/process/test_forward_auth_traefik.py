"""Forward-auth with a real Traefik (ForwardAuth, file provider) running the shipped templates
(``deploy/traefik/``) in front of a real gateway process (issue 15): spoofed identity headers,
the client's credentials and the proxy's secret never reach the upstream; the token endpoint,
``/v1/config`` and the namespace list are the gateway's; refusals arrive with their own
status and the Iceberg error JSON; a rotated key is refused on its next request; a gateway
that is down lets nothing through; a PyIceberg round trip through Traefik to the real
SeaweedFS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

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
from ..traefik import running_traefik

Recorded = tuple[Stack, HttpUpstream, str]


def traefik(stack: Stack, catalog: str) -> AbstractContextManager[str]:
    """Traefik in front of the stack's gateway and of ``catalog`` (http://host:port)."""
    return running_traefik(
        stack.root / "traefik",
        {"PANGOLIN_GATEWAY": f"127.0.0.1:{stack.port}",
         "PANGOLIN_CATALOG": urlsplit(catalog).netloc, "PANGOLIN_FORWARD_AUTH_SECRET": SECRET},
    )  # fmt: skip


def routed(stack: Stack, path: str) -> list[tuple[str, str]]:
    """Traefik's access log for ``path``: (router, service) of each request."""
    log = stack.root / "traefik" / "access.log"
    lines = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [(entry.get("RouterName", ""), entry.get("ServiceName", ""))
            for entry in lines if entry["RequestPath"] == path]  # fmt: skip


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    """The stack in front of a recording upstream, with a static upstream credential."""
    upstream = HttpUpstream("catalog")
    stack = Stack(tmp_path, recording_catalog(upstream.url))
    try:
        with traefik(stack, upstream.url) as url:
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
        "X-Pangolin-Assertion": "forged", "X_API_Key": "smuggled",
        SECRET_HEADER_NAME: "guess",  # replaced by the secret for the gateway, then dropped
        # Traefik's own, not the client's: the gateway would refuse /v1/config (403).
        "X-Forwarded-Uri": "/v1/config", "X-Forwarded-Method": "POST",
    }  # fmt: skip
    status, _, body = call(f"{url}/v1/namespaces/sales?x=1", headers={
        "X-API-Key": stack.root_key, **spoofed})  # fmt: skip
    assert status == 200, body
    assert json.loads(body)["served_by"] == "catalog"
    assert upstream.paths == ["/v1/namespaces/sales?x=1"]  # the client's raw path and query
    got = lower(upstream.headers[-1])
    assert got["x-pangolin-role"] == "Root"
    assert got["x-pangolin-principal-id"] == stack.root_id
    assert got["x-pangolin-principal-name"] == "root"
    assert got["x-pangolin-tenant"] == "default"
    assert got["authorization"] == f"Bearer {UPSTREAM_TOKEN}"  # the gateway's, not the client's
    assert not {"x-api-key", "x_api_key", "x_pangolin_tenant", "x-pangolin-assertion"} & set(got)
    assert SECRET_HEADER_NAME.lower() not in got
    assert SECRET not in json.dumps(got)
    # Decided by the gateway, carried by Traefik straight to the catalog.
    until(lambda: bool(stack.decisions()), "the decision in the gateway's access log")
    line = stack.decisions()[0]
    assert " path=/v1/namespaces/sales status=200 " in line  # the request decided, no query
    assert line.endswith(" forward_auth=traefik")
    until(lambda: bool(routed(stack, "/v1/namespaces/sales?x=1")), "Traefik's access log")
    assert routed(stack, "/v1/namespaces/sales?x=1") == [
        ("pangolin-forward-auth@file", "pangolin-catalog@file")
    ]

    # A bearer token from the token endpoint (the gateway's own, through Traefik) does not
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
    assert token not in json.dumps(upstream.headers)
    assert not any("oauth/tokens" in path for path in upstream.paths)


def test_the_token_endpoint_config_and_namespace_list_are_served_by_the_gateway(
    recorded: Recorded,
) -> None:
    stack, upstream, url = recorded
    status, _, body = call(f"{url}/v1/config", headers={"X-API-Key": stack.root_key})
    assert status == 200, body
    status, _, body = call(
        f"{url}/v1/oauth/tokens", "POST", {"Content-Type": "application/x-www-form-urlencoded"},
        b"grant_type=client_credentials&client_id=x&client_secret=y",
    )  # fmt: skip
    assert status == 401
    assert json.loads(body)["error"] == "invalid_client"  # the gateway's OAuth2 answer
    # The list goes upstream through the gateway's proxy (which filters it for a confined
    # caller), as does a table route (whose answer it filters).
    for path in ("/v1/namespaces", "/v1/namespaces/sales/tables/orders"):
        status, _, body = call(f"{url}{path}", headers={"X-API-Key": stack.root_key})
        assert status == 200, body
    # The gateway's proxy asks the catalog for its config too, then rewrites the answer.
    assert upstream.paths == ["/v1/config", "/v1/namespaces", "/v1/namespaces/sales/tables/orders"]
    until(lambda: "path=/v1/namespaces/sales/tables/orders status=200" in stack.log.read_text(),
          "the gateway's own proxy in its log")  # fmt: skip
    until(lambda: bool(routed(stack, "/v1/namespaces/sales/tables/orders")), "Traefik's log")
    for path in ("/v1/config", "/v1/oauth/tokens", "/v1/namespaces",
                 "/v1/namespaces/sales/tables/orders"):  # fmt: skip
        assert routed(stack, path) == [
            ("pangolin-gateway-catalog-routes@file", "pangolin-gateway@file")
        ]
    assert stack.decisions() == []  # no forward-auth for any of them


def test_refusals_arrive_with_their_status_as_iceberg_json_and_a_rotated_key_dies_at_once(
    recorded: Recorded,
) -> None:
    stack, upstream, url = recorded
    status, headers, body = call(f"{url}/v1/namespaces/sales")
    assert status == 401
    assert lower(headers)["content-type"].startswith("application/json")  # the gateway's own
    assert lower(headers)["www-authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["type"] == "NotAuthorizedException"
    # Not flattened to 403 as under nginx: a malformed name is the gateway's 400, an unknown
    # method its 405 with Allow.
    status, _, body = call(f"{url}/v1/namespaces/a%27b", headers={"X-API-Key": stack.root_key})
    assert (status, json.loads(body)["error"]["code"]) == (400, 400), body
    status, headers, body = call(
        f"{url}/v1/namespaces/sales", "PUT", {"X-API-Key": stack.root_key}, b""
    )
    assert (status, json.loads(body)["error"]["code"]) == (405, 405), body
    assert "GET" in lower(headers)["allow"]
    assert upstream.paths == []  # nothing refused reached the catalog
    until(lambda: len(stack.decisions()) == 3, "the three decisions in the access log")

    assert_a_rotated_key_dies_at_once(url, stack)
    assert upstream.paths == ["/v1/namespaces/a", "/v1/namespaces/a"]


def test_a_gateway_that_is_down_lets_nothing_through(recorded: Recorded) -> None:
    stack, upstream, url = recorded
    stack.stop()
    status, _, _ = call(f"{url}/v1/namespaces/sales", headers={"X-API-Key": stack.root_key})
    assert status == 500  # ForwardAuth's answer when it cannot ask
    assert upstream.paths == []


@pytest.mark.seaweedfs
def test_a_pyiceberg_round_trip_through_traefik_to_seaweedfs(
    tmp_path: Path, seaweed: SeaweedUpstream
) -> None:
    stack = seaweed_stack(tmp_path, seaweed)
    try:
        with traefik(stack, seaweed.catalog().upstream) as url:
            pyiceberg_through(url, stack, seaweed)
    finally:
        stack.stop()
    # Loading, probing and dropping namespaces: decided by the gateway, carried by the proxy
    # (the rest of the round trip went through the gateway's own proxy).
    assert_decided(stack, "traefik")
