"""Real iceberg-js 1.0.0 (node) through the gateway.

``tests/js/roundtrip.mjs`` drives ``IcebergRestCatalog`` (list namespaces, create a namespace
and a table, load it, list tables, drop both) and prints a JSON summary. The live tests run it
against the gateway in front of a real SeaweedFS with credentials, with each auth setting a
user would copy from the README, with and without ``warehouse``. The recording tests put the
gateway in front of a small fake catalog to see exactly what reaches the upstream: every
mutation's ``Idempotency-Key``, byte for byte, and none of the client's credentials.

iceberg-js is installed by ``make test`` (``npm ci --prefix tests/js``); node comes from PATH.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.settings import CatalogSettings, UpstreamAuthSettings

from ..conftest import MakeGateway
from ..fakes import Recorded, RecordingUpstream
from ..live import LiveGateway

pytestmark = pytest.mark.seaweedfs

JS_DIR = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIR / "roundtrip.mjs"
ICEBERG_JS_VERSION = "1.0.0"
TIMEOUT = 120.0
COLUMNS = [["id", "long", True], ["name", "string", False]]
MUTATIONS = ("POST", "DELETE")


@pytest.fixture(scope="module")
def node() -> str:
    """The node binary, once iceberg-js is known to be installed at the pinned version."""
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: the iceberg-js tests need Node.js 20 or newer")
    manifest = JS_DIR / "node_modules" / "iceberg-js" / "package.json"
    if not manifest.is_file():
        pytest.fail(
            "iceberg-js is not installed in tests/js/node_modules: run `make test`, which "
            "installs it (npm ci --prefix tests/js)"
        )
    version = json.loads(manifest.read_text())["version"]
    if version != ICEBERG_JS_VERSION:
        pytest.fail(
            f"tests/js/node_modules has iceberg-js {version}, not {ICEBERG_JS_VERSION}: "
            "run `make test` (npm ci --prefix tests/js)"
        )
    return found


def _command(
    node: str, base_url: str, auth: str, namespace: str, warehouse: str | None, *, trace: bool
) -> list[str]:
    command = [node, str(SCRIPT), "--base-url", base_url, "--auth", auth, "--namespace", namespace]
    if warehouse is not None:
        command += ["--warehouse", warehouse]
    if trace:
        command.append("--trace")
    return command


def _environment(secret: str) -> dict[str, str]:
    # The secret goes by environment, not argv, so no process listing shows it.
    return {**os.environ, "ICEBERG_JS_SECRET": secret}


def _summary(returncode: int | None, stdout: bytes, stderr: bytes) -> dict[str, Any]:
    """The script's JSON summary; fails the test with everything node said if it failed."""
    try:
        summary: dict[str, Any] = json.loads(stdout)
    except ValueError:
        summary = {}
    if returncode != 0 or summary.get("ok") is not True:
        pytest.fail(
            f"iceberg-js round trip failed (exit {returncode}):\n"
            f"stdout: {stdout.decode(errors='replace')}\nstderr: {stderr.decode(errors='replace')}"
        )
    return summary


def _run(
    node: str, base_url: str, auth: str, secret: str, warehouse: str | None
) -> tuple[str, dict[str, Any]]:
    """Runs the round trip synchronously (the live gateway has its own thread and loop)."""
    namespace = f"js_{secrets.token_hex(4)}"
    completed = subprocess.run(
        _command(node, base_url, auth, namespace, warehouse, trace=False),
        env=_environment(secret), capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    return namespace, _summary(completed.returncode, completed.stdout, completed.stderr)


def _assert_round_trip(namespace: str, summary: dict[str, Any]) -> None:
    assert summary["namespace"] == namespace
    assert summary["tables"] == [f"{namespace}.events"]
    assert summary["columns"] == COLUMNS
    assert summary["formatVersion"] == 2
    uuid.UUID(summary["tableUuid"])


def _token(gateway: LiveGateway, user_id: str, key: str) -> str:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": user_id, "client_secret": key}
    ).encode()
    url = f"{gateway.url}/v1/default/v1/oauth/tokens"
    with urllib.request.urlopen(url, data=form, timeout=30) as response:
        body = json.loads(response.read())
    assert body["token_type"].lower() == "bearer"
    token: str = body["access_token"]
    return token


WAREHOUSES = pytest.mark.parametrize(
    "warehouse", ["warehouse", None], ids=["with-warehouse", "without-warehouse"]
)


@WAREHOUSES
def test_bearer_api_key_lists_creates_loads_and_drops(
    live_gateway: LiveGateway, node: str, warehouse: str | None
) -> None:
    key = live_gateway.user("js-bearer").api_key.plaintext()
    base_url = f"{live_gateway.url}/v1/default"
    _assert_round_trip(*_run(node, base_url, "bearer", key, warehouse))


