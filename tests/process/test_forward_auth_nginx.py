"""Forward-auth with a real nginx (Debian's, ``auth_request``) running the shipped template
(``deploy/nginx/pangolin-forward-auth.conf.template``) in front of a real gateway process
(issue 15): a PyIceberg round trip through nginx to the real SeaweedFS, part decided by the
gateway and carried by nginx, part carried by the gateway's own proxy; spoofed identity headers
and the client's credentials never reach the upstream; the token endpoint and ``/v1/config``
are the gateway's; a rotated key is refused on its next request; refusals arrive as the
Iceberg error JSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ..forward_auth_stack import (
    SECRET_HEADER_NAME,
    UPSTREAM_TOKEN,
    Stack,
    assert_a_rotated_key_dies_at_once,
    assert_decided,
    call,
    create_tenant_user,
    pyiceberg_through,
    recording_catalog,
    rotate,
    seaweed_stack,
    until,
)
from ..live import SeaweedUpstream
from ..processes import HttpUpstream


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[Stack, HttpUpstream, str]]:
    """The stack in front of a recording upstream, with a static upstream credential."""
    upstream = HttpUpstream("catalog")
    stack = Stack(tmp_path, recording_catalog(upstream.url))
    try:
        with stack.nginx(upstream.url) as url:
            yield stack, upstream, url
    finally:
        stack.stop()
        upstream.close()


def test_spoofed_identity_headers_and_client_credentials_never_reach_the_upstream(
    recorded: tuple[Stack, HttpUpstream, str],
) -> None:
    stack, upstream, url = recorded
    spoofed = {
        "X-Pangolin-Role": "Root", "x-pangolin-principal-id": "someone-else",
        "X_Pangolin_Tenant": "other", "X-Pangolin-Principal-Name": "admin",
        SECRET_HEADER_NAME: "guess", "X-Pangolin-Assertion": "forged",
    }  # fmt: skip
    status, _, body = call(f"{url}/v1/namespaces/sales", headers={
        "X-API-Key": stack.root_key, **spoofed})  # fmt: skip
    assert status == 200, body
    assert json.loads(body)["served_by"] == "catalog"  # carried by nginx, decided by the gateway
    assert upstream.paths[-1] == "/v1/namespaces/sales"
    got = {name.lower(): value for name, value in upstream.headers[-1].items()}
    assert got["x-pangolin-role"] == "Root"
    assert got["x-pangolin-principal-id"] == stack.root_id
    assert got["x-pangolin-principal-name"] == "root"
    assert got["x-pangolin-tenant"] == "default"
    assert "x_pangolin_tenant" not in got
    assert got["authorization"] == f"Bearer {UPSTREAM_TOKEN}"  # the gateway's, not the client's
    assert "x-api-key" not in got
    assert SECRET_HEADER_NAME.lower() not in got
    assert "x-pangolin-assertion" not in got  # the catalog asks for none; never the client's
    until(lambda: bool(stack.decisions()), "the decision in the access log")

    # A bearer token from the token endpoint (the gateway's own, through nginx) does not
    # reach the upstream either.
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
    assert upstream.headers[-1]["Authorization"] == f"Bearer {UPSTREAM_TOKEN}"
    assert not any("oauth/tokens" in path for path in upstream.paths)


def test_the_token_endpoint_and_config_are_served_by_the_gateway(
    recorded: tuple[Stack, HttpUpstream, str],
) -> None:
    stack, upstream, url = recorded
    status, _, body = call(f"{url}/v1/config", headers={"X-API-Key": stack.root_key})
    assert status == 200, body
    until(lambda: "path=/v1/config status=200" in stack.log.read_text(), "the gateway's answer")
    assert not any("/forward-auth/" in line and "config" in line for line in stack.decisions())
    status, _, body = call(
        f"{url}/v1/oauth/tokens", "POST", {"Content-Type": "application/x-www-form-urlencoded"},
        b"grant_type=client_credentials&client_id=x&client_secret=y",
    )  # fmt: skip
    assert status == 401
    assert json.loads(body)["error"] == "invalid_client"  # the gateway's OAuth2 answer


def test_refusals_arrive_as_iceberg_json_and_a_rotated_key_dies_at_once(
    recorded: tuple[Stack, HttpUpstream, str],
) -> None:
    stack, upstream, url = recorded
    status, headers, body = call(f"{url}/v1/namespaces/sales")
    assert status == 401
    assert headers["Content-Type"] == "application/json"
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert json.loads(body)["error"]["type"] == "NotAuthorizedException"

    assert_a_rotated_key_dies_at_once(url, stack)


CACHE_SECONDS = 2


def status_with_headers(url: str, headers: list[tuple[str, str]]) -> int:
    """A GET with ``headers`` as given, repeats included (urllib folds them): its status."""
    parts = urlsplit(url)
    conn = HTTPConnection(parts.netloc, timeout=30)
    try:
        conn.putrequest("GET", parts.path)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_with_the_decision_cache_repeats_cost_no_decision_and_a_rotation_wins_within_its_ttl(
    tmp_path: Path,
) -> None:
    upstream = HttpUpstream("catalog")
    stack = Stack(tmp_path, f'[catalogs.default]\nupstream = "{upstream.url}"\n',
                  cache_seconds=CACHE_SECONDS)  # fmt: skip
    try:
        with stack.nginx(upstream.url, decision_cache=True) as url:
            user_id, key = create_tenant_user(url, stack)
            _, other = create_tenant_user(url, stack, "reporting")
            namespace = f"{url}/v1/namespaces/a"
            for _ in range(5):
                assert call(namespace, headers={"X-API-Key": key})[0] == 200
            until(lambda: len(stack.decisions()) >= 1, "the decision in the access log")
            assert len(stack.decisions()) == 1  # four answered from nginx's cache
            assert len(upstream.paths) == 5
            # Other credentials on the same request never share a cached decision: each is
            # decided by the gateway (another caller's key is then cached for its own
            # repeats), the same key id with another secret, the key beside a second copy or
            # beside a bearer token are refused.
            for _ in range(3):
                assert call(namespace, headers={"X-API-Key": other})[0] == 200
            until(lambda: len(stack.decisions()) >= 2, "the second caller's decision")
            forged = key[:-1] + ("A" if key[-1] != "A" else "B")
            refused = [
                [("X-API-Key", forged)],
                [("X-API-Key", key), ("X-API-Key", key)],
                [("X-API-Key", key), ("Authorization", "Bearer x")],
                [],
            ]
            for headers in refused:
                assert status_with_headers(namespace, headers) in (401, 403), headers
            until(lambda: len(stack.decisions()) >= 2 + len(refused), "every refusal decided")
            assert len(stack.decisions()) == 2 + len(refused)
            assert len(upstream.paths) == 8
            rotate(url, stack, user_id)
            rotated = time.monotonic()
            until(lambda: call(namespace, headers={"X-API-Key": key})[0] == 401,
                  "the cached decision to expire")  # fmt: skip
            assert time.monotonic() - rotated <= CACHE_SECONDS + 1.5
            assert call(namespace, headers={"X-API-Key": other})[0] == 200
    finally:
        stack.stop()
        upstream.close()
    cache = tmp_path / "nginx" / "decisions"
    stored = b"".join(f.read_bytes() for f in cache.rglob("*") if f.is_file())
    # nginx keeps an MD5 of the credentials beside each decision (Vary), never them.
    assert stored and key.encode() not in stored and other.encode() not in stored
    assert b"KEY: 127.0.0.1 GET /v1/namespaces/a" in stored


@pytest.mark.seaweedfs
def test_a_pyiceberg_round_trip_through_nginx_to_seaweedfs(
    tmp_path: Path, seaweed: SeaweedUpstream
) -> None:
    stack = seaweed_stack(tmp_path, seaweed)
    try:
        with stack.nginx(seaweed.catalog().upstream) as url:
            pyiceberg_through(url, stack, seaweed)
    finally:
        stack.stop()
    # Loading, probing and dropping namespaces: decided by the gateway, carried by the proxy
    # (the rest of the round trip went through the gateway's own proxy).
    assert_decided(stack, "nginx")
