"""Several catalogs of several tenants, upstream auth per catalog, and token lifetime and
refresh, against real SeaweedFS and real PyIceberg 0.12.

One gateway serves the whole module, with three catalogs:

- ``default`` (tenant default): the session's credentialed SeaweedFS, upstream OAuth2
  client_credentials;
- ``acme`` (tenant acme): a second, ANONYMOUS SeaweedFS, upstream auth ``none``;
- ``static`` (tenant default): the credentialed SeaweedFS again, with a static upstream bearer
  minted from its own token endpoint.

The gateway's wall clock is a FakeClock starting at the real time: tests that need a token to
expire advance it and never reuse a token across tests. Upstream auth keeps its own monotonic
clock and SeaweedFS its real one, so advancing the gateway's clock leaves upstream tokens alone
(the static upstream bearer is a SeaweedFS JWT valid for one real hour, plenty for a module).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import logging
import math
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pyarrow as pa
import pytest
from aiohttp import web
from pyiceberg.catalog import load_catalog
from pyiceberg.exceptions import ForbiddenError

from gateway.demo.seaweedfs import SeaweedFS, free_ports
from gateway.errors import UpstreamError
from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey
from gateway.proxy.upstream_auth import OAuth2ClientCredentials
from gateway.settings import UpstreamAuthSettings
from gateway.state import CONFIGURED, USERS

from ..fakes import FakeClock
from ..helpers import bearer, key_header
from ..live import WAREHOUSE, LiveGateway, SeaweedUpstream
from ..roundtrip import SCHEMA, roundtrip

pytestmark = pytest.mark.seaweedfs

ROWS = [{"id": 1, "name": "a"}, {"id": 9_007_199_254_740_993, "name": "ü"}]
# What the Java REST client puts on every request (HTTPClient.buildRequest and build); the
# version has the format of IcebergBuild.fullVersion(), the commit ids are placeholders.
JAVA_HEADERS = {
    "Accept": "application/json",
    "X-Client-Version": f"Apache Iceberg 1.10.0 (commit {'0' * 40})",
    "X-Client-Git-Commit-Short": "0" * 8,
}
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class Deployment:
    gateway: LiveGateway
    clock: FakeClock
    credentialed: SeaweedUpstream
    anonymous: SeaweedFS
    static_token: str

    @property
    def url(self) -> str:
        return self.gateway.url

    def user(self, name: str, role: Role = Role.TENANT_USER, tenant: str = "default") -> CreatedKey:
        return self.gateway.user(name, role, tenant=tenant)

    def anonymous_s3(self) -> dict[str, str]:
        # Unsigned requests only: a key of any kind gets INVALID_ACCESS_KEY_ID.
        return {
            "s3.endpoint": self.anonymous.s3_endpoint,
            "s3.region": "us-east-1",
            "s3.anonymous": "true",
        }

    def expire_tokens(self) -> None:
        """Move the gateway's clock past the lifetime of every token issued so far (and past
        the 5 s leeway the gateway allows on ``exp``)."""
        self.clock.advance(self.gateway.settings.tokens.lifetime_seconds + 10)

    def upstream_oauth2(self) -> OAuth2ClientCredentials:
        auth = self.gateway.app[CONFIGURED].forwarders["default"]._auth
        assert isinstance(auth, OAuth2ClientCredentials)
        return auth


@pytest.fixture(scope="module")
def anonymous_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    server = SeaweedFS(
        tmp_path_factory.mktemp("seaweedfs-anonymous"),
        ports=free_ports(),
        access_key=None,
        secret_key=None,
        table_bucket=WAREHOUSE,
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def deployment(
    seaweed: SeaweedUpstream,
    anonymous_seaweed: SeaweedFS,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployment]:
    clock = FakeClock(time.time())
    static_token = seaweed.server.upstream_token()
    catalogs = {
        "default": seaweed.catalog(),
        "acme": seaweed.catalog(
            upstream=anonymous_seaweed.iceberg_url,
            tenant="acme",
            upstream_auth=UpstreamAuthSettings(type="none"),
        ),
        "static": seaweed.catalog(
            upstream_auth=UpstreamAuthSettings(type="bearer", token=static_token)
        ),
    }
    with LiveGateway.start(
        tmp_path_factory.mktemp("multi-catalog-gateway"), catalogs=catalogs, clock=clock
    ) as gateway:
        yield Deployment(gateway, clock, seaweed, anonymous_seaweed, static_token)


# -- raw HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def raw(self) -> str:
        """Everything a client receives, for leak scans."""
        lines = [f"{name}: {value}" for name, value in self.headers]
        return "\n".join(lines) + "\n\n" + self.body.decode("utf-8", "replace")


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> Answer:
    """One request sent as given (raw path, no proxy), answered whatever the status."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        conn.request(method, target, body=body, headers=headers or {})
        response = conn.getresponse()
        return Answer(response.status, response.getheaders(), response.read())
    finally:
        conn.close()


def post_json(url: str, document: object, headers: dict[str, str]) -> Answer:
    return request(
        url, "POST", {"Content-Type": "application/json", **headers}, json.dumps(document).encode()
    )


