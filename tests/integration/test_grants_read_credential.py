"""A catalog's read-only upstream credential (``upstream_auth_read``), against a real SeaweedFS
that has a read-only identity next to its admin, with real PyIceberg 0.12.

For a TenantUser confined by grants (here: ``default_access="read"``, no grants), a request
that only reads goes upstream with the reader identity; everything else (a TenantAdmin's
requests, say) with the admin one. One gateway serves the module with two catalogs in front
of the same SeaweedFS, both ``default_access="read"``: "default" holds the reader's real
credential, "wrong_read" the reader with a wrong secret, so a request that fails there and
works in "default" went upstream with the read credential. A TenantAdmin builds the module's
one namespace and table (with rows) first.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import ForbiddenError, ServerError

from gateway.identity.models import Role
from gateway.identity.service_users import CreatedKey
from gateway.state import GRANTS

from ..live import WAREHOUSE, LiveGateway, SeaweedUpstream
from ..roundtrip import SCHEMA

pytestmark = pytest.mark.seaweedfs

ROWS = pa.Table.from_pylist([{"id": 1, "name": "a"}, {"id": 2, "name": "ü"}], schema=SCHEMA)
MORE = pa.Table.from_pylist([{"id": 3, "name": "c"}], schema=SCHEMA)
# How PyIceberg words a 403 answered by the gateway: the Iceberg error's type, then message.
REFUSED = "^ForbiddenException: Forbidden"
# urllib honours http_proxy from the environment; loopback calls must never go through one.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def reading_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedUpstream]:
    """This module's own SeaweedFS: the session's has no reader identity."""
    with SeaweedUpstream.start(tmp_path_factory.mktemp("seaweedfs-reader"), reader=True) as up:
        yield up


@pytest.fixture(scope="module")
def gateway(
    reading_seaweed: SeaweedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    catalogs = {
        "default": reading_seaweed.catalog(
            default_access="read", upstream_auth_read=reading_seaweed.reader_auth()
        ),
        "wrong_read": reading_seaweed.catalog(
            default_access="read", upstream_auth_read=reading_seaweed.reader_auth("not-the-secret")
        ),
    }
    with LiveGateway.start(tmp_path_factory.mktemp("read-credential-gw"), catalogs=catalogs) as gw:
        yield gw


@pytest.fixture(scope="module")
def tenant_admin(gateway: LiveGateway) -> CreatedKey:
    return gateway.user("reads-admin", role=Role.TENANT_ADMIN)


@pytest.fixture(scope="module")
def read_only(gateway: LiveGateway) -> CreatedKey:
    """A TenantUser with no grant: it may read everything (default_access), write nothing."""
    return gateway.user("reads-only")


@pytest.fixture(scope="module")
def admin(
    gateway: LiveGateway, reading_seaweed: SeaweedUpstream, tenant_admin: CreatedKey
) -> Catalog:
    return load_catalog("admin", **gateway.pyiceberg_properties(tenant_admin, reading_seaweed))


@pytest.fixture(scope="module")
def table(admin: Catalog) -> str:
    """The module's one table, holding ROWS, made by the TenantAdmin (so with the admin
    credential upstream: the reader identity may create nothing)."""
    namespace = f"reads_{secrets.token_hex(4)}"
    admin.create_namespace(namespace)
    admin.create_table(f"{namespace}.events", schema=SCHEMA).append(ROWS)
    return f"{namespace}.events"


def reader_catalog(
    gateway: LiveGateway,
    reading_seaweed: SeaweedUpstream,
    created: CreatedKey,
    *,
    s3_as_reader: bool,
) -> Catalog:
    """The read-only TenantUser's PyIceberg catalog; its table data goes to S3 with the reader
    identity's keys (read only) or, to get as far as a commit, with the admin's."""
    properties = gateway.pyiceberg_properties(created, None)
    return load_catalog(
        "reader", **properties, **reading_seaweed.s3_properties(as_reader=s3_as_reader)
    )


def rows(catalog: Catalog, table: str) -> list[dict[str, Any]]:
    scanned: list[dict[str, Any]] = catalog.load_table(table).scan().to_arrow().to_pylist()
    return sorted(scanned, key=lambda row: row["id"])


def http(
    url: str, *, headers: dict[str, str], data: bytes | None = None
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def grant_write(gateway: LiveGateway, created: CreatedKey, catalog: str, table: str) -> None:
    access = gateway.app[GRANTS]
    resource = tuple(table.split("."))
    gateway.call(
        access.grant(created.user, catalog=catalog, resource=resource, action="write", actor="test")
    )


def rest(gateway: LiveGateway, catalog: str, path: str, created: CreatedKey) -> tuple[int, Any]:
    """A GET of ``path`` (after the warehouse prefix) in ``catalog``, with ``created``'s key."""
    url = f"{gateway.url}/v1/{catalog}/v1/{WAREHOUSE}/{path}"
    return http(url, headers={"X-API-Key": created.api_key.plaintext()})


