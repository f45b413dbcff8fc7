"""Real DuckDB 1.4.4 through the gateway, in front of a real SeaweedFS that requires
credentials (so the gateway authenticates upstream with OAuth2 client_credentials).

The iceberg, httpfs and avro extensions come from the ``duckdb-ext-*`` wheels and are loaded
from disk; nothing is downloaded. DuckDB makes its catalog calls through the gateway but reads
and writes table data straight at SeaweedFS's S3 endpoint, so each connection also gets an S3
secret with SeaweedFS's keys (SeaweedFS vends no storage credentials here).

What DuckDB 1.4.4 sends, checked below against its own HTTP log: the token request is HTTP
Basic ``<client id>:<secret>`` with ``scope=PRINCIPAL_ROLE:ALL``, made once at CREATE SECRET
and never refreshed; ``/v1/config`` always carries ``warehouse=<ATTACH path>``, empty too; the
ENDPOINT is lowercased; table data never passes the gateway.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from gateway.identity.service_users import CreatedKey

from ..live import WAREHOUSE, LiveGateway, SeaweedUpstream

pytestmark = pytest.mark.seaweedfs

# avro is needed as well: LOAD iceberg loads it (manifests are Avro) and fails without it.
EXTENSIONS = ("httpfs", "avro", "iceberg")
ROWS = [(1, "a"), (2, None), (9_007_199_254_740_993, "ü")]


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def options(**values: str) -> str:
    """``NAME 'value', ...`` for CREATE SECRET and ATTACH."""
    return ", ".join(f"{name} {sql_str(value)}" for name, value in values.items())


def extension_directory() -> Path:
    """Where the ``duckdb-ext-*`` wheels put the extensions, in the layout DuckDB expects
    (``<dir>/v1.4.4/<platform>/<name>.duckdb_extension``). ``duckdb_ext`` is a namespace
    package with no Python code in it."""
    spec = importlib.util.find_spec("duckdb_ext")
    assert spec is not None and spec.submodule_search_locations, "duckdb-ext-* not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "extensions"


def connect_offline() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the iceberg extension loaded from the wheels, never the network."""
    con = duckdb.connect()
    con.execute(f"SET extension_directory = {sql_str(str(extension_directory()))}")
    con.execute("SET autoinstall_known_extensions = false")
    for name in EXTENSIONS:
        con.execute(f"LOAD {name}")
    return con


@pytest.fixture
def duck(seaweed: SeaweedUpstream) -> Iterator[duckdb.DuckDBPyConnection]:
    """An offline connection logging its HTTP calls, with the S3 secret for table data."""
    con = connect_offline()
    con.execute("CALL enable_logging('HTTP')")
    host_port = seaweed.server.s3_endpoint.removeprefix("http://")
    s3 = options(KEY_ID=seaweed.access_key, SECRET=seaweed.secret_key, ENDPOINT=host_port)
    con.execute(
        f"CREATE SECRET s3data (TYPE s3, {s3}, REGION 'us-east-1', URL_STYLE 'path', USE_SSL false)"
    )
    yield con
    con.close()


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    headers: dict[str, str]
    status: str