def post_form(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Answer:
    return request(
        url,
        "POST",
        {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
        urlencode(fields).encode(),
    )


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def gateway_token(d: Deployment, created: CreatedKey, catalog: str = "default") -> str:
    answer = post_form(
        f"{d.url}/v1/{catalog}/v1/oauth/tokens",
        {"grant_type": "client_credentials", "client_id": created.user.id,
         "client_secret": created.api_key.plaintext(), "scope": "catalog"},
    )  # fmt: skip
    assert answer.status == 200, answer.body
    token: str = answer.json()["access_token"]
    return token


def catalog_url(d: Deployment, catalog: str, tail: str) -> str:
    return f"{d.url}/v1/{catalog}/v1/{tail}"


def assert_iceberg_error(answer: Answer, status: int, type_: str) -> None:
    assert answer.status == status, answer.body
    assert (answer.header("Content-Type") or "").startswith("application/json")
    error = answer.json()["error"]
    assert (error["code"], error["type"]) == (status, type_)
    assert isinstance(error["message"], str) and error["message"]


def held_token(catalog: Any) -> str:
    """The gateway token a PyIceberg legacy-auth catalog currently sends."""
    token: str = catalog._session.auth.auth_manager._token
    return token


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(4)}"


# -- PyIceberg ---------------------------------------------------------------------------------

# The data plane of the anonymous SeaweedFS, written from a separate process: pyarrow 26 sends
# unsigned uploads as aws-chunked with a checksum trailer, which SeaweedFS 4.48 stores inside
# the object (runbook 3.2), unless AWS_REQUEST_CHECKSUM_CALCULATION=when_required is set before
# the AWS SDK starts. Setting it here would change every other test's writer.
_APPEND_SCRIPT = """
import json, sys
import pyarrow as pa
from pyiceberg.catalog import load_catalog
job = json.load(sys.stdin)
table = load_catalog("writer", **job["properties"]).load_table(job["table"])
table.append(pa.Table.from_pylist(job["rows"], schema=table.schema().as_arrow()))
print("appended", len(job["rows"]))
import pyarrow.fs
pyarrow.fs.finalize_s3()  # or exit may hang (apache/arrow#50188)
"""


def append_in_subprocess(
    properties: dict[str, str], table: str, rows: list[dict[str, Any]]
) -> None:
    env = {**os.environ, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}
    job = json.dumps({"properties": properties, "table": table, "rows": rows})
    done = subprocess.run(
        [sys.executable, "-c", _APPEND_SCRIPT], input=job, env=env, capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"appended {len(rows)}"


# == 1. Several catalogs, each belonging to a tenant ===========================================


def test_catalog_list_shows_each_principal_only_its_tenants_catalogs(
    deployment: Deployment,
) -> None:
    d = deployment
    expected = {
        name: {
            "uri": f"{d.url}/v1/{name}/",
            "oauth2-server-uri": f"{d.url}/v1/{name}/v1/oauth/tokens",
        }
        for name in ("default", "acme", "static")
    }
    cases = [
        (d.user("lister"), {"default", "static"}),
        (d.user("lister-admin", Role.TENANT_ADMIN), {"default", "static"}),
        (d.user("acme-lister", tenant="acme"), {"acme"}),
        (d.user("root-lister", Role.ROOT), {"default", "static", "acme"}),
    ]
    for created, names in cases:
        answer = request(f"{d.url}/api/v1/catalogs", headers=key_header(created))
        assert answer.status == 200, answer.body
        listed = {c["name"]: c for c in answer.json()["catalogs"]}
        assert set(listed) == names, created.user.role
        for name, entry in listed.items():
            assert entry["uri"] == expected[name]["uri"]
            assert entry["oauth2-server-uri"] == expected[name]["oauth2-server-uri"]
            assert entry["tenant"] == ("acme" if name == "acme" else "default")


def test_default_tenant_user_creates_and_lists_namespaces_in_default_and_static(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("two-catalogs")
    default = load_catalog("default", **d.gateway.pyiceberg_properties(created, None, "default"))
    static = load_catalog("static", **d.gateway.pyiceberg_properties(created, None, "static"))
    via_default, via_static = unique("via_default"), unique("via_static")
    default.create_namespace(via_default)
    static.create_namespace(via_static)
    # Both catalogs front the same credentialed SeaweedFS, each with its own upstream auth.
    for catalog in (default, static):
        listed = catalog.list_namespaces()
        assert (via_default,) in listed and (via_static,) in listed
    static.drop_namespace(via_default)
    default.drop_namespace(via_static)
    assert not {(via_default,), (via_static,)} & set(default.list_namespaces())


# Every kind of catalog route (section 1.7 of the reference), relative to /v1/acme/v1/.
_NS = unique("acme_probe")
_TABLE_BODY = {
    "name": "t",
    "schema": {"type": "struct", "schema-id": 0,
               "fields": [{"id": 1, "name": "id", "type": "long", "required": True}]},
}  # fmt: skip
ACME_ROUTES: list[tuple[str, str, object]] = [
    ("GET", "config", None),
    ("GET", f"config?warehouse={WAREHOUSE}", None),
    ("GET", "namespaces", None),
    ("GET", f"{WAREHOUSE}/namespaces", None),
    ("POST", f"{WAREHOUSE}/namespaces", {"namespace": [_NS]}),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}", None),
    ("HEAD", f"{WAREHOUSE}/namespaces/{_NS}", None),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/properties", {"updates": {"a": "b"}}),
    ("DELETE", f"{WAREHOUSE}/namespaces/{_NS}", None),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}/tables", None),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/tables", _TABLE_BODY),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}/tables/t", None),
    ("HEAD", f"{WAREHOUSE}/namespaces/{_NS}/tables/t", None),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/tables/t", {"requirements": [], "updates": []}),
    ("DELETE", f"{WAREHOUSE}/namespaces/{_NS}/tables/t?purgeRequested=true", None),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}/tables/t/credentials", None),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/tables/t/metrics", {"report-type": "scan-report"}),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/tables/t/plan", {}),
    ("POST", f"{WAREHOUSE}/namespaces/{_NS}/register", {"name": "t", "metadata-location": "x"}),
    ("POST", f"{WAREHOUSE}/tables/rename", {"source": {}, "destination": {}}),
    ("POST", f"{WAREHOUSE}/transactions/commit", {"table-changes": []}),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}/views", None),
    ("GET", f"{WAREHOUSE}/namespaces/{_NS}/views/v", None),
]