def test_read_only_user_lists_and_scans_through_the_reader_identity(
    gateway: LiveGateway, reading_seaweed: SeaweedUpstream, read_only: CreatedKey, table: str
) -> None:
    # Its table data comes from S3 with the reader identity's keys too: nothing here can write.
    catalog = reader_catalog(gateway, reading_seaweed, read_only, s3_as_reader=True)
    namespace, _ = table.split(".")
    assert (namespace,) in catalog.list_namespaces()
    assert catalog.list_tables(namespace) == [(namespace, "events")]
    assert rows(catalog, table) == ROWS.to_pylist()


def test_wrong_read_credential_fails_the_read_only_user_with_502_but_not_the_tenant_admin(
    gateway: LiveGateway,
    reading_seaweed: SeaweedUpstream,
    read_only: CreatedKey,
    tenant_admin: CreatedKey,
    table: str,
) -> None:
    """In "wrong_read" the reader's secret is wrong: SeaweedFS's token endpoint refuses it
    (401 invalid_client), so every request of the read-only user, /v1/config included (it
    only reads), fails with the gateway's 502; the TenantAdmin's go with the admin credential.
    """
    failed = {"error": {"message": "The gateway could not authenticate to the catalog",
                        "type": "BadGatewayException", "code": 502}}  # fmt: skip
    assert rest(gateway, "wrong_read", "namespaces", read_only) == (502, failed)
    with pytest.raises(ServerError, match="^BadGatewayException: The gateway could not authent"):
        load_catalog(
            "reader", **gateway.pyiceberg_properties(read_only, reading_seaweed, "wrong_read")
        )

    admin = load_catalog(
        "admin", **gateway.pyiceberg_properties(tenant_admin, reading_seaweed, "wrong_read")
    )
    namespace, _ = table.split(".")
    assert (namespace,) in admin.list_namespaces()
    assert admin.list_tables(namespace) == [(namespace, "events")]


def test_write_grant_sends_the_users_requests_on_that_table_with_the_main_credential(
    gateway: LiveGateway, table: str
) -> None:
    """Only a request the caller may merely read goes with the read credential: a TenantUser
    with write on the table loads it (with the admin credential) even in "wrong_read", while
    its namespace list, which it may only read, still fails there."""
    writer = gateway.user("reads-writer")
    grant_write(gateway, writer, "wrong_read", table)
    namespace, name = table.split(".")
    status, loaded = rest(gateway, "wrong_read", f"namespaces/{namespace}/tables/{name}", writer)
    assert status == 200, loaded
    assert loaded["metadata"]["current-snapshot-id"] is not None
    assert rest(gateway, "wrong_read", "namespaces", writer)[0] == 502


def test_read_only_users_commit_is_refused_by_the_gateway_with_forbidden_error(
    gateway: LiveGateway,
    reading_seaweed: SeaweedUpstream,
    read_only: CreatedKey,
    admin: Catalog,
    table: str,
) -> None:
    # With the admin's S3 keys, the data files are written and the append gets as far as its
    # commit, which the gateway refuses (it needs write) without asking the upstream.
    catalog = reader_catalog(gateway, reading_seaweed, read_only, s3_as_reader=False)
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.load_table(table).append(MORE)
    assert rows(admin, table) == ROWS.to_pylist()


def test_reader_identity_is_refused_writes_by_seaweedfs_itself(
    gateway: LiveGateway,
    reading_seaweed: SeaweedUpstream,
    read_only: CreatedKey,
    admin: Catalog,
    table: str,
) -> None:
    """What the read credential buys: the upstream refuses writes too, should the gateway's
    own check ever let one through."""
    # Its S3 keys may not write table data: the append fails writing its first data file.
    catalog = reader_catalog(gateway, reading_seaweed, read_only, s3_as_reader=True)
    with pytest.raises(OSError, match="ACCESS_DENIED"):
        catalog.load_table(table).append(MORE)
    # Its catalog token, straight at SeaweedFS: it may list, and may not create.
    url = f"{reading_seaweed.server.iceberg_url}/v1/{WAREHOUSE}/namespaces"
    headers = {"Authorization": f"Bearer {reading_seaweed.reader_token()}"}
    status, listed = http(url, headers=headers)
    assert status == 200, listed
    assert [table.split(".")[0]] in listed["namespaces"]
    new = json.dumps({"namespace": [f"new_{secrets.token_hex(4)}"]}).encode()
    created = http(url, headers={**headers, "Content-Type": "application/json"}, data=new)
    assert created == (
        403,
        {"error": {"message": "not authorized to create namespace in this bucket",
                   "type": "ForbiddenException", "code": 403}},
    )  # fmt: skip
    assert rows(admin, table) == ROWS.to_pylist()
