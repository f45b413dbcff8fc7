"""Least privilege (issue 12) through the gateway, with real PyIceberg 0.12 and DuckDB 1.4.4
in front of a real SeaweedFS.

One gateway serves the module, its default catalog with ``default_access="none"``: a
TenantUser service user may do only what its grants (its own and its roles') allow. The
catalog is a SeaweedFS of this module's own that VENDS storage credentials (the session's
does not), so the tests can see which callers get them: a caller with ``write`` on a table
gets table-scoped S3 credentials in loadTable answers, a reader gets none (the catalog has no
``upstream_auth_read``, so the gateway strips them and does not forward
``X-Iceberg-Access-Delegation``). Readers bring their own storage access: SeaweedFS's keys in
their S3 settings, as in the other client tests.

Every test builds its own namespaces (``sales_<hex>``, ``staging_<hex>``, ``secret_<hex>``)
as a TenantAdmin, who has full access, and its own service users, so tests do not see each
other's grants or data.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import ForbiddenError

from gateway.demo.seaweedfs import SeaweedFS, free_ports
from gateway.identity.grants import AccessRole, Grant
from gateway.identity.models import Role, ServiceUser
from gateway.identity.service_users import CreatedKey
from gateway.state import GRANTS

from ..live import WAREHOUSE, LiveGateway, SeaweedUpstream
from ..roundtrip import SCHEMA
from .test_duckdb_through_gateway import Call, connect_offline, http_log, options

pytestmark = pytest.mark.seaweedfs

ROWS = pa.Table.from_pylist([{"id": 1, "name": "a"}, {"id": 2, "name": "ü"}], schema=SCHEMA)
MORE = pa.Table.from_pylist([{"id": 3, "name": "c"}], schema=SCHEMA)
DELEGATION = {"X-Iceberg-Access-Delegation": "vended-credentials"}
# What a vended S3 credential is made of (keys of a loadTable answer's config).
CREDENTIAL_KEYS = {"s3.access-key-id", "s3.secret-access-key", "s3.session-token"}
# How PyIceberg words a 403 answered by the gateway: the Iceberg error's type, then message.
REFUSED = "^ForbiddenException: Forbidden"


@dataclass(frozen=True)
class Estate:
    """One test's namespaces, made by the admin, each table holding ROWS."""

    sales: str  # tables orders and customers
    staging: str  # tables orders and other
    secret: str  # table x

    def rows(self, catalog: Catalog, table: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = catalog.load_table(table).scan().to_arrow().to_pylist()
        return sorted(rows, key=lambda row: row["id"])


@pytest.fixture(scope="module")
def vending_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedUpstream]:
    access_key = "PGLGRANT" + secrets.token_hex(4).upper()
    secret_key = secrets.token_urlsafe(24)
    server = SeaweedFS(
        tmp_path_factory.mktemp("seaweedfs-vending"), ports=free_ports(),
        access_key=access_key, secret_key=secret_key, table_bucket=WAREHOUSE,
        vend_credentials=True,
    )  # fmt: skip
    with server:
        yield SeaweedUpstream(server, access_key, secret_key)