def _send(url: str, method: str, document: object, headers: dict[str, str]) -> Answer:
    if document is None:
        return request(url, method, headers)
    return post_json(url, document, headers)


def test_default_tenant_user_gets_403_iceberg_json_on_every_acme_route(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("not-acme")
    credentials = {
        "api key": key_header(created),
        "gateway token": bearer(gateway_token(d, created)),
        # A token asked for at acme's own token endpoint is still the same principal's token.
        "token from acme's endpoint": bearer(gateway_token(d, created, "acme")),
    }
    for label, headers in credentials.items():
        for method, tail, document in ACME_ROUTES:
            answer = _send(catalog_url(d, "acme", tail), method, document, headers)
            where = f"{label}: {method} {tail}"
            if method == "HEAD":
                assert answer.status == 403, where
                continue
            assert answer.status == 403, (where, answer.body)
            assert_iceberg_error(answer, 403, "ForbiddenException")
    # Refused before forwarding: nothing was created in acme's upstream.
    acme_user = d.user("acme-checker", tenant="acme")
    answer = request(
        catalog_url(d, "acme", f"{WAREHOUSE}/namespaces/{_NS}"), headers=key_header(acme_user)
    )
    assert answer.status == 404, answer.body


def test_acme_user_roundtrips_with_pyiceberg_through_anonymous_seaweedfs(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("acme-etl", tenant="acme")
    properties = {**d.gateway.pyiceberg_properties(created, None, "acme"), **d.anonymous_s3()}
    catalog = load_catalog("acme", **properties)
    namespace = unique("acme")
    catalog.create_namespace(namespace)
    catalog.create_table(f"{namespace}.events", schema=SCHEMA)
    # The append (data files to anonymous S3, the commit through the gateway) runs in a
    # process of its own: see _APPEND_SCRIPT.
    append_in_subprocess(properties, f"{namespace}.events", ROWS)
    scanned = catalog.load_table(f"{namespace}.events").scan().to_arrow()
    assert scanned.sort_by("id").to_pylist() == ROWS
    assert catalog.list_tables(namespace) == [(namespace, "events")]
    # It really is the anonymous instance, and nothing of it shows in the credentialed one.
    direct = request(f"{d.anonymous.iceberg_url}/v1/{WAREHOUSE}/namespaces/{namespace}")
    assert direct.status == 200, direct.body
    default_root = d.user("default-looker", Role.ROOT)
    other = request(
        catalog_url(d, "default", f"{WAREHOUSE}/namespaces/{namespace}"),
        headers=key_header(default_root),
    )
    assert other.status == 404
    catalog.drop_table(f"{namespace}.events")
    catalog.drop_namespace(namespace)


def test_acme_user_gets_403_on_default_and_static_and_the_root_mount(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("acme-outsider", tenant="acme")
    for headers in (key_header(created), bearer(gateway_token(d, created, "acme"))):
        for url in (
            catalog_url(d, "default", "config"),
            catalog_url(d, "default", f"{WAREHOUSE}/namespaces"),
            catalog_url(d, "static", f"config?warehouse={WAREHOUSE}"),
            catalog_url(d, "static", f"{WAREHOUSE}/namespaces"),
            f"{d.url}/v1/config",  # the default catalog is also served at the root
            f"{d.url}/v1/{WAREHOUSE}/namespaces",
        ):
            assert_iceberg_error(request(url, headers=headers), 403, "ForbiddenException")
        answer = post_json(catalog_url(d, "default", f"{WAREHOUSE}/namespaces"),
                           {"namespace": [unique("nope")]}, headers)  # fmt: skip
        assert_iceberg_error(answer, 403, "ForbiddenException")
    with pytest.raises(ForbiddenError):
        load_catalog("default", **d.gateway.pyiceberg_properties(created, None, "default"))


def test_root_may_use_all_three_catalogs(deployment: Deployment) -> None:
    d = deployment
    root = d.user("root", Role.ROOT)
    for name in ("default", "static", "acme"):
        catalog = load_catalog(name, **d.gateway.pyiceberg_properties(root, None, name))
        namespace = unique(f"root_{name}")
        catalog.create_namespace(namespace)
        assert (namespace,) in catalog.list_namespaces()
        catalog.drop_namespace(namespace)


def test_upstream_credentials_never_reach_a_client(deployment: Deployment) -> None:
    d = deployment
    root = d.user("leak-root", Role.ROOT)
    plain = d.user("leak-user")
    acme = d.user("leak-acme", tenant="acme")
    seen: list[tuple[int, Answer]] = []  # (expected status, what the client received)

    def expect(status: int, answer: Answer) -> None:
        seen.append((status, answer))

    for catalog, who in (("default", root), ("static", plain), ("acme", acme), ("acme", root)):
        auth = key_header(who)
        vended = {**auth, "X-Iceberg-Access-Delegation": "vended-credentials"}
        ns = unique("leak")
        namespaces = catalog_url(d, catalog, f"{WAREHOUSE}/namespaces")
        table = f"{namespaces}/{ns}/tables/t"
        expect(200, request(catalog_url(d, catalog, "config"), headers=auth))
        expect(200, request(catalog_url(d, catalog, f"config?warehouse={WAREHOUSE}"), headers=auth))
        expect(200, post_json(namespaces, {"namespace": [ns]}, auth))
        expect(409, post_json(namespaces, {"namespace": [ns]}, auth))
        expect(200, post_json(f"{namespaces}/{ns}/tables", _TABLE_BODY, auth))  # createTable
        expect(200, request(table, headers=auth))  # loadTable, with the upstream's config
        expect(200, request(table, headers=vended))  # loadTable asking for vended credentials
        expect(404, request(f"{table}/credentials", headers=vended))  # not in SeaweedFS 4.48
        expect(404, request(f"{namespaces}/{ns}/tables/missing", headers=auth))
        expect(400, request(namespaces, "POST", {**auth, "Content-Type": "application/json"},
                            b"{not json"))  # fmt: skip
        expect(204, request(table, "DELETE", auth))
        expect(204, request(f"{namespaces}/{ns}", "DELETE", auth))
        expect(401, request(namespaces, headers=bearer("garbage")))
        expect(401, request(catalog_url(d, catalog, "config")))
    expect(403, request(catalog_url(d, "acme", "config"), headers=key_header(plain)))
    expect(404, request(catalog_url(d, "nosuch", "config"), headers=key_header(root)))
    expect(
        400, request(catalog_url(d, "default", "a/../../oauth/tokens"), headers=key_header(root))
    )
    # Someone tries the upstream's own credentials at the gateway's token endpoint.
    form = {"grant_type": "client_credentials", "client_id": d.credentialed.access_key,
            "client_secret": d.credentialed.secret_key}  # fmt: skip
    expect(401, post_form(f"{d.url}/v1/default/v1/oauth/tokens", form))
    expect(200, request(f"{d.url}/api/v1/catalogs", headers=key_header(root)))
    expect(200, request(f"{d.url}/readyz"))
    expect(200, request(f"{d.url}/.well-known/oauth-authorization-server"))
    assert [status for status, _ in seen] == [answer.status for _, answer in seen]

    upstream = d.gateway.call(d.upstream_oauth2().authorization()) or ""
    upstream_token = upstream.removeprefix("Bearer ")
    forbidden = {
        "SeaweedFS secret key": d.credentialed.secret_key,
        "static upstream bearer": d.static_token,
        "static bearer signature": d.static_token.rsplit(".", 1)[-1],
        "gateway's upstream OAuth2 token": upstream_token,
        "its signature": upstream_token.rsplit(".", 1)[-1],
    }
    assert all(len(value) >= 16 for value in forbidden.values())
    for _, answer in seen:
        text = answer.raw()
        for label, value in forbidden.items():
            assert value not in text, f"{label} leaked in a {answer.status} answer"


# == 2. Upstream auth per catalog, each against the real upstream ==============================


def test_upstream_auth_none_sends_no_authorization_to_the_anonymous_seaweedfs(
    deployment: Deployment,
) -> None:
    d = deployment
    namespaces = f"{d.anonymous.iceberg_url}/v1/{WAREHOUSE}/namespaces"
    # The premise: this upstream takes no credential at all, and refuses any bearer.
    assert request(namespaces).status == 200
    assert request(namespaces, headers=bearer("not-a-token")).status == 401
    created = d.user("anon-upstream", tenant="acme")
    ns = unique("none")
    # The client's own credential (a gateway JWT in Authorization, or an X-API-Key) never
    # reaches the upstream, and the gateway adds none: otherwise these would be 401s.
    listing = catalog_url(d, "acme", f"{WAREHOUSE}/namespaces")
    for headers in (bearer(gateway_token(d, created, "acme")), key_header(created)):
        assert request(listing, headers=headers).status == 200
    headers = bearer(gateway_token(d, created, "acme"))
    answer = post_json(listing, {"namespace": [ns]}, headers)
    assert answer.status == 200, answer.body
    assert request(f"{namespaces}/{ns}").status == 200
    answer = request(catalog_url(d, "acme", f"{WAREHOUSE}/namespaces/{ns}"), "DELETE", headers)
    assert answer.status == 204, answer.body


def test_upstream_static_bearer_is_what_lets_the_static_catalog_in(deployment: Deployment) -> None:
    d = deployment
    namespaces = f"{d.credentialed.server.iceberg_url}/v1/{WAREHOUSE}/namespaces"
    assert request(namespaces).status == 403  # the premise: this upstream needs a credential
    assert request(namespaces, headers=bearer(d.static_token)).status == 200
    created = d.user("static-upstream")
    ns = unique("static")
    headers = key_header(created)
    answer = post_json(
        catalog_url(d, "static", f"{WAREHOUSE}/namespaces"), {"namespace": [ns]}, headers
    )
    assert answer.status == 200, answer.body
    answer = request(catalog_url(d, "static", f"{WAREHOUSE}/namespaces/{ns}"), headers=headers)
    assert answer.status == 200, answer.body
    assert request(f"{namespaces}/{ns}", headers=bearer(d.static_token)).status == 200
    answer = request(catalog_url(d, "static", f"{WAREHOUSE}/namespaces/{ns}"), "DELETE", headers)
    assert answer.status == 204, answer.body


async def garble(auth: OAuth2ClientCredentials, bogus: str) -> None:
    """As if the upstream had revoked the gateway's token or rotated its signing key: the
    cached value looks fresh for ever, so only the upstream's 401 can reveal it. (Run on the
    gateway's loop.)"""
    auth._value = bogus
    auth._renew_at = math.inf


async def forget(auth: OAuth2ClientCredentials) -> None:
    auth.invalidate(auth._value)


def test_upstream_oauth2_token_is_renewed_and_the_request_retried_once_after_an_upstream_401(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("oauth2-upstream")
    url = catalog_url(d, "default", f"{WAREHOUSE}/namespaces")
    assert request(url, headers=key_header(created)).status == 200
    auth = d.upstream_oauth2()
    bogus = "Bearer " + secrets.token_urlsafe(32)
    # The premise: the upstream refuses it.
    namespaces = f"{d.credentialed.server.iceberg_url}/v1/{WAREHOUSE}/namespaces"
    assert request(namespaces, headers={"Authorization": bogus}).status == 401

    d.gateway.call(garble(auth, bogus))
    answer = request(url, headers=key_header(created))
    assert answer.status == 200, answer.body
    renewed = d.gateway.call(auth.authorization())
    assert renewed is not None and renewed != bogus
    assert request(namespaces, headers={"Authorization": renewed}).status == 200


def test_upstream_oauth2_token_refused_on_a_request_with_a_body_is_renewed_for_the_next(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("oauth2-post")
    auth = d.upstream_oauth2()
    url = catalog_url(d, "default", f"{WAREHOUSE}/namespaces")
    names = [unique("post401"), unique("post401")]
    d.gateway.call(garble(auth, "Bearer " + secrets.token_urlsafe(32)))
    try:
        # A streamed body cannot be replayed, so this one may fail (but not as a 5xx) ...
        first = post_json(url, {"namespace": [names[0]]}, key_header(created))
        assert first.status in (200, 401), first.body
        # ... the refused token must not be used again.
        second = post_json(url, {"namespace": [names[1]]}, key_header(created))
        assert second.status == 200, second.body
    finally:
        d.gateway.call(forget(auth))
        for name in names:
            request(f"{url}/{name}", "DELETE", key_header(created))


async def test_upstream_oauth2_against_the_real_seaweedfs_token_endpoint(
    seaweed: SeaweedUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    token_url = f"{seaweed.server.iceberg_url}/v1/oauth/tokens"
    async with aiohttp.ClientSession() as session:
        good = OAuth2ClientCredentials(
            session, token_url=token_url, client_id=seaweed.access_key,
            client_secret=seaweed.secret_key, scope="catalog",
        )  # fmt: skip
        value = await good.authorization()
        assert value is not None and value.startswith("Bearer ")
        async with session.get(
            f"{seaweed.server.iceberg_url}/v1/{WAREHOUSE}/namespaces",
            headers={"Authorization": value},
        ) as resp:
            assert resp.status == 200
        wrong_secret = "wrong-" + secrets.token_urlsafe(24)
        bad = OAuth2ClientCredentials(
            session, token_url=token_url, client_id=seaweed.access_key,
            client_secret=wrong_secret, scope="",
        )  # fmt: skip
        with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError) as refused:
            await bad.authorization()
    assert refused.value.status == 502
    shown = refused.value.response().text or ""
    assert json.loads(shown)["error"]["code"] == 502
    for secret in (wrong_secret, seaweed.secret_key):
        assert secret not in shown and secret not in caplog.text


@dataclass
class FakeTokenEndpoint:
    """A token endpoint that counts its fetches; ``hold`` keeps answers back until set.
    ``expires_in`` is JSON text, sent as is (None: left out)."""

    expires_in: str | None = "3600"
    status: int = 200
    body: bytes | None = None
    forms: list[dict[str, str]] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    hold: asyncio.Event | None = None
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/oauth/tokens", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.forms.append({k: str(v) for k, v in (await request.post()).items()})
        self.content_types.append(request.headers.get("Content-Type", ""))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.body is not None:
            return web.Response(status=self.status, body=self.body, content_type="application/json")
        lifetime = "" if self.expires_in is None else f', "expires_in": {self.expires_in}'
        document = (
            f'{{"access_token": "upstream-{len(self.forms)}", "token_type": "bearer"{lifetime}}}'
        )
        return web.Response(status=self.status, text=document, content_type="application/json")


SECRET = "upstream-secret-" + secrets.token_urlsafe(16)


async def _fake_endpoint(
    aiohttp_server: Any, endpoint: FakeTokenEndpoint, session: aiohttp.ClientSession,
    clock: FakeClock, scope: str = "",
) -> OAuth2ClientCredentials:  # fmt: skip
    server = await aiohttp_server(endpoint.app())
    return OAuth2ClientCredentials(
        session, token_url=str(server.make_url("/v1/oauth/tokens")), client_id="AKIDTEST",
        client_secret=SECRET, scope=scope, clock=clock,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("expires_in", "renew_after"),
    [
        ("3600", 3540.0),  # a tenth early, at most a minute
        ("300", 270.0),
        ("30", 27.0),
        (None, 3540.0),  # not said: an hour is assumed
        # Answers seen from less careful servers (the number as a string), and nonsense that
        # must neither keep a token for ever, nor fetch one per request, nor crash:
        ('"300"', 270.0),
        ('" 300 "', 270.0),
        ("true", 3540.0),
        ("NaN", 3540.0),
        ("Infinity", 3540.0),
        ("-5", 3540.0),
        ("0", 3540.0),
        pytest.param("1" + "0" * 400, 3540.0, id="400-digit"),  # was an OverflowError (500)
        ('"soon"', 3540.0),
    ],
)
async def test_upstream_oauth2_token_is_reused_until_expires_in_less_a_tenth_at_most_60s(
    aiohttp_server: Any, expires_in: str | None, renew_after: float
) -> None:
    endpoint = FakeTokenEndpoint(expires_in=expires_in)
    clock = FakeClock(1000.0)
    async with aiohttp.ClientSession() as session:
        auth = await _fake_endpoint(aiohttp_server, endpoint, session, clock)
        assert await auth.authorization() == "Bearer upstream-1"
        assert await auth.authorization() == "Bearer upstream-1"
        clock.now = 1000.0 + renew_after - 0.5
        assert await auth.authorization() == "Bearer upstream-1"
        assert len(endpoint.forms) == 1
        clock.now = 1000.0 + renew_after
        assert await auth.authorization() == "Bearer upstream-2"  # before the upstream expiry
        assert await auth.authorization() == "Bearer upstream-2"
        assert len(endpoint.forms) == 2
    assert endpoint.forms[0] == {
        "grant_type": "client_credentials", "client_id": "AKIDTEST", "client_secret": SECRET,
    }  # fmt: skip
    assert endpoint.content_types == ["application/x-www-form-urlencoded"] * 2


async def test_upstream_oauth2_concurrent_callers_share_one_fetch(aiohttp_server: Any) -> None:
    endpoint = FakeTokenEndpoint(hold=asyncio.Event())
    clock = FakeClock(1000.0)
    async with aiohttp.ClientSession() as session:
        auth = await _fake_endpoint(aiohttp_server, endpoint, session, clock, scope="catalog")
        for expected in ("Bearer upstream-1", "Bearer upstream-2"):
            assert endpoint.hold is not None
            endpoint.hold.clear()
            endpoint.arrived.clear()
            callers = [asyncio.create_task(auth.authorization()) for _ in range(25)]
            await endpoint.arrived.wait()  # the one fetch is in flight; everyone is waiting
            endpoint.hold.set()
            assert await asyncio.gather(*callers) == [expected] * 25
            clock.advance(3600)  # past renewal: the next wave shares one new fetch
        assert len(endpoint.forms) == 2
        assert endpoint.forms[0]["scope"] == "catalog"


async def test_upstream_oauth2_invalidate_forces_a_new_fetch(aiohttp_server: Any) -> None:
    endpoint = FakeTokenEndpoint()
    async with aiohttp.ClientSession() as session:
        auth = await _fake_endpoint(aiohttp_server, endpoint, session, FakeClock(1000.0))
        assert await auth.authorization() == "Bearer upstream-1"
        assert not auth.invalidate("Bearer some-older-token")  # not the current one
        assert auth.invalidate("Bearer upstream-1")
        assert await auth.authorization() == "Bearer upstream-2"
        assert await auth.authorization() == "Bearer upstream-2"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, json.dumps({"error": "invalid_client", "error_description": f"bad {SECRET}"})),
        (400, json.dumps({"error": "invalid_request"})),
        (500, f"Internal error while checking {SECRET}"),
        (503, ""),
        (200, "not json"),
        (200, json.dumps({"token_type": "bearer"})),  # no access_token
        (200, json.dumps({"access_token": "", "token_type": "bearer"})),
        (200, json.dumps(["access_token"])),
    ],
)
async def test_upstream_oauth2_refusal_is_a_502_that_names_no_secret(
    aiohttp_server: Any, caplog: pytest.LogCaptureFixture, status: int, body: str
) -> None:
    endpoint = FakeTokenEndpoint(status=status, body=body.encode())
    clock = FakeClock(1000.0)
    async with aiohttp.ClientSession() as session:
        auth = await _fake_endpoint(aiohttp_server, endpoint, session, clock)
        with caplog.at_level(logging.DEBUG), pytest.raises(UpstreamError) as refused:
            await auth.authorization()
        endpoint.status, endpoint.body = 200, None
        # Backing off: within a second of the failure, no second fetch is even tried ...
        with pytest.raises(UpstreamError):
            await auth.authorization()
        assert len(endpoint.forms) == 1
        # ... and after it, the recovered endpoint is asked again.
        clock.advance(1.0)
        assert await auth.authorization() == "Bearer upstream-2"
    error = refused.value
    assert error.status == 502
    shown = error.response().text or ""
    assert json.loads(shown)["error"] == {
        "message": error.detail, "type": "BadGatewayException", "code": 502,
    }  # fmt: skip
    assert SECRET not in shown and SECRET not in str(error) and SECRET not in caplog.text


# == 3. Token lifetime and refresh =============================================================


def test_pyiceberg_credential_catalog_keeps_working_after_its_token_expires(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("long-running")
    catalog = load_catalog("long", **d.gateway.pyiceberg_properties(created, d.credentialed))
    namespace = unique("lifetime")
    catalog.create_namespace(namespace)
    old = held_token(catalog)
    d.expire_tokens()
    # The token PyIceberg holds is now refused ...
    answer = request(catalog_url(d, "default", f"{WAREHOUSE}/namespaces"), headers=bearer(old))
    assert_iceberg_error(answer, 401, "NotAuthorizedException")
    # ... so its next call gets a 401, fetches a new token with its credential and retries.
    assert (namespace,) in catalog.list_namespaces()
    assert held_token(catalog) != old
    table = catalog.create_table(f"{namespace}.t", schema=SCHEMA)
    table.append(pa.Table.from_pylist(ROWS, schema=SCHEMA))
    d.expire_tokens()  # and once more, mid-work
    scanned = catalog.load_table(f"{namespace}.t").scan().to_arrow()
    assert scanned.sort_by("id").to_pylist() == ROWS
    catalog.drop_table(f"{namespace}.t")
    catalog.drop_namespace(namespace)


def test_expired_token_gets_401_with_code_never_419_or_5xx(deployment: Deployment) -> None:
    d = deployment
    created = d.user("expiring")
    acme = d.user("expiring-acme", tenant="acme")
    tokens = {"default": gateway_token(d, created), "acme": gateway_token(d, acme, "acme")}
    # (url, status while the token is valid): authentication comes first, so after expiry a
    # route the caller may not use is a 401 too, never a 403 that confirms the token.
    urls = {
        "default": [(catalog_url(d, "default", f"{WAREHOUSE}/namespaces"), 200),
                    (catalog_url(d, "static", f"config?warehouse={WAREHOUSE}"), 200),
                    (f"{d.url}/v1/config", 200), (f"{d.url}/api/v1/catalogs", 200)],
        "acme": [(catalog_url(d, "acme", f"{WAREHOUSE}/namespaces"), 200),
                 (catalog_url(d, "default", "config"), 403)],
    }  # fmt: skip
    for who, token in tokens.items():
        for url, status in urls[who]:
            assert request(url, headers=bearer(token)).status == status, url
    d.expire_tokens()
    for who, token in tokens.items():
        for url, _ in urls[who]:
            answer = request(url, headers=bearer(token))
            assert_iceberg_error(answer, 401, "NotAuthorizedException")
            assert (answer.header("WWW-Authenticate") or "").startswith("Bearer")
        answer = post_json(catalog_url(d, who, f"{WAREHOUSE}/namespaces"),
                           {"namespace": [unique("late")]}, bearer(token))  # fmt: skip
        assert_iceberg_error(answer, 401, "NotAuthorizedException")


def test_human_session_cannot_be_stretched_past_its_lifetime_by_token_exchange(
    deployment: Deployment,
) -> None:
    d = deployment
    username, password = unique("alice"), secrets.token_urlsafe(18)
    d.gateway.call(
        d.gateway.app[USERS].create(username=username, password=password,
                                    role=Role.TENANT_ADMIN, tenant="default", actor="test")
    )  # fmt: skip
    login = post_json(f"{d.url}/api/v1/login", {"username": username, "password": password}, {})
    assert login.status == 200, login.body
    token = login.json()["token"]
    ends = d.clock() + d.gateway.settings.tokens.session_lifetime_seconds
    while d.clock() < ends + 10:  # refresh the way Java does, a little before each expiry
        answer = post_form(
            f"{d.url}/v1/oauth/tokens",
            {"grant_type": TOKEN_EXCHANGE, "subject_token": token,
             "subject_token_type": ACCESS_TOKEN_TYPE, "scope": "catalog"},
            bearer(token),
        )  # fmt: skip
        assert answer.status < 500, answer.body
        if answer.status == 200:
            token = answer.json()["access_token"]
        d.clock.advance(d.gateway.settings.tokens.lifetime_seconds * 0.8)
    assert request(f"{d.url}/api/v1/me", headers=bearer(token)).status == 401


def test_pyiceberg_oauth2_auth_manager_with_basic_and_no_scope_roundtrips(
    deployment: Deployment,
) -> None:
    d = deployment
    created = d.user("oauth2-manager")
    roundtrip(
        {
            "type": "rest",
            "uri": f"{d.url}/v1/default/",
            "auth": {
                "type": "oauth2",
                "oauth2": {
                    "client_id": created.user.id,
                    "client_secret": created.api_key.plaintext(),
                    "token_url": f"{d.url}/v1/default/v1/oauth/tokens",
                },
            },
            **d.credentialed.s3_properties(),
        }
    )


# == 4. The Java REST client's wire sequence ===================================================


def test_java_rest_client_wire_sequence_with_token_exchange_refresh(deployment: Deployment) -> None:
    d = deployment
    created = d.user("java")
    uuid_, key = created.user.id, created.api_key.plaintext()
    token_url = (
        f"{d.url}/v1/default/v1/oauth/tokens"  # default oauth2-server-uri: {uri}/v1/oauth/tokens
    )

    # 5.2 step 1 / 5.3: client_credentials, credentials in the FORM body, scope=catalog.
    form = {"grant_type": "client_credentials", "client_id": uuid_, "client_secret": key,
            "scope": "catalog"}  # fmt: skip
    answer = post_form(token_url, form, JAVA_HEADERS)
    assert answer.status == 200, answer.body
    issued = answer.json()
    assert issued["token_type"].lower() in ("bearer", "n_a")  # OAuthTokenResponse.validate
    assert issued["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert isinstance(issued["expires_in"], int) and "refresh_token" not in issued
    token, token_type = issued["access_token"], issued["issued_token_type"]
    # Java takes the expiry from the JWT's exp claim when the token is a JWT.
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] == pytest.approx(d.clock() + issued["expires_in"], abs=2)

    # 5.2 step 2: GET v1/config?warehouse=... with the bearer (and Content-Type even on a GET).
    java = {**JAVA_HEADERS, "Content-Type": "application/json"}
    answer = request(
        f"{d.url}/v1/default/v1/config?warehouse={WAREHOUSE}", headers={**java, **bearer(token)}
    )
    assert answer.status == 200, answer.body
    config = answer.json()
    prefix = config["overrides"]["prefix"]
    assert not {"uri", "token", "credential", "oauth2-server-uri"} & set(config["overrides"])
    namespaces = f"{d.url}/v1/default/v1/{prefix}/namespaces"
    assert request(namespaces, headers={**java, **bearer(token)}).status == 200

    # 5.4 normal refresh: token exchange with the current token as subject and as bearer.
    def exchange(subject: str, subject_type: str, auth: dict[str, str]) -> Answer:
        return post_form(token_url, {"grant_type": TOKEN_EXCHANGE, "subject_token": subject,
                                     "subject_token_type": subject_type, "scope": "catalog"},
                         {**JAVA_HEADERS, **auth})  # fmt: skip

    d.clock.advance(issued["expires_in"] * 0.9)  # the timer fires at expiry - lifetime/10
    answer = exchange(token, token_type, bearer(token))
    assert answer.status == 200, answer.body
    refreshed = answer.json()
    assert refreshed["issued_token_type"] == ACCESS_TOKEN_TYPE  # Java's next tokenType
    assert refreshed["token_type"].lower() == "bearer" and refreshed["access_token"] != token
    token, token_type = refreshed["access_token"], refreshed["issued_token_type"]
    answer = request(namespaces, headers={**java, **bearer(token)})
    assert answer.status == 200, answer.body
    assert "namespaces" in answer.json()
    # A second exchange works off the first one's issued_token_type.
    answer = exchange(token, token_type, bearer(token))
    assert answer.status == 200, answer.body
    token = answer.json()["access_token"]

    # 5.4 failure path: the token has already expired (say the JVM slept). The normal refresh
    # is refused as an OAuth error (400 invalid_grant, not a 5xx) ...
    d.clock.advance(refreshed["expires_in"] + 60)
    answer = request(namespaces, headers={**java, **bearer(token)})
    assert_iceberg_error(answer, 401, "NotAuthorizedException")  # Java reads `code` from it
    answer = exchange(token, token_type, bearer(token))
    assert answer.status == 400, answer.body
    assert answer.json()["error"] == "invalid_grant"
    # ... and refreshExpiredToken sends the same exchange with Basic base64(<credential>).
    answer = exchange(token, token_type, basic(uuid_, key))
    assert answer.status == 200, answer.body
    renewed = answer.json()
    assert renewed["issued_token_type"] == ACCESS_TOKEN_TYPE
    answer = request(namespaces, headers={**java, **bearer(renewed["access_token"])})
    assert answer.status == 200, answer.body
    # The Basic credential must be the subject's own: another user's cannot revive it.
    other = d.user("java-other")
    answer = exchange(token, token_type, basic(other.user.id, other.api_key.plaintext()))
    assert (answer.status, answer.json()["error"]) == (400, "invalid_grant")

    # Error bodies on catalog routes carry `code` (Java's ErrorHandlers map on it).
    answer = request(
        f"{namespaces}/{unique('missing')}", headers={**java, **bearer(renewed["access_token"])}
    )
    assert_iceberg_error(answer, 404, "NoSuchNamespaceException")
    answer = request(
        catalog_url(d, "acme", "config"), headers={**java, **bearer(renewed["access_token"])}
    )
    assert_iceberg_error(answer, 403, "ForbiddenException")