@WAREHOUSES
def test_bearer_token_from_the_gateway_token_endpoint_lists_creates_loads_and_drops(
    live_gateway: LiveGateway, node: str, warehouse: str | None
) -> None:
    created = live_gateway.user("js-token")
    token = _token(live_gateway, created.user.id, created.api_key.plaintext())
    base_url = f"{live_gateway.url}/v1/default"
    _assert_round_trip(*_run(node, base_url, "bearer", token, warehouse))


@WAREHOUSES
def test_x_api_key_header_lists_creates_loads_and_drops(
    live_gateway: LiveGateway, node: str, warehouse: str | None
) -> None:
    key = live_gateway.user("js-header").api_key.plaintext()
    base_url = f"{live_gateway.url}/v1/default"
    _assert_round_trip(*_run(node, base_url, "header", key, warehouse))


def test_wrong_key_surfaces_as_iceberg_401_although_iceberg_js_swallows_the_config_error(
    live_gateway: LiveGateway, node: str
) -> None:
    # iceberg-js ignores a failed /v1/config (it falls back to the warehouse as prefix), so
    # the first call the user sees fail is listNamespaces: it must be a parseable 401.
    created = live_gateway.user("js-wrong")
    wrong = created.api_key.plaintext()[:-4] + "AAAA"
    base_url = f"{live_gateway.url}/v1/default"
    completed = subprocess.run(
        _command(node, base_url, "bearer", "js_never", "warehouse", trace=False),
        env=_environment(wrong), capture_output=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert completed.returncode == 1, completed.stderr
    summary = json.loads(completed.stdout)
    assert summary["step"] == "listNamespaces"
    assert summary["error"]["status"] == 401
    assert summary["error"]["type"] == "NotAuthorizedException"
    assert summary["error"]["code"] == 401


# --- What reaches the upstream: the gateway in front of a small recording catalog ----------

UPSTREAM_TOKEN = "upstream-static-token"
UPSTREAM_PREFIX = "pfx"  # not the warehouse name: proves iceberg-js uses overrides.prefix
_CATALOG_PATH = re.compile(
    r"/v1/(?:pfx/)?namespaces(?:/(?P<ns>[^/]+)(?:/tables(?:/(?P<table>[^/]+))?)?)?"
)
_UUID7 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class FakeCatalog:
    """Just enough of an Iceberg REST catalog, with state, for the iceberg-js round trip."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[str, dict[str, Any]]] = {}

    async def __call__(self, request: web.Request, recorded: Recorded) -> web.StreamResponse:
        path, _, _ = recorded.raw_path.partition("?")
        if path == "/v1/config":
            return web.json_response({"defaults": {}, "overrides": {"prefix": UPSTREAM_PREFIX}})
        match = _CATALOG_PATH.fullmatch(path)
        if match is None:
            return _error(404, "NoSuchRouteException")
        ns, table, method = match["ns"], match["table"], recorded.method
        if ns is None:  # .../namespaces
            if method == "GET":
                return web.json_response({"namespaces": [[n] for n in self.tables]})
            body = json.loads(recorded.body)
            self.tables[body["namespace"][0]] = {}
            return web.json_response(body)
        if ns not in self.tables:
            return _error(404, "NoSuchNamespaceException")
        tables = self.tables[ns]
        if table is None and not path.endswith("/tables"):  # .../namespaces/{ns}
            if method == "DELETE":
                del self.tables[ns]
                return web.Response(status=204)
            return web.json_response({"namespace": [ns], "properties": {}})
        if table is not None:  # .../tables/{table}
            if table not in tables:
                return _error(404, "NoSuchTableException")
            if method == "DELETE":
                del tables[table]
                return web.Response(status=204)
            return web.json_response(tables[table])
        if method == "GET":
            return web.json_response(
                {"identifiers": [{"namespace": [ns], "name": t} for t in tables]}
            )
        body = json.loads(recorded.body)
        tables[body["name"]] = {
            "metadata-location": f"s3://warehouse/{ns}/{body['name']}/metadata/0.json",
            "metadata": {
                "format-version": 2, "table-uuid": str(uuid.uuid4()),
                "location": f"s3://warehouse/{ns}/{body['name']}", "current-schema-id": 0,
                "schemas": [body["schema"]], "properties": body.get("properties", {}),
            },
            # The gateway strips upstream-minted tokens from table config.
            "config": {"token": "upstream-minted", "s3.region": "us-east-1"},
        }  # fmt: skip
        return web.json_response(tables[body["name"]])


def _error(status: int, kind: str) -> web.Response:
    return web.json_response(
        {"error": {"message": kind, "type": kind, "code": status}}, status=status
    )


async def _run_async(
    node: str, base_url: str, auth: str, secret: str, warehouse: str | None
) -> tuple[str, dict[str, Any]]:
    """The round trip as a subprocess awaited in the test's loop, where the gateway runs."""
    namespace = f"js_{secrets.token_hex(4)}"
    process = await asyncio.create_subprocess_exec(
        *_command(node, base_url, auth, namespace, warehouse, trace=True),
        env=_environment(secret), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.communicate()
        raise
    return namespace, _summary(process.returncode, stdout, stderr)


@pytest.mark.parametrize("warehouse", ["warehouse", None], ids=["with-warehouse", "no-warehouse"])
@pytest.mark.parametrize("auth", ["bearer", "header"])
async def test_idempotency_keys_reach_the_upstream_intact_and_credentials_do_not(
    make_gateway: MakeGateway, node: str, auth: str, warehouse: str | None
) -> None:
    upstream = RecordingUpstream(responder=FakeCatalog())
    gateway = await make_gateway(
        upstream=upstream,
        catalogs={"default": CatalogSettings(
            warehouse="warehouse", prefix=UPSTREAM_PREFIX,
            upstream_auth=UpstreamAuthSettings(type="bearer", token=UPSTREAM_TOKEN),
        )},
    )  # fmt: skip
    key = (await gateway.user("js")).api_key.plaintext()
    base_url = str(gateway.client.make_url("/v1/default"))

    namespace, summary = await _run_async(node, base_url, auth, key, warehouse)

    _assert_round_trip(namespace, summary)
    sent: list[dict[str, Any]] = summary["requests"]
    received = upstream.catalog_requests()
    # One upstream request per client request, in order, at the same path minus the mount;
    # without a warehouse iceberg-js sends no prefix and the gateway puts the catalog's in.
    mount = urllib.parse.urlsplit(base_url).path
    assert [(r.method, r.raw_path) for r in received] == [
        (
            s["method"],
            _path_and_query(s["url"])
            .removeprefix(mount)
            .replace("/v1/namespaces", f"/v1/{UPSTREAM_PREFIX}/namespaces"),
        )
        for s in sent
    ]
    mutations = [(s, r) for s, r in zip(sent, received, strict=True) if s["method"] in MUTATIONS]
    # createNamespace, createTable, dropTable, dropNamespace
    assert len(mutations) == 4
    keys = [s["headers"]["Idempotency-Key"] for s, _ in mutations]
    assert all(_UUID7.fullmatch(k) for k in keys), keys
    assert len(set(keys)) == len(keys)
    for client_side, upstream_side in mutations:
        assert upstream_side.headers.getall("Idempotency-Key") == [
            client_side["headers"]["Idempotency-Key"]
        ]
    for recorded in received:
        assert "X-API-Key" not in recorded.headers
        assert recorded.headers.getall("Authorization") == [f"Bearer {UPSTREAM_TOKEN}"]
        assert key not in str(recorded.headers)


async def test_iceberg_js_call_sequence_with_a_warehouse_uses_the_config_prefix(
    make_gateway: MakeGateway, node: str
) -> None:
    upstream = RecordingUpstream(responder=FakeCatalog())
    gateway = await make_gateway(upstream=upstream)
    key = (await gateway.user("js")).api_key.plaintext()
    base_url = str(gateway.client.make_url("/v1/default"))

    ns, summary = await _run_async(node, base_url, "bearer", key, "warehouse")

    _assert_round_trip(ns, summary)
    p = f"/v1/{UPSTREAM_PREFIX}/namespaces"
    assert [(r.method, r.raw_path) for r in upstream.catalog_requests()] == [
        ("GET", "/v1/config?warehouse=warehouse"),  # once, then overrides.prefix everywhere
        ("GET", p),  # listNamespaces
        ("POST", p),  # createNamespace
        ("POST", f"{p}/{ns}/tables"),  # createTable
        ("GET", f"{p}/{ns}/tables/events"),  # loadTable
        ("GET", f"{p}/{ns}/tables"),  # listTables
        ("GET", p),  # listNamespaces
        ("DELETE", f"{p}/{ns}/tables/events?purgeRequested=false"),  # dropTable
        ("HEAD", f"{p}/{ns}/tables/events"),  # tableExists
        ("DELETE", f"{p}/{ns}"),  # dropNamespace
        ("GET", p),  # listNamespaces
    ]
    # What node's fetch adds on its own, as the upstream sees it (for the README).
    first = upstream.catalog_requests()[1].headers
    assert first["User-Agent"] == "node"
    assert first["Sec-Fetch-Mode"] == "cors"


def _path_and_query(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")