def http_log(con: duckdb.DuckDBPyConnection) -> list[Call]:
    rows = con.sql(
        "SELECT request.type, request.url, request.headers, response.status "
        "FROM duckdb_logs_parsed('HTTP') ORDER BY timestamp"
    ).fetchall()
    return [Call(method, url, dict(headers or {}), status) for method, url, headers, status in rows]


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def gateway_get(url: str, created: CreatedKey) -> tuple[int, dict[str, Any]]:
    """A second client's view (X-API-Key), to check what DuckDB did really reached upstream."""
    request = urllib.request.Request(url, headers={"X-API-Key": created.api_key.plaintext()})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def schemas(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.sql("SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'cat'")
    return {name for (name,) in rows.fetchall()}


def roundtrip(con: duckdb.DuckDBPyConnection, gateway: LiveGateway, created: CreatedKey) -> None:
    """List, create a schema and a table, insert, read back exactly, drop both."""
    namespace = f"duck_{secrets.token_hex(4)}"
    assert namespace not in schemas(con)
    con.execute(f"CREATE SCHEMA cat.{namespace}")
    assert namespace in schemas(con)
    con.execute(f"CREATE TABLE cat.{namespace}.events (id BIGINT, name VARCHAR)")
    con.execute(
        f"INSERT INTO cat.{namespace}.events VALUES (?, ?), (?, ?), (?, ?)",
        [value for row in ROWS for value in row],
    )
    assert con.sql(f"SELECT id, name FROM cat.{namespace}.events ORDER BY id").fetchall() == ROWS
    tables = con.sql("SELECT database, schema, name FROM (SHOW ALL TABLES)").fetchall()
    assert ("cat", namespace, "events") in tables
    base = f"{gateway.url}/v1/default/v1/{WAREHOUSE}/namespaces/{namespace}"
    status, listed = gateway_get(f"{base}/tables", created)
    assert (status, listed["identifiers"]) == (200, [{"namespace": [namespace], "name": "events"}])

    con.execute(f"DROP TABLE cat.{namespace}.events")
    con.execute(f"DROP SCHEMA cat.{namespace}")  # DuckDB 1.4.4 drops Iceberg namespaces too
    assert namespace not in schemas(con)
    assert gateway_get(base, created)[0] == 404


def assert_catalog_calls_went_to(
    calls: list[Call], seaweed: SeaweedUpstream, catalog_base: str, authorization: str
) -> None:
    """Every catalog call went to ``catalog_base`` with ``authorization``; table data went to
    SeaweedFS's S3 endpoint directly, with none of the gateway credentials."""
    catalog = [c for c in calls if not c.url.startswith(seaweed.server.s3_endpoint)]
    storage = [c for c in calls if c.url.startswith(seaweed.server.s3_endpoint)]
    assert catalog[0].url.startswith(f"{catalog_base}/v1/config?")
    for call in catalog:
        assert call.url.startswith(f"{catalog_base}/v1/"), call.url
        assert call.headers.get("Authorization") == authorization, call.url
    assert any(c.method == "PUT" for c in storage)  # the Parquet and metadata files
    for call in storage:
        assert call.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256 ")


def credentials(created: CreatedKey, **extra: str) -> str:
    """The service user as DuckDB's OAuth2 client: its UUID and API key."""
    return options(CLIENT_ID=created.user.id, CLIENT_SECRET=created.api_key.plaintext(), **extra)


def test_client_credentials_secret_gets_a_token_with_basic_auth_and_round_trips(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-oauth")
    token_url = f"{live_gateway.url}/v1/default/v1/oauth/tokens"
    endpoint = f"{live_gateway.url}/v1/default"
    duck.execute(
        f"CREATE SECRET ice (TYPE iceberg, {credentials(created, OAUTH2_SERVER_URI=token_url)})"
    )
    duck.execute(
        f"ATTACH 'warehouse' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint)}, SECRET ice)"
    )
    roundtrip(duck, live_gateway, created)

    token_call, *calls = http_log(duck)
    basic = base64.b64encode(f"{created.user.id}:{created.api_key.plaintext()}".encode())
    assert (token_call.method, token_call.url, token_call.status) == ("POST", token_url, "OK_200")
    assert token_call.headers["Authorization"] == f"Basic {basic.decode()}"
    assert not any("oauth/tokens" in c.url for c in calls)  # fetched once, never refreshed
    assert calls[0].url == f"{endpoint}/v1/config?warehouse=warehouse"
    bearer = calls[0].headers["Authorization"].removeprefix("Bearer ")
    claims = jwt_claims(bearer)  # the gateway's token, for this user, with DuckDB's scope
    assert (claims["sub"], claims["scope"]) == (created.user.id, "PRINCIPAL_ROLE:ALL")
    assert_catalog_calls_went_to(calls, seaweed, endpoint, f"Bearer {bearer}")


def test_api_key_as_static_token_round_trips_without_a_token_request(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-token")
    key = created.api_key.plaintext()
    endpoint = f"{live_gateway.url}/v1/default"
    duck.execute(f"CREATE SECRET ice (TYPE iceberg, {options(TOKEN=key)})")
    duck.execute(
        f"ATTACH 'warehouse' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint)}, SECRET ice)"
    )
    roundtrip(duck, live_gateway, created)
    calls = http_log(duck)
    assert not any("oauth/tokens" in c.url for c in calls)
    assert_catalog_calls_went_to(calls, seaweed, endpoint, f"Bearer {key}")


@pytest.mark.parametrize("auth", ["token", "client_credentials"])
def test_endpoint_at_the_gateway_root_serves_the_default_catalog(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream, duck: duckdb.DuckDBPyConnection, auth: str
) -> None:
    created = live_gateway.user(f"duck-root-{auth}")
    root = live_gateway.url
    if auth == "token":
        secret = options(TOKEN=created.api_key.plaintext())
    else:  # no OAUTH2_SERVER_URI: DuckDB posts to <ENDPOINT>/v1/oauth/tokens, the root's
        secret = credentials(created, ENDPOINT=root)
    duck.execute(f"CREATE SECRET ice (TYPE iceberg, {secret})")
    duck.execute(f"ATTACH 'warehouse' AS cat (TYPE iceberg, {options(ENDPOINT=root)}, SECRET ice)")
    roundtrip(duck, live_gateway, created)
    calls = http_log(duck)
    if auth == "client_credentials":
        token_call, *calls = calls
        assert (token_call.url, token_call.status) == (f"{root}/v1/oauth/tokens", "OK_200")
    assert calls[0].url == f"{root}/v1/config?warehouse=warehouse"
    assert calls[1].url.startswith(f"{root}/v1/{WAREHOUSE}/namespaces")
    assert_catalog_calls_went_to(calls, seaweed, root, calls[0].headers["Authorization"])


def test_empty_attach_path_gets_the_catalogs_warehouse_from_the_gateway(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-empty")
    key = created.api_key.plaintext()
    endpoint = f"{live_gateway.url}/v1/default"
    duck.execute(f"ATTACH '' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint, TOKEN=key)})")
    roundtrip(duck, live_gateway, created)
    calls = http_log(duck)
    # DuckDB sends an empty warehouse=; the gateway names the catalog's, and the upstream's
    # answer (prefix "warehouse") steers DuckDB to the right table bucket.
    assert calls[0].url == f"{endpoint}/v1/config?warehouse="
    assert calls[1].url.startswith(f"{endpoint}/v1/{WAREHOUSE}/namespaces")
    assert_catalog_calls_went_to(calls, seaweed, endpoint, f"Bearer {key}")


def test_endpoint_written_in_upper_case_works_because_duckdb_lowercases_it(
    live_gateway: LiveGateway, seaweed: SeaweedUpstream, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-case")
    key = created.api_key.plaintext()
    shouted = f"{live_gateway.url}/V1/DEFAULT".upper()
    duck.execute(f"ATTACH '' AS cat (TYPE iceberg, {options(ENDPOINT=shouted, TOKEN=key)})")
    roundtrip(duck, live_gateway, created)
    endpoint = f"{live_gateway.url}/v1/default"  # catalog names are lowercase by rule
    assert_catalog_calls_went_to(http_log(duck), seaweed, endpoint, f"Bearer {key}")


def test_wrong_key_is_refused_at_create_secret_and_at_attach(
    live_gateway: LiveGateway, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-wrong")
    wrong = "pgl_" + "0" * 16 + "_" + secrets.token_urlsafe(32)
    token_url = f"{live_gateway.url}/v1/default/v1/oauth/tokens"
    endpoint = f"{live_gateway.url}/v1/default"
    bad_client = options(
        CLIENT_ID=created.user.id, CLIENT_SECRET=wrong, OAUTH2_SERVER_URI=token_url
    )
    with pytest.raises(duckdb.Error, match="Could not get token"):
        duck.execute(f"CREATE SECRET ice (TYPE iceberg, {bad_client})")
    with pytest.raises(duckdb.Error, match="Unauthorized_401"):
        duck.execute(f"ATTACH '' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint, TOKEN=wrong)})")
    assert [c.status for c in http_log(duck)] == ["Unauthorized_401", "Unauthorized_401"]


def test_deactivated_service_user_is_refused_although_duckdb_keeps_its_token(
    live_gateway: LiveGateway, duck: duckdb.DuckDBPyConnection
) -> None:
    created = live_gateway.user("duck-deactivate")
    endpoint = f"{live_gateway.url}/v1/default"
    inline = credentials(created, OAUTH2_SERVER_URI=f"{endpoint}/v1/oauth/tokens")
    duck.execute(f"ATTACH '' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint)}, {inline})")
    schemas(duck)
    live_gateway.call(live_gateway.admin.deactivate(created.user.id, actor="test"))
    # DuckDB 1.4.4 holds on to the token it fetched at ATTACH; the gateway checks the
    # principal on every request, so the next catalog call is refused.
    with pytest.raises(duckdb.Error, match="Unauthorized_401.*NotAuthorizedException"):
        duck.execute(f"CREATE SCHEMA cat.duck_{secrets.token_hex(4)}")
