"""The signed identity assertion for upstreams (issue 15): with ``identity_assertion`` a
catalog's upstream gets ``X-Pangolin-Assertion``, which an independent JWT library (PyJWT)
verifies against ``/.well-known/jwks.json``: audience the catalog, at most 60 s, the
principal, role, tenant and the grants that apply; signed once per principal and reused for
most of its lifetime; never the client's own; also in forward-auth's decisions."""

from __future__ import annotations

import math
import time
from typing import Any

import jwt
import pytest

from gateway.auth.assertions import ASSERTION_HEADER, LEAST_LEFT, LIFETIME, REUSE
from gateway.forward_auth import SECRET_HEADER
from gateway.identity.models import Role
from gateway.settings import CatalogSettings, ForwardAuthSettings
from gateway.state import GRANTS

from ..conftest import Gateway, MakeGateway
from ..helpers import key_header


async def verified(
    gateway: Gateway, assertion: str, audience: str, leeway: float = 0
) -> dict[str, Any]:
    """The assertion's claims as PyJWT reads them (on the real clock, which the gateway's
    starts at), with the gateway's published keys only."""
    keys = jwt.PyJWKSet.from_dict(await (await gateway.client.get("/.well-known/jwks.json")).json())
    kid = jwt.get_unverified_header(assertion)["kid"]
    key = next(k for k in keys.keys if k.key_id == kid)
    claims: dict[str, Any] = jwt.decode(
        assertion, key, algorithms=["ES256"], audience=audience, issuer="pangolin-gateway",
        options={"require": ["exp", "iat", "sub", "aud", "iss"]}, leeway=leeway,
    )  # fmt: skip
    return claims


@pytest.fixture
async def gateway(make_gateway: MakeGateway) -> Gateway:
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(identity_assertion=True, default_access="none")},
        forward_auth=ForwardAuthSettings(secret="f" * 40),
    )
    gateway.clock.now = time.time()  # what PyJWT checks exp and iat against
    return gateway


async def test_the_upstream_gets_an_assertion_an_independent_library_verifies(
    gateway: Gateway,
) -> None:
    etl = await gateway.user("etl", role=Role.TENANT_USER)
    await gateway.app[GRANTS].grant(
        etl.user, catalog="default", resource=("sales",), action="read", actor="test"
    )
    spoofed = {ASSERTION_HEADER: "eyJhbGciOiJub25lIn0.e30."}
    resp = await gateway.client.get("/v1/namespaces/sales", headers={**key_header(etl), **spoofed})
    assert resp.status == 200, await resp.text()
    sent = gateway.upstream.last.headers.getall(ASSERTION_HEADER)
    assert len(sent) == 1 and sent[0] != spoofed[ASSERTION_HEADER]
    claims = await verified(gateway, sent[0], audience="default")
    assert claims["sub"] == etl.user.id
    assert claims["name"] == "etl"
    assert claims["role"] == "TenantUser"
    assert claims["tenant"] == "default"
    assert claims["ptype"] == "service_user"
    assert claims["grants"] == [{"action": "read", "on": "default:sales"}]
    assert 0 < claims["exp"] - claims["iat"] <= 60


async def test_one_assertion_serves_a_principal_for_most_of_its_lifetime(
    gateway: Gateway,
) -> None:
    headers = key_header(gateway.root)

    async def sent() -> str:
        assert (await gateway.client.get("/v1/namespaces/a", headers=headers)).status == 200
        return gateway.upstream.last.headers[ASSERTION_HEADER]

    first = await sent()
    assert await sent() == first
    gateway.clock.advance(REUSE - 1)
    assert await sent() == first
    gateway.clock.advance(2)  # past REUSE: a fresh one, with LIFETIME - REUSE s to spare
    renewed = await sent()
    assert renewed != first
    claims = await verified(gateway, renewed, audience="default", leeway=REUSE + 5)
    assert claims["exp"] == int(gateway.clock.now) + LIFETIME
    assert "grants" not in claims  # Root: no grants decide for it


async def test_the_audience_can_be_configured_and_catalogs_without_it_get_none(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(
        catalogs={
            "default": CatalogSettings(identity_assertion=True, assertion_audience="urn:cat"),
            "plain": CatalogSettings(),
        }
    )
    gateway.clock.now = time.time()
    headers = key_header(gateway.root)
    assert (await gateway.client.get("/v1/namespaces/a", headers=headers)).status == 200
    claims = await verified(gateway, gateway.upstream.last.headers[ASSERTION_HEADER], "urn:cat")
    assert claims["sub"] == gateway.root.user.id
    assert (await gateway.client.get("/v1/plain/v1/namespaces/a", headers=headers)).status == 200
    assert ASSERTION_HEADER not in gateway.upstream.last.headers


async def test_forward_auth_decisions_carry_the_assertion_too(gateway: Gateway) -> None:
    resp = await gateway.client.get(
        "/forward-auth/nginx",
        headers={SECRET_HEADER: "f" * 40, "X-Original-Method": "GET",
                 "X-Original-URI": "/v1/namespaces/a", **key_header(gateway.root)},
    )  # fmt: skip
    assert resp.status == 200, await resp.text()
    claims = await verified(gateway, resp.headers[ASSERTION_HEADER], audience="default")
    assert claims["sub"] == gateway.root.user.id


async def test_a_cached_decision_never_outlives_the_assertion_it_carries(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(identity_assertion=True)},
        forward_auth=ForwardAuthSettings(secret="f" * 40, cache_seconds=300),
    )
    minted = math.floor(time.time()) + 0.9  # late in a second: exp counts whole seconds

    async def decided_at(now: float) -> tuple[float, float]:
        """A decision at ``now``: how long nginx may keep it, and its assertion's life left."""
        gateway.clock.now = now
        resp = await gateway.client.get(
            "/forward-auth/nginx",
            headers={SECRET_HEADER: "f" * 40, "X-Original-Method": "GET",
                     "X-Original-URI": "/v1/namespaces/a", **key_header(gateway.root)},
        )  # fmt: skip
        claims = await verified(gateway, resp.headers[ASSERTION_HEADER], "default", leeway=60)
        return float(resp.headers["X-Accel-Expires"]), claims["exp"] - now

    # Fresh, then reused as late as it is reused: nginx keeps an entry up to a second past
    # X-Accel-Expires, and the assertion must outlive that.
    for now in (minted, minted + REUSE - 1.0, minted + REUSE - 0.5):
        kept, left = await decided_at(now)
        assert kept + 1 <= left, now
        assert kept == LEAST_LEFT - 1


async def test_each_catalog_gets_its_own_grants_even_with_a_shared_audience(
    make_gateway: MakeGateway,
) -> None:
    shared = CatalogSettings(
        identity_assertion=True, assertion_audience="urn:lake", default_access="none"
    )
    gateway = await make_gateway(catalogs={"default": shared, "other": shared})
    gateway.clock.now = time.time()
    etl = await gateway.user("etl", role=Role.TENANT_USER)
    for catalog in ("default", "other"):
        await gateway.app[GRANTS].grant(
            etl.user, catalog=catalog, resource=("sales",), action="read", actor="test"
        )
    for path, on in (("/v1/namespaces/sales", "default:sales"),
                     ("/v1/other/v1/namespaces/sales", "other:sales")):  # fmt: skip
        assert (await gateway.client.get(path, headers=key_header(etl))).status == 200
        claims = await verified(
            gateway, gateway.upstream.last.headers[ASSERTION_HEADER], "urn:lake"
        )
        assert claims["grants"] == [{"action": "read", "on": on}]