@pytest.fixture(scope="module")
def gateway(
    vending_seaweed: SeaweedUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    with LiveGateway.start(
        tmp_path_factory.mktemp("grants-gw"), vending_seaweed, default_access="none"
    ) as live:
        yield live


@pytest.fixture(scope="module")
def admin(gateway: LiveGateway, vending_seaweed: SeaweedUpstream) -> Catalog:
    created = gateway.user("grants-admin", role=Role.TENANT_ADMIN)
    return load_catalog("admin", **gateway.pyiceberg_properties(created, vending_seaweed))


@pytest.fixture
def estate(admin: Catalog) -> Estate:
    tag = secrets.token_hex(4)
    made = Estate(sales=f"sales_{tag}", staging=f"staging_{tag}", secret=f"secret_{tag}")
    layout = {made.sales: ("orders", "customers"), made.staging: ("orders", "other"),
              made.secret: ("x",)}  # fmt: skip
    for namespace, tables in layout.items():
        admin.create_namespace(namespace)
        for table in tables:
            admin.create_table(f"{namespace}.{table}", schema=SCHEMA).append(ROWS)
    return made


def grant(
    gateway: LiveGateway, subject: ServiceUser | AccessRole, resource: tuple[str, ...], action: str
) -> Grant:
    access = gateway.app[GRANTS]
    return gateway.call(
        access.grant(subject, catalog="default", resource=resource, action=action, actor="test")
    )


def pipeline_user(gateway: LiveGateway, estate: Estate) -> CreatedKey:
    """A TenantUser with read on the sales namespace and write on the staging orders table."""
    created = gateway.user("pipeline")
    grant(gateway, created.user, (estate.sales,), "read")
    grant(gateway, created.user, (estate.staging, "orders"), "write")
    return created


def pyiceberg(gateway: LiveGateway, created: CreatedKey, seaweed: SeaweedUpstream) -> Catalog:
    return load_catalog("pipeline", **gateway.pyiceberg_properties(created, seaweed))


# -- PyIceberg ------------------------------------------------------------------------------


def test_pipeline_lists_only_the_namespaces_and_tables_its_grants_reach(
    gateway: LiveGateway, vending_seaweed: SeaweedUpstream, estate: Estate, admin: Catalog
) -> None:
    catalog = pyiceberg(gateway, pipeline_user(gateway, estate), vending_seaweed)
    # The admin sees everything (other tests' namespaces too); the pipeline exactly the
    # namespace it may read and the one holding the table it may write.
    assert {(estate.sales,), (estate.staging,), (estate.secret,)} <= set(admin.list_namespaces())
    assert set(catalog.list_namespaces()) == {(estate.sales,), (estate.staging,)}
    assert set(catalog.list_tables(estate.sales)) == {
        (estate.sales, "orders"),
        (estate.sales, "customers"),
    }
    # staging.other exists, but no grant reaches it: filtered out of the answer.
    assert catalog.list_tables(estate.staging) == [(estate.staging, "orders")]
    with pytest.raises(ForbiddenError):
        catalog.list_tables(estate.secret)


def test_pipeline_scans_sales_and_appends_to_staging_orders(
    gateway: LiveGateway, vending_seaweed: SeaweedUpstream, estate: Estate, admin: Catalog
) -> None:
    catalog = pyiceberg(gateway, pipeline_user(gateway, estate), vending_seaweed)
    assert estate.rows(catalog, f"{estate.sales}.orders") == ROWS.to_pylist()  # load, scan

    catalog.load_table(f"{estate.staging}.orders").append(MORE)  # the commit is accepted
    expected = sorted([*ROWS.to_pylist(), *MORE.to_pylist()], key=lambda row: row["id"])
    assert estate.rows(admin, f"{estate.staging}.orders") == expected
    assert estate.rows(catalog, f"{estate.staging}.orders") == expected


def test_pipeline_is_refused_writes_creates_drops_and_other_namespaces_with_forbidden_error(
    gateway: LiveGateway, vending_seaweed: SeaweedUpstream, estate: Estate, admin: Catalog
) -> None:
    catalog = pyiceberg(gateway, pipeline_user(gateway, estate), vending_seaweed)
    orders = f"{estate.sales}.orders"
    table = catalog.load_table(orders)  # read is granted
    with pytest.raises(ForbiddenError, match=REFUSED):
        table.append(MORE)  # the data files are written; the commit is refused
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.create_table(f"{estate.sales}.new", schema=SCHEMA)
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.drop_table(orders)
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.load_table(f"{estate.secret}.x")
    # A table that does not exist is refused the same way: the refusal says nothing of what
    # exists, since the upstream is never asked.
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.load_table(f"{estate.secret}.missing")
    with pytest.raises(ForbiddenError, match=REFUSED):
        catalog.create_namespace(f"new_{secrets.token_hex(4)}")

    # Nothing of it reached the catalog.
    assert estate.rows(admin, orders) == ROWS.to_pylist()
    assert set(admin.list_tables(estate.sales)) == {
        (estate.sales, "orders"),
        (estate.sales, "customers"),
    }


def test_refusal_message_names_the_missing_action_not_the_catalog(
    gateway: LiveGateway, vending_seaweed: SeaweedUpstream, estate: Estate
) -> None:
    """The pipeline can use the catalog (it just listed and read it), so a refusal saying it
    "may not use this catalog" is wrong; a clear one says which action no grant allows (that
    reveals nothing about what exists)."""
    catalog = pyiceberg(gateway, pipeline_user(gateway, estate), vending_seaweed)
    table = catalog.load_table(f"{estate.sales}.orders")
    attempts = {
        "write": lambda: table.append(MORE),
        "create": lambda: catalog.create_table(f"{estate.sales}.new", schema=SCHEMA),
        "drop": lambda: catalog.drop_table(f"{estate.sales}.orders"),
        "read": lambda: catalog.load_table(f"{estate.secret}.x"),
    }
    messages: dict[str, str] = {}
    for action, attempt in attempts.items():
        with pytest.raises(ForbiddenError) as refused:
            attempt()
        messages[action] = str(refused.value)
    for action, message in messages.items():
        assert "may not use this catalog" not in message, messages
        assert re.search(rf"\b{action}\b", message), messages


# -- grant changes --------------------------------------------------------------------------


def test_grant_and_revoke_take_effect_on_the_next_request(
    gateway: LiveGateway, vending_seaweed: SeaweedUpstream, estate: Estate
) -> None:
    created = gateway.user("revoked")
    # With no grant at all it could not even load the catalog's config: it starts with one.
    grant(gateway, created.user, (estate.staging,), "read")
    catalog = pyiceberg(gateway, created, vending_seaweed)  # one token for the whole test
    orders = f"{estate.sales}.orders"
    with pytest.raises(ForbiddenError):
        catalog.load_table(orders)
    given = grant(gateway, created.user, (estate.sales,), "read")
    assert estate.rows(catalog, orders) == ROWS.to_pylist()
    assert set(catalog.list_namespaces()) == {(estate.sales,), (estate.staging,)}
    gateway.call(gateway.app[GRANTS].revoke(given.id, actor="test"))
    with pytest.raises(ForbiddenError):
        catalog.load_table(orders)
    assert catalog.list_namespaces() == [(estate.staging,)]


# -- vended storage credentials -------------------------------------------------------------


def get_json(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def test_load_table_vends_storage_credentials_to_a_writer_and_none_to_a_reader(
    gateway: LiveGateway, estate: Estate
) -> None:
    reader = gateway.user("reader")
    grant(gateway, reader.user, (estate.sales,), "read")
    writer = gateway.user("writer")
    grant(gateway, writer.user, (estate.sales, "orders"), "write")
    url = f"{gateway.url}/v1/default/v1/{WAREHOUSE}/namespaces/{estate.sales}/tables/orders"

    def load(created: CreatedKey) -> dict[str, Any]:
        status, body = get_json(url, {"X-API-Key": created.api_key.plaintext(), **DELEGATION})
        assert status == 200, body
        return body

    written, read = load(writer), load(reader)
    # The writer gets what SeaweedFS vends: table-scoped credentials, in config and in
    # storage-credentials alike.
    assert CREDENTIAL_KEYS <= set(written["config"])
    assert [c["prefix"] for c in written["storage-credentials"]] == [
        f"s3://{WAREHOUSE}/{estate.sales}/orders"
    ]
    assert CREDENTIAL_KEYS <= set(written["storage-credentials"][0]["config"])
    # The reader gets the same table, with no credential of any kind.
    assert read["metadata-location"] == written["metadata-location"]
    assert read["metadata"] == written["metadata"]
    assert not {key for key in read.get("config", {}) if re.search("key|secret|token", key)}
    assert not read.get("storage-credentials")


# -- DuckDB ---------------------------------------------------------------------------------


@pytest.fixture
def duck(vending_seaweed: SeaweedUpstream) -> Iterator[duckdb.DuckDBPyConnection]:
    """An offline connection logging its HTTP calls, with SeaweedFS's S3 keys for table data
    (a reader gets no vended ones)."""
    con = connect_offline()
    con.execute("CALL enable_logging('HTTP')")
    host_port = vending_seaweed.server.s3_endpoint.removeprefix("http://")
    s3 = options(
        KEY_ID=vending_seaweed.access_key, SECRET=vending_seaweed.secret_key, ENDPOINT=host_port
    )
    con.execute(
        f"CREATE SECRET s3data (TYPE s3, {s3}, REGION 'us-east-1', URL_STYLE 'path', USE_SSL false)"
    )
    yield con
    con.close()


def attach(
    con: duckdb.DuckDBPyConnection, gateway: LiveGateway, created: CreatedKey, extra: str = ""
) -> None:
    endpoint = f"{gateway.url}/v1/default"
    token = created.api_key.plaintext()
    con.execute(
        f"ATTACH 'warehouse' AS cat (TYPE iceberg, {options(ENDPOINT=endpoint, TOKEN=token)}"
        f"{extra})"
    )


def sales_reader(gateway: LiveGateway, estate: Estate) -> CreatedKey:
    """A TenantUser holding read on the sales namespace through a role."""
    created = gateway.user("duck-reader")
    access = gateway.app[GRANTS]
    role = gateway.call(
        access.create_role(name=f"sales-readers-{secrets.token_hex(3)}", tenant="default",
                           actor="test")
    )  # fmt: skip
    grant(gateway, role, (estate.sales,), "read")
    assert gateway.call(access.assign(role, created.user, actor="test"))
    return created


def test_duckdb_reader_reads_and_lists_what_it_may_and_its_insert_is_refused_with_403(
    gateway: LiveGateway, estate: Estate, admin: Catalog, duck: duckdb.DuckDBPyConnection
) -> None:
    # ACCESS_DELEGATION_MODE 'none': DuckDB then reads with its own S3 secret. With the
    # default mode it cannot read at all (see the next test).
    attach(duck, gateway, sales_reader(gateway, estate), ", ACCESS_DELEGATION_MODE 'none'")
    orders = f"cat.{estate.sales}.orders"
    assert duck.sql(f"SELECT id, name FROM {orders} ORDER BY id").fetchall() == [
        (1, "a"),
        (2, "ü"),
    ]
    tables = duck.sql("SELECT database, schema, name FROM (SHOW ALL TABLES)").fetchall()
    assert {(s, n) for d, s, n in tables if d == "cat"} == {
        (estate.sales, "orders"),
        (estate.sales, "customers"),
    }
    schemas = duck.sql("SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'cat'")
    assert {name for (name,) in schemas.fetchall()} == {estate.sales}
    # DuckDB reports a namespace the gateway refuses (403) as missing.
    with pytest.raises(duckdb.CatalogException, match="Table with name x does not exist"):
        duck.sql(f"SELECT * FROM cat.{estate.secret}.x")

    with pytest.raises(duckdb.TransactionException) as refused:
        duck.execute(f"INSERT INTO {orders} VALUES (3, 'c')")
    message = str(refused.value)
    assert "Failed to commit Iceberg transaction" in message
    assert "returned a non-200 status code (Forbidden_403)" in message
    assert '"type": "ForbiddenException", "code": 403' in message
    commit: list[Call] = [c for c in http_log(duck) if c.url.endswith("/transactions/commit")]
    assert [(c.method, c.status) for c in commit] == [("POST", "Forbidden_403")]
    assert estate.rows(admin, f"{estate.sales}.orders") == ROWS.to_pylist()


def test_duckdb_read_only_attach_with_default_settings_reads_a_granted_table(
    gateway: LiveGateway, estate: Estate, duck: duckdb.DuckDBPyConnection
) -> None:
    """DuckDB asks for vended credentials by default (X-Iceberg-Access-Delegation). For a
    reader the gateway drops that header, and the catalog then answers loadTable with a
    storage config holding an endpoint and a region but no keys (SeaweedFS sends that config
    only without the header); DuckDB, having asked for vended credentials, makes its S3
    secret for the table from it, unsigned, in place of its own secret: S3 refuses every read.
    A read grant must let the reader read."""
    attach(duck, gateway, sales_reader(gateway, estate), ", READ_ONLY")
    rows = duck.sql(f"SELECT id, name FROM cat.{estate.sales}.orders ORDER BY id").fetchall()
    assert rows == [(1, "a"), (2, "ü")]
