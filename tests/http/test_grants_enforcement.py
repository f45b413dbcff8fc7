"""Least privilege through the real app (issue 12): a catalog's ``default_access`` and the
grants of TenantUser service users decide every catalog request before it is forwarded; list
answers show only what the caller may see; a caller that may not write a table gets no
storage credentials for it (or goes upstream with the catalog's read-only credential)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.identity.grants import AccessRole, Grant
from gateway.identity.models import Role, ServiceUser
from gateway.identity.service_users import CreatedKey
from gateway.settings import CatalogSettings, UpstreamAuthSettings
from gateway.state import GRANTS

from ..conftest import Gateway, MakeGateway
from ..helpers import bearer, key_header
from ..rawhttp import RawReply, exchange
from .forwarding_support import (
    API,
    SNAPSHOT_ID,
    Reply,
    answer_json,
    assert_iceberg_error,
    call,
    load_table_result,
)

Json = dict[str, Any]
Resource = tuple[str, ...]
ORDERS: Resource = ("sales", "orders")
STAGING_ORDERS: Resource = ("staging", "orders")
DELEGATION = "X-Iceberg-Access-Delegation"


# -- helpers -------------------------------------------------------------------------------------


async def confined(
    make_gateway: MakeGateway, access: str = "none", **catalog: Any
) -> tuple[Gateway, CreatedKey]:
    """A gateway whose default catalog has ``default_access`` ``access``, and a TenantUser."""
    gateway = await make_gateway(
        catalogs={"default": CatalogSettings(default_access=access, **catalog)}
    )
    return gateway, await gateway.user("etl")


async def give(
    gateway: Gateway,
    subject: CreatedKey | AccessRole,
    resource: Resource,
    action: str,
    catalog: str = "default",
) -> Grant:
    holder: ServiceUser | AccessRole = subject.user if isinstance(subject, CreatedKey) else subject
    return await gateway.app[GRANTS].grant(
        holder, catalog=catalog, resource=resource, action=action, actor="test"
    )


async def send(
    gateway: Gateway,
    who: CreatedKey | dict[str, str],
    method: str,
    path: str,
    doc: Any = None,
    *,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``method`` on ``API + path`` as ``who`` (a service user's key, or ready headers)."""
    auth = key_header(who) if isinstance(who, CreatedKey) else who
    data = json.dumps(doc).encode() if doc is not None else None
    return await call(gateway, method, f"{API}{path}", headers={**auth, **(headers or {})},
                      data=data)  # fmt: skip


def forwarded(gateway: Gateway) -> int:
    return len(gateway.upstream.catalog_requests())


def assert_forbidden(reply: Reply, gateway: Gateway, *, forwarded_before: int = 0) -> None:
    """403 ForbiddenException, and the upstream was not asked."""
    assert reply.status == 403, reply.body
    if reply.body:  # a HEAD answer has none
        assert_iceberg_error(reply, 403)
        assert reply.json()["error"]["type"] == "ForbiddenException"
        # It names the missing action, never the client's names.
        message = reply.json()["error"]["message"]
        assert "sales" not in message and "orders" not in message
    assert forwarded(gateway) == forwarded_before


def ident(*levels: str) -> Json:
    *namespace, name = levels
    return {"namespace": namespace, "name": name}


def commit(*tables: Resource) -> Json:
    return {
        "table-changes": [
            {"identifier": ident(*table), "requirements": [],
             "updates": [{"action": "set-properties", "updates": {"owner": "etl"}}]}
            for table in tables
        ]
    }  # fmt: skip


SCHEMA = {"type": "struct", "fields": []}
UPDATE = {"requirements": [], "updates": [{"action": "set-properties", "updates": {"k": "v"}}]}
SIGN = {"region": "us-east-1", "uri": "s3://bucket/sales/orders/data/f.parquet", "headers": {}}

# (operation, method, path, body): what only reads, and what changes something.
READS: list[tuple[str, str, str, Any]] = [
    ("getConfig", "GET", "/config", None),
    ("listNamespaces", "GET", "/namespaces", None),
    ("loadNamespaceMetadata", "GET", "/namespaces/sales", None),
    ("namespaceExists", "HEAD", "/namespaces/sales", None),
    ("listTables", "GET", "/namespaces/sales/tables", None),
    ("loadTable", "GET", "/namespaces/sales/tables/orders", None),
    ("tableExists", "HEAD", "/namespaces/sales/tables/orders", None),
    ("loadCredentials", "GET", "/namespaces/sales/tables/orders/credentials", None),
    ("planTableScan", "POST", "/namespaces/sales/tables/orders/plan", {}),
    ("reportMetrics", "POST", "/namespaces/sales/tables/orders/metrics", {}),
    ("signRequest-GET", "POST", "/namespaces/sales/tables/orders/sign", {**SIGN, "method": "GET"}),
    ("listViews", "GET", "/namespaces/sales/views", None),
    ("loadView", "GET", "/namespaces/sales/views/v", None),
]
WRITES: list[tuple[str, str, str, Any]] = [
    ("createNamespace", "POST", "/namespaces", {"namespace": ["sales", "eu"]}),
    ("dropNamespace", "DELETE", "/namespaces/sales", None),
    ("updateProperties", "POST", "/namespaces/sales/properties", {"updates": {"k": "v"}}),
    ("createTable", "POST", "/namespaces/sales/tables", {"name": "orders", "schema": SCHEMA}),
    ("registerTable", "POST", "/namespaces/sales/register",
     {"name": "orders", "metadata-location": "s3://bucket/m.json"}),
    ("updateTable", "POST", "/namespaces/sales/tables/orders", UPDATE),
    ("dropTable", "DELETE", "/namespaces/sales/tables/orders", None),
    ("unregisterTable", "POST", "/namespaces/sales/tables/orders/unregister", None),
    ("renameTable", "POST", "/tables/rename",
     {"source": ident("sales", "orders"), "destination": ident("sales", "orders2")}),
    ("commitTransaction", "POST", "/transactions/commit", commit(ORDERS)),
    ("signRequest-PUT", "POST", "/namespaces/sales/tables/orders/sign", {**SIGN, "method": "PUT"}),
    ("createView", "POST", "/namespaces/sales/views", {"name": "v", "schema": SCHEMA}),
    ("replaceView", "POST", "/namespaces/sales/views/v", {"requirements": [], "updates": []}),
    ("dropView", "DELETE", "/namespaces/sales/views/v", None),
    ("unknown-route", "GET", "/something/else", None),
]  # fmt: skip
ALL = READS + WRITES


def _ids(rows: list[tuple[str, str, str, Any]]) -> list[str]:
    return [row[0] for row in rows]


# -- default_access ------------------------------------------------------------------------------


@pytest.mark.parametrize(("operation", "method", "path", "doc"), ALL, ids=_ids(ALL))
async def test_default_write_lets_a_tenant_user_do_everything_as_before(
    make_gateway: MakeGateway, operation: str, method: str, path: str, doc: Any
) -> None:
    gateway, user = await confined(make_gateway, "write")

    reply = await send(gateway, user, method, path, doc)

    assert reply.status == 200, reply.body
    assert forwarded(gateway) == 1
    if doc is not None:
        assert gateway.upstream.last.body == json.dumps(doc).encode()


async def test_write_is_the_default_access_of_a_catalog(
    make_gateway: MakeGateway,
) -> None:
    assert CatalogSettings().default_access == "write"
    gateway = await make_gateway()
    user = await gateway.user()

    reply = await send(gateway, user, "POST", "/transactions/commit", commit(ORDERS))

    assert reply.status == 200
    assert forwarded(gateway) == 1


async def test_default_write_leaves_list_answers_and_credentials_untouched(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway, "write")
    listing = b'{"namespaces": [["sales"], ["hr"]], "next-page-token": "p2"}'
    answer_json(gateway.upstream, json.loads(listing))

    listed = await send(gateway, user, "GET", "/namespaces")

    assert listed.json() == json.loads(listing)
    loaded = load_table_result({"s3.access-key-id": "AKIA", "s3.secret-access-key": "s"})
    answer_json(gateway.upstream, loaded)
    reply = await send(gateway, user, "GET", "/namespaces/hr/tables/pay",
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip
    assert reply.json() == loaded
    assert gateway.upstream.last.headers[DELEGATION] == "vended-credentials"


@pytest.mark.parametrize(("operation", "method", "path", "doc"), READS, ids=_ids(READS))
async def test_default_read_allows_every_read(
    make_gateway: MakeGateway, operation: str, method: str, path: str, doc: Any
) -> None:
    gateway, user = await confined(make_gateway, "read")

    reply = await send(gateway, user, method, path, doc)

    assert reply.status == 200, reply.body
    assert forwarded(gateway) == 1


@pytest.mark.parametrize(("operation", "method", "path", "doc"), WRITES, ids=_ids(WRITES))
async def test_default_read_refuses_every_change_before_the_upstream(
    make_gateway: MakeGateway, operation: str, method: str, path: str, doc: Any
) -> None:
    gateway, user = await confined(make_gateway, "read")

    reply = await send(gateway, user, method, path, doc)

    assert_forbidden(reply, gateway)


@pytest.mark.parametrize(("operation", "method", "path", "doc"), ALL, ids=_ids(ALL))
async def test_default_none_without_grants_refuses_everything(
    make_gateway: MakeGateway, operation: str, method: str, path: str, doc: Any
) -> None:
    gateway, user = await confined(make_gateway, "none")

    reply = await send(gateway, user, method, path, doc)

    assert_forbidden(reply, gateway)


@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.ROOT])
@pytest.mark.parametrize(("operation", "method", "path", "doc"), ALL, ids=_ids(ALL))
async def test_tenant_admin_and_root_keep_full_access_under_default_none(
    make_gateway: MakeGateway, role: Role, operation: str, method: str, path: str, doc: Any
) -> None:
    gateway, _ = await confined(make_gateway, "none")
    who = gateway.root if role is Role.ROOT else await gateway.user("admin", role=role)

    reply = await send(gateway, who, method, path, doc)

    assert reply.status == 200, reply.body
    assert forwarded(gateway) == 1


async def test_tenant_admin_lists_are_not_filtered_under_default_none(
    make_gateway: MakeGateway,
) -> None:
    gateway, _ = await confined(make_gateway, "none")
    admin = await gateway.user("admin", role=Role.TENANT_ADMIN)
    listing = {"namespaces": [["sales"], ["hr"]], "next-page-token": "p2"}
    answer_json(gateway.upstream, listing)

    reply = await send(gateway, admin, "GET", "/namespaces")

    assert reply.json() == listing


# -- grants under default_access "none" ------------------------------------------------------


async def test_read_on_a_namespace_allows_loading_its_tables_but_not_changing_them(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "read")

    loaded = await send(gateway, user, "GET", "/namespaces/sales/tables/orders")
    nested = await send(gateway, user, "GET", "/namespaces/sales%1Feu/tables/orders")
    assert loaded.status == nested.status == 200
    assert forwarded(gateway) == 2

    updated = await send(gateway, user, "POST", "/namespaces/sales/tables/orders", UPDATE)
    assert_forbidden(updated, gateway, forwarded_before=2)
    assert "write" in updated.json()["error"]["message"]
    elsewhere = await send(gateway, user, "GET", "/namespaces/staging/tables/orders")
    assert_forbidden(elsewhere, gateway, forwarded_before=2)


async def test_write_on_a_table_allows_committing_to_it_and_nothing_more(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, STAGING_ORDERS, "write")

    updated = await send(gateway, user, "POST", "/namespaces/staging/tables/orders", UPDATE)
    committed = await send(gateway, user, "POST", "/transactions/commit", commit(STAGING_ORDERS))
    loaded = await send(gateway, user, "GET", "/namespaces/staging/tables/orders")  # write: read

    assert updated.status == committed.status == loaded.status == 200
    assert [r.raw_path for r in gateway.upstream.catalog_requests()] == [
        "/v1/namespaces/staging/tables/orders",
        "/v1/transactions/commit",
        "/v1/namespaces/staging/tables/orders",
    ]
    dropped = await send(gateway, user, "DELETE", "/namespaces/staging/tables/orders")
    assert_forbidden(dropped, gateway, forwarded_before=3)  # write does not imply drop
    other = await send(gateway, user, "POST", "/namespaces/staging/tables/items", UPDATE)
    assert_forbidden(other, gateway, forwarded_before=3)


async def test_a_grant_in_another_catalog_gives_nothing_here(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        catalogs={
            "default": CatalogSettings(default_access="none"),
            "other": CatalogSettings(default_access="none"),
        }
    )
    user = await gateway.user()
    await give(gateway, user, (), "manage", catalog="other")

    here = await send(gateway, user, "GET", "/namespaces/sales/tables/orders")
    there = await call(gateway, "GET", "/v1/other/v1/namespaces/sales/tables/orders",
                       headers=key_header(user))  # fmt: skip

    assert here.status == 403
    assert there.status == 200
    assert [r.raw_path for r in gateway.upstream.catalog_requests()] == [
        "/v1/namespaces/sales/tables/orders"
    ]


async def test_a_grant_on_every_catalog_holds_in_each(make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(
        catalogs={
            "default": CatalogSettings(default_access="none"),
            "other": CatalogSettings(default_access="none"),
        }
    )
    user = await gateway.user()
    await give(gateway, user, ("sales",), "read", catalog="*")

    here = await send(gateway, user, "GET", "/namespaces/sales/tables/orders")
    there = await call(gateway, "GET", "/v1/other/v1/namespaces/sales/tables/orders",
                       headers=key_header(user))  # fmt: skip

    assert here.status == there.status == 200


# -- visibility and list filtering -------------------------------------------------------------


async def test_list_namespaces_shows_only_what_leads_to_a_grant_and_keeps_the_page_token(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")
    await give(gateway, user, ("staging",), "write")
    answer_json(gateway.upstream, {
        "namespaces": [["sales"], ["hr"], ["staging"], ["salesx"]],
        "next-page-token": "page-2",
    })  # fmt: skip

    reply = await send(gateway, user, "GET", "/namespaces?pageToken=page-1")

    assert reply.status == 200
    assert reply.json() == {"namespaces": [["sales"], ["staging"]], "next-page-token": "page-2"}
    assert gateway.upstream.last.raw_path == "/v1/namespaces?pageToken=page-1"


async def test_child_namespaces_of_a_granted_namespace_are_listed(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales", "eu"), "read")
    answer_json(gateway.upstream, {"namespaces": [["sales", "eu"], ["sales", "us"]]})

    reply = await send(gateway, user, "GET", "/namespaces?parent=sales")

    assert reply.json() == {"namespaces": [["sales", "eu"]]}
    refused = await send(gateway, user, "GET", "/namespaces?parent=hr")
    assert_forbidden(refused, gateway, forwarded_before=1)


async def test_an_emptied_page_keeps_its_token_so_paging_goes_on(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("zeta",), "read")
    answer_json(gateway.upstream, {"namespaces": [["alpha"], ["beta"]], "next-page-token": "p2"})

    reply = await send(gateway, user, "GET", "/namespaces")

    assert reply.json() == {"namespaces": [], "next-page-token": "p2"}


@pytest.mark.parametrize("kind", ["tables", "views"])
async def test_list_tables_and_views_show_only_granted_entries_and_keep_the_page_token(
    make_gateway: MakeGateway, kind: str
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")
    await give(gateway, user, ("sales", "eu"), "read")  # a namespace below
    answer_json(gateway.upstream, {
        "identifiers": [ident("sales", "orders"), ident("sales", "customers"),
                        ident("sales", "eu", "x")],
        "next-page-token": "t2",
    })  # fmt: skip

    reply = await send(gateway, user, "GET", f"/namespaces/sales/{kind}")

    assert reply.status == 200
    assert reply.json() == {
        "identifiers": [ident("sales", "orders"), ident("sales", "eu", "x")],
        "next-page-token": "t2",
    }


async def test_a_grant_below_makes_its_namespace_listable_and_existing_but_not_loadable(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")

    exists = await send(gateway, user, "HEAD", "/namespaces/sales")
    listed = await send(gateway, user, "GET", "/namespaces/sales/tables")
    assert exists.status == listed.status == 200
    assert forwarded(gateway) == 2

    metadata = await send(gateway, user, "GET", "/namespaces/sales")  # needs read on sales
    assert_forbidden(metadata, gateway, forwarded_before=2)
    other = await send(gateway, user, "HEAD", "/namespaces/hr")
    assert_forbidden(other, gateway, forwarded_before=2)
    sibling = await send(gateway, user, "GET", "/namespaces/sales/tables/customers")
    assert_forbidden(sibling, gateway, forwarded_before=2)


async def test_default_read_lists_everything(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway, "read")
    listing = {"namespaces": [["sales"], ["hr"]], "next-page-token": "p2"}
    answer_json(gateway.upstream, listing)

    reply = await send(gateway, user, "GET", "/namespaces")

    assert reply.json() == listing


# -- body-aware operations ---------------------------------------------------------------------

RENAME = {"source": ident("staging", "orders"), "destination": ident("sales", "orders")}


async def test_rename_across_namespaces_needs_create_on_the_destination(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, STAGING_ORDERS, "drop")

    refused = await send(gateway, user, "POST", "/tables/rename", RENAME)
    assert_forbidden(refused, gateway)

    await give(gateway, user, ("sales",), "create")
    renamed = await send(gateway, user, "POST", "/tables/rename", RENAME)
    assert renamed.status == 200
    assert gateway.upstream.last.body == json.dumps(RENAME).encode()


async def test_rename_needs_drop_on_the_source(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")
    await give(gateway, user, STAGING_ORDERS, "write")  # write does not imply removing it

    reply = await send(gateway, user, "POST", "/tables/rename", RENAME)

    assert_forbidden(reply, gateway)


async def test_a_transaction_with_one_forbidden_table_is_refused_whole(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "write")
    await give(gateway, user, STAGING_ORDERS, "read")

    reply = await send(gateway, user, "POST", "/transactions/commit",
                       commit(ORDERS, STAGING_ORDERS))  # fmt: skip

    assert_forbidden(reply, gateway)


async def test_a_transaction_on_granted_tables_is_forwarded_byte_for_byte(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "write")
    await give(gateway, user, ("staging",), "manage")
    body = json.dumps(commit(ORDERS, STAGING_ORDERS), indent=3).encode() + b"\n "

    reply = await call(gateway, "POST", f"{API}/transactions/commit", headers=key_header(user),
                       data=body)  # fmt: skip

    assert reply.status == 200
    received = gateway.upstream.last
    assert received.body == body
    assert received.headers["Content-Length"] == str(len(body))


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("/namespaces/sales/tables", {"name": "t", "schema": SCHEMA, "location": "s3://x/t"}),
        ("/namespaces/sales/tables",
         {"name": "t", "schema": SCHEMA, "properties": {"write.data.path": "s3://x/"}}),
        ("/namespaces", {"namespace": ["sales", "eu"], "properties": {"location": "s3://x/"}}),
    ],
    ids=["create-table-location", "create-table-write-data-path", "create-namespace-location"],
)  # fmt: skip
async def test_creating_with_a_location_needs_manage(
    make_gateway: MakeGateway, path: str, doc: Json
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")

    refused = await send(gateway, user, "POST", path, doc)
    assert_forbidden(refused, gateway)

    await give(gateway, user, ("sales",), "manage")
    allowed = await send(gateway, user, "POST", path, doc)
    assert allowed.status == 200


@pytest.mark.parametrize(
    "update",
    [
        {"action": "set-location", "location": "s3://elsewhere/orders"},
        {"action": "set-properties", "updates": {"write.metadata.path": "s3://elsewhere/"}},
    ],
    ids=["set-location", "set-write-metadata-path"],
)
async def test_moving_a_tables_files_needs_manage(make_gateway: MakeGateway, update: Json) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "write")
    doc = {"requirements": [], "updates": [update]}

    refused = await send(gateway, user, "POST", "/namespaces/sales/tables/orders", doc)
    in_transaction = await send(
        gateway,
        user,
        "POST",
        "/transactions/commit",
        {"table-changes": [{"identifier": ident(*ORDERS), **doc}]},
    )
    assert_forbidden(refused, gateway)
    assert_forbidden(in_transaction, gateway)

    await give(gateway, user, ORDERS, "manage")
    allowed = await send(gateway, user, "POST", "/namespaces/sales/tables/orders", doc)
    assert allowed.status == 200


ASSERT_CREATE = {
    "requirements": [{"type": "assert-create"}],
    "updates": [{"action": "assign-uuid", "uuid": "9c12d441-03fe-4693-9a96-a0705ddf69c1"}],
}


@pytest.mark.parametrize("kind", ["assert-create", "ASSERT-CREATE"])
async def test_write_on_a_namespace_cannot_create_a_table_through_an_assert_create_commit(
    make_gateway: MakeGateway, kind: str
) -> None:
    # The upstream creates the table of an assert-create commit (CatalogHandlers.updateTable):
    # a creation, which write on the namespace does not allow.
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "write")
    doc = {**ASSERT_CREATE, "requirements": [{"type": kind}]}
    path = "/namespaces/sales/tables/orders"
    transaction = {"table-changes": [{"identifier": ident(*ORDERS), **doc}]}

    updated = await send(gateway, user, "POST", path, doc)
    assert_forbidden(updated, gateway)
    assert "create" in updated.json()["error"]["message"]
    committed = await send(gateway, user, "POST", "/transactions/commit", transaction)
    assert_forbidden(committed, gateway)
    plain = await send(gateway, user, "POST", path, UPDATE)  # no assert-create: a write
    assert plain.status == 200

    await give(gateway, user, ("sales",), "create")
    created = await send(gateway, user, "POST", path, doc)
    created_in_transaction = await send(gateway, user, "POST", "/transactions/commit", transaction)
    assert created.status == created_in_transaction.status == 200
    assert [r.body for r in gateway.upstream.catalog_requests()[1:]] == [
        json.dumps(doc).encode(),
        json.dumps(transaction).encode(),
    ]


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("/namespaces/sales/tables/orders", {**UPDATE, "identifier": ident("hr", "payroll")}),
        ("/namespaces/sales/views/v", {"identifier": ident("hr", "v"), "updates": []}),
        ("/namespaces/sales/tables/orders", {"requirements": {"type": "assert-create"}}),
        ("/namespaces/sales/tables/orders", {"updates": ["set-location"]}),
        ("/transactions/commit",
         {"table-changes": [{"identifier": ident(*ORDERS), "requirements": "assert-create"}]}),
    ],
    ids=["table-identifier-elsewhere", "view-identifier-elsewhere", "requirements-not-a-list",
         "updates-not-objects", "transaction-requirements-not-a-list"],
)  # fmt: skip
async def test_a_commit_naming_another_table_or_malformed_changes_is_400_and_goes_nowhere(
    make_gateway: MakeGateway, path: str, doc: Json
) -> None:
    # Even for a caller that may do anything in the catalog: what the upstream would act on
    # must be what was judged.
    gateway, user = await confined(make_gateway)
    await give(gateway, user, (), "manage")

    reply = await send(gateway, user, "POST", path, doc)

    assert_iceberg_error(reply, 400)
    assert reply.json()["error"]["type"] == "BadRequestException"
    assert forwarded(gateway) == 0


async def test_stage_create_needs_write_on_the_new_table(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")
    doc = {"name": "orders", "schema": SCHEMA, "stage-create": True}

    refused = await send(gateway, user, "POST", "/namespaces/sales/tables", doc)
    assert_forbidden(refused, gateway)
    plain = await send(gateway, user, "POST", "/namespaces/sales/tables",
                       {**doc, "stage-create": False})  # fmt: skip
    assert plain.status == 200

    await give(gateway, user, ORDERS, "write")
    staged = await send(gateway, user, "POST", "/namespaces/sales/tables", doc)
    assert staged.status == 200


async def test_a_stage_create_flag_a_lenient_parser_reads_as_true_still_needs_write(
    make_gateway: MakeGateway,
) -> None:
    # Iceberg's CreateTableRequest is bound by Jackson (Boolean stageCreate), which coerces the
    # string "true" to true by default, as Pydantic's lax mode does: the upstream stages the
    # table. The gateway must not read such a flag as "no stage-create".
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")

    reply = await send(gateway, user, "POST", "/namespaces/sales/tables",
                       {"name": "orders", "schema": SCHEMA, "stage-create": "true"})  # fmt: skip

    assert reply.status in (400, 403), reply.body
    assert forwarded(gateway) == 0


async def test_register_needs_manage_even_with_create_and_drop(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")
    await give(gateway, user, ORDERS, "drop")
    doc = {"name": "orders", "metadata-location": "s3://bucket/m.json", "overwrite": True}

    refused = await send(gateway, user, "POST", "/namespaces/sales/register", doc)
    assert_forbidden(refused, gateway)

    await give(gateway, user, ("sales",), "manage")
    registered = await send(gateway, user, "POST", "/namespaces/sales/register", doc)
    assert registered.status == 200


async def test_signing_a_get_needs_read_and_a_put_needs_write(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")
    path = "/namespaces/sales/tables/orders/sign"

    get = await send(gateway, user, "POST", path, {**SIGN, "method": "GET"})
    head = await send(gateway, user, "POST", path, {**SIGN, "method": "HEAD"})
    assert get.status == head.status == 200
    put = await send(gateway, user, "POST", path, {**SIGN, "method": "PUT"})
    assert_forbidden(put, gateway, forwarded_before=2)
    delete = await send(gateway, user, "POST", path, {**SIGN, "method": "DELETE"})
    assert_forbidden(delete, gateway, forwarded_before=2)

    await give(gateway, user, ORDERS, "write")
    put = await send(gateway, user, "POST", path, {**SIGN, "method": "PUT"})
    assert put.status == 200


async def test_dropping_with_purge_also_needs_write(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "drop")
    path = "/namespaces/sales/tables/orders"

    purge = await send(gateway, user, "DELETE", f"{path}?purgeRequested=true")
    assert_forbidden(purge, gateway)
    dropped = await send(gateway, user, "DELETE", f"{path}?purgeRequested=false")
    assert dropped.status == 200

    await give(gateway, user, ORDERS, "write")
    purged = await send(gateway, user, "DELETE", f"{path}?purgeRequested=true")
    assert purged.status == 200
    assert gateway.upstream.last.raw_path == f"/v1{path}?purgeRequested=true"


async def test_an_unknown_route_needs_manage_on_the_whole_catalog(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "manage")

    refused = await send(gateway, user, "POST", "/namespaces/sales/tables/orders/snapshots", {})
    assert_forbidden(refused, gateway)

    await give(gateway, user, (), "manage")
    allowed = await send(gateway, user, "POST", "/namespaces/sales/tables/orders/snapshots", {})
    assert allowed.status == 200
    assert gateway.upstream.last.raw_path == "/v1/namespaces/sales/tables/orders/snapshots"


async def test_an_unknown_route_is_forwarded_for_default_write(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway, "write")

    reply = await send(gateway, user, "GET", "/something/else")

    assert reply.status == 200
    assert gateway.upstream.last.raw_path == "/v1/something/else"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/transactions/commit", b""),
        ("/transactions/commit", b'{"table-changes": []}'),
        ("/transactions/commit", b'{"table-changes": [{"identifier": "sales.orders"}]}'),
        ("/tables/rename", b'{"source": {"namespace": ["staging"], "name": "orders"}}'),
        ("/namespaces", b'{"namespace": "sales"}'),
        ("/namespaces/sales/tables", b"not json"),
    ],
)
async def test_a_confined_callers_body_naming_no_target_is_400_and_goes_nowhere(
    make_gateway: MakeGateway, path: str, body: bytes
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, (), "manage")

    reply = await call(gateway, "POST", f"{API}{path}", headers=key_header(user), data=body)

    assert_iceberg_error(reply, 400)
    assert reply.json()["error"]["type"] == "BadRequestException"
    assert forwarded(gateway) == 0


@pytest.mark.parametrize("access", ["none", "write"])
@pytest.mark.parametrize(
    "identifier",
    [ident("sales", "or*ders"), ident("sa'les", "orders"), ident("sales", "x\ny"),
     {"namespace": ["ok"], "name": "t$"}],
)  # fmt: skip
async def test_hostile_names_in_transaction_identifiers_are_400_and_go_nowhere(
    make_gateway: MakeGateway, access: str, identifier: Json
) -> None:
    gateway, user = await confined(make_gateway, access)
    await give(gateway, user, (), "manage")
    doc = {"table-changes": [{"identifier": ident(*ORDERS), "updates": []},
                             {"identifier": identifier, "updates": []}]}  # fmt: skip

    reply = await send(gateway, user, "POST", "/transactions/commit", doc)

    assert_iceberg_error(reply, 400)
    assert "name contains" in reply.json()["error"]["message"]
    assert forwarded(gateway) == 0


# -- fragments: a raw "#" in the request line -------------------------------------------------


async def send_raw(
    gateway: Gateway, who: CreatedKey, method: str, target: str, body: bytes = b""
) -> RawReply:
    """``method`` on ``target`` exactly as written on the request line (a client library
    would cut a "#" off as a fragment), through the gateway's real connection layer."""
    server = gateway.client.server
    assert server.host is not None and server.port is not None
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {who.api_key.plaintext()}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return await exchange(server.host, server.port, head.encode() + body)


def assert_malformed(reply: RawReply, gateway: Gateway) -> None:
    """400 BadRequestException naming RFC 3986, and the upstream was not asked."""
    assert reply.status == 400, reply.body
    error = reply.json()["error"]
    assert error["type"] == "BadRequestException"
    assert "RFC 3986" in error["message"]
    assert gateway.upstream.requests == []


@pytest.mark.parametrize("access", ["none", "read"])
async def test_a_readers_commit_disguised_as_metrics_by_a_raw_hash_is_400_and_goes_nowhere(
    make_gateway: MakeGateway, access: str
) -> None:
    # An upstream reading "#/metrics" as a fragment routes POST .../orders: updateTable, a
    # commit, while "/metrics" made it reportMetrics (read) to the gateway.
    gateway, user = await confined(make_gateway, access)
    await give(gateway, user, ("sales",), "read")
    body = json.dumps(UPDATE).encode()

    reply = await send_raw(
        gateway, user, "POST", f"{API}/namespaces/sales/tables/orders#/metrics", body
    )

    assert_malformed(reply, gateway)
    # Without the "#", the same caller's metrics report does go through (a read).
    reported = await send(gateway, user, "POST", "/namespaces/sales/tables/orders/metrics", {})
    assert reported.status == 200
    assert gateway.upstream.last.raw_path == "/v1/namespaces/sales/tables/orders/metrics"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/namespaces/sales/tables/orders#x"),
        ("GET", "/namespaces/sales#/tables/orders"),
        ("DELETE", "/namespaces/sales/tables/orders?purgeRequested=false#true"),
        ("GET", "/namespaces?pageToken=p1#"),
        ("GET", "/namespaces?parent=sales#x"),
    ],
)
async def test_a_raw_hash_in_the_path_or_query_is_400_and_goes_nowhere(
    make_gateway: MakeGateway, method: str, target: str
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "manage")

    reply = await send_raw(gateway, user, method, f"{API}{target}")

    assert_malformed(reply, gateway)


# -- roles, and changes taking effect at once --------------------------------------------------


async def test_grants_given_to_a_role_hold_for_its_members_until_unassigned(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    access = gateway.app[GRANTS]
    role = await access.create_role(name="readers", tenant="default", actor="test")
    await give(gateway, role, ("sales",), "read")
    path = "/namespaces/sales/tables/orders"

    assert_forbidden(await send(gateway, user, "GET", path), gateway)

    assert await access.assign(role, user.user, actor="test")
    assert (await send(gateway, user, "GET", path)).status == 200

    await access.unassign(role, user.user, actor="test")
    assert_forbidden(await send(gateway, user, "GET", path), gateway, forwarded_before=1)


async def test_a_role_adds_to_the_members_own_grants(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    access = gateway.app[GRANTS]
    role = await access.create_role(name="writers", tenant="default", actor="test")
    await give(gateway, role, ORDERS, "write")
    await give(gateway, user, ("staging",), "write")
    await access.assign(role, user.user, actor="test")

    reply = await send(gateway, user, "POST", "/transactions/commit",
                       commit(ORDERS, STAGING_ORDERS))  # fmt: skip

    assert reply.status == 200


async def test_a_revoked_grant_is_refused_on_the_very_next_request(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    grant = await give(gateway, user, ("sales",), "read")
    path = "/namespaces/sales/tables/orders"
    assert (await send(gateway, user, "GET", path)).status == 200

    await gateway.app[GRANTS].revoke(grant.id, actor="test")

    assert_forbidden(await send(gateway, user, "GET", path), gateway, forwarded_before=1)


async def test_a_new_grant_holds_from_the_very_next_request(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    path = "/namespaces/sales/tables/orders"
    assert_forbidden(await send(gateway, user, "GET", path), gateway)  # and now cached

    await give(gateway, user, ("sales",), "read")

    assert (await send(gateway, user, "GET", path)).status == 200


async def test_a_bearer_token_carries_the_same_grants_as_the_key(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    grant = await give(gateway, user, ("sales",), "read")
    token = bearer(await gateway.token(user))
    path = "/namespaces/sales/tables/orders"

    assert (await send(gateway, token, "GET", path)).status == 200
    assert_forbidden(await send(gateway, token, "POST", path, UPDATE), gateway, forwarded_before=1)

    await gateway.app[GRANTS].revoke(grant.id, actor="test")
    assert_forbidden(await send(gateway, token, "GET", path), gateway, forwarded_before=1)


# -- storage credentials -----------------------------------------------------------------------

# What the catalog vends with a table: credentials, and the storage settings that come with
# them (held back too: a client given an endpoint without keys builds a keyless client from it
# instead of using its own). Other catalog settings are no storage access and stay.
STORAGE_CONFIG = {
    "s3.endpoint": "http://s3:8333",
    "client.region": "us-east-1",
    "s3.access-key-id": "AKIAVENDED",
    "s3.secret-access-key": "vended-secret",
    "s3.session-token": "vended-session",
}
VENDED_CONFIG = {**STORAGE_CONFIG, "rest-page-size": "100"}
STORAGE_CREDENTIALS = [{"prefix": "s3://bucket/sales/", "config": {"s3.access-key-id": "A"}}]
WITHOUT_STORAGE = {"rest-page-size": "100"}


def vending_answer() -> Json:
    return {**load_table_result(dict(VENDED_CONFIG)), "storage-credentials": STORAGE_CREDENTIALS}


@pytest.mark.parametrize("access", ["none", "read"])
async def test_a_reader_gets_no_storage_credentials_and_asks_for_no_delegation(
    make_gateway: MakeGateway, access: str
) -> None:
    gateway, user = await confined(make_gateway, access)
    await give(gateway, user, ("sales",), "read")
    answer_json(gateway.upstream, vending_answer())

    reply = await send(gateway, user, "GET", "/namespaces/sales/tables/orders",
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.status == 200
    doc = reply.json()
    assert doc["config"] == WITHOUT_STORAGE
    assert doc["storage-credentials"] == []
    assert doc["metadata"]["current-snapshot-id"] == SNAPSHOT_ID  # int64 kept exact
    assert DELEGATION not in gateway.upstream.last.headers


async def test_load_credentials_of_a_reader_are_emptied(make_gateway: MakeGateway) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")
    answer_json(gateway.upstream, {"storage-credentials": STORAGE_CREDENTIALS})

    reply = await send(gateway, user, "GET", "/namespaces/sales/tables/orders/credentials",
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.json() == {"storage-credentials": []}
    assert DELEGATION not in gateway.upstream.last.headers


async def test_a_creator_without_write_gets_no_credentials_for_the_new_table(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")
    answer_json(gateway.upstream, vending_answer())

    reply = await send(gateway, user, "POST", "/namespaces/sales/tables",
                       {"name": "orders", "schema": SCHEMA},
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.status == 200
    assert reply.json()["config"] == WITHOUT_STORAGE
    assert reply.json()["storage-credentials"] == []
    assert DELEGATION not in gateway.upstream.last.headers


@pytest.mark.parametrize("held", ["write", "manage"])
async def test_a_writer_keeps_storage_credentials_and_the_delegation_header(
    make_gateway: MakeGateway, held: str
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "read")
    await give(gateway, user, ORDERS, held)
    answer_json(gateway.upstream, vending_answer())

    reply = await send(gateway, user, "GET", "/namespaces/sales/tables/orders",
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.json() == vending_answer()
    assert gateway.upstream.last.headers[DELEGATION] == "vended-credentials"


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/namespaces/sales/tables/orders/plan"),
     ("GET", "/namespaces/sales/tables/orders/plan/p1")],
    ids=["planTableScan", "fetchPlanningResult"],
)  # fmt: skip
async def test_a_readers_scan_plan_carries_no_storage_credentials(
    make_gateway: MakeGateway, method: str, path: str
) -> None:
    # CompletedPlanningResult carries "storage-credentials" (Iceberg REST spec 1.10+), and both
    # routes take the data-access (X-Iceberg-Access-Delegation) header.
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ORDERS, "read")
    answer_json(gateway.upstream, {
        "status": "completed", "plan-id": "p1", "plan-tasks": [], "file-scan-tasks": [],
        "storage-credentials": STORAGE_CREDENTIALS,
    })  # fmt: skip

    reply = await send(gateway, user, method, path, {} if method == "POST" else None,
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.status == 200
    assert reply.json().get("storage-credentials") in (None, [])
    assert DELEGATION not in gateway.upstream.last.headers


def config_answer() -> Json:
    """A /v1/config answer carrying storage access in its defaults and overrides."""
    return {
        "defaults": {**STORAGE_CONFIG, "rest-page-size": "100"},
        "overrides": {"s3.access-key-id": "AKIAOVERRIDE", "adls.sas-token.acct": "sv=x",
                      "gcs.oauth2.token": "ya29", "rest-page-size": "50"},
        "endpoints": ["GET /v1/{prefix}/namespaces"],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("access", "granted"), [("read", None), ("none", ("sales",))], ids=["default-read", "grant"]
)
async def test_a_caller_without_write_on_the_catalog_gets_a_config_without_storage_access(
    make_gateway: MakeGateway, access: str, granted: Resource | None
) -> None:
    gateway, user = await confined(make_gateway, access)
    if granted is not None:
        await give(gateway, user, granted, "read")
    await give(gateway, user, ORDERS, "write")  # write below the catalog is not on it
    answer_json(gateway.upstream, config_answer())

    reply = await send(gateway, user, "GET", "/config", headers={DELEGATION: "vended-credentials"})

    assert reply.status == 200
    assert reply.json() == {
        "defaults": {"rest-page-size": "100"},
        "overrides": {"rest-page-size": "50"},
        "endpoints": ["GET /v1/{prefix}/namespaces"],
    }
    assert DELEGATION not in gateway.upstream.last.headers


async def test_a_writer_on_the_whole_catalog_keeps_the_configs_storage_access(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "read")
    answer_json(gateway.upstream, config_answer())
    stripped = await send(gateway, user, "GET", "/config", headers={DELEGATION: "vended"})
    assert "s3.endpoint" not in stripped.json()["defaults"]

    await give(gateway, user, (), "write")
    reply = await send(gateway, user, "GET", "/config", headers={DELEGATION: "vended"})

    assert reply.json() == config_answer()
    assert gateway.upstream.last.headers[DELEGATION] == "vended"


def view_answer() -> Json:
    """A LoadViewResult whose config vends storage access."""
    return {
        "metadata-location": "s3://bucket/sales/v/metadata/00001.metadata.json",
        "metadata": {"view-uuid": "a20125c8-7284-442c-9aea-15fee620737c", "format-version": 1,
                     "current-version-id": 1, "versions": [], "version-log": [], "schemas": []},
        "config": dict(VENDED_CONFIG),
    }  # fmt: skip


@pytest.mark.parametrize(
    ("access", "granted"), [("read", None), ("none", ("sales",))], ids=["default-read", "grant"]
)
async def test_a_view_reader_gets_its_config_without_storage_access_or_delegation(
    make_gateway: MakeGateway, access: str, granted: Resource | None
) -> None:
    gateway, user = await confined(make_gateway, access)
    if granted is not None:
        await give(gateway, user, granted, "read")
    await give(gateway, user, ("sales", "other"), "write")  # another view's
    answer_json(gateway.upstream, view_answer())

    reply = await send(gateway, user, "GET", "/namespaces/sales/views/v",
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.status == 200
    assert reply.json() == {**view_answer(), "config": WITHOUT_STORAGE}
    assert DELEGATION not in gateway.upstream.last.headers

    await give(gateway, user, ("sales", "v"), "write")
    written = await send(gateway, user, "GET", "/namespaces/sales/views/v",
                         headers={DELEGATION: "vended-credentials"})  # fmt: skip
    assert written.json() == view_answer()
    assert gateway.upstream.last.headers[DELEGATION] == "vended-credentials"


async def test_a_view_creator_without_write_gets_no_storage_access_for_the_new_view(
    make_gateway: MakeGateway,
) -> None:
    # createView answers with the same LoadViewResult as loadView, config and all: a caller
    # that may create views but not write them must not get storage access through it (as
    # createTable's answer for a creator without write on the new table).
    gateway, user = await confined(make_gateway)
    await give(gateway, user, ("sales",), "create")
    answer_json(gateway.upstream, view_answer())

    reply = await send(gateway, user, "POST", "/namespaces/sales/views",
                       {"name": "v", "schema": SCHEMA},
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    assert reply.status == 200
    assert reply.json()["config"] == WITHOUT_STORAGE
    assert DELEGATION not in gateway.upstream.last.headers


# -- the read-only upstream credential ---------------------------------------------------------

MAIN = UpstreamAuthSettings(type="bearer", token="main-token")
READ = UpstreamAuthSettings(type="bearer", token="read-token")


async def with_read_credential(
    make_gateway: MakeGateway, access: str = "none"
) -> tuple[Gateway, CreatedKey]:
    return await confined(make_gateway, access, upstream_auth=MAIN, upstream_auth_read=READ)


@pytest.mark.parametrize("access", ["none", "read"])
async def test_a_readers_request_goes_upstream_with_the_read_credential_unstripped(
    make_gateway: MakeGateway, access: str
) -> None:
    gateway, user = await with_read_credential(make_gateway, access)
    await give(gateway, user, ("sales",), "read")
    answer_json(gateway.upstream, vending_answer())

    loaded = await send(gateway, user, "GET", "/namespaces/sales/tables/orders",
                        headers={DELEGATION: "vended-credentials"})  # fmt: skip
    received = gateway.upstream.last
    listed = await send(gateway, user, "GET", "/namespaces/sales/tables")

    assert loaded.json() == vending_answer()  # the upstream vended read-only access itself
    assert received.headers["Authorization"] == "Bearer read-token"
    assert received.headers[DELEGATION] == "vended-credentials"
    assert listed.status == 200
    assert gateway.upstream.last.headers["Authorization"] == "Bearer read-token"


async def test_a_writers_request_goes_upstream_with_the_main_credential(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await with_read_credential(make_gateway)
    await give(gateway, user, ORDERS, "write")
    answer_json(gateway.upstream, vending_answer())

    loaded = await send(gateway, user, "GET", "/namespaces/sales/tables/orders",
                        headers={DELEGATION: "vended-credentials"})  # fmt: skip
    received = gateway.upstream.last
    committed = await send(gateway, user, "POST", "/namespaces/sales/tables/orders", UPDATE)

    assert loaded.json() == vending_answer()
    assert received.headers["Authorization"] == "Bearer main-token"
    assert received.headers[DELEGATION] == "vended-credentials"
    assert committed.status == 200
    assert gateway.upstream.last.headers["Authorization"] == "Bearer main-token"


@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.ROOT])
async def test_full_access_principals_always_use_the_main_credential(
    make_gateway: MakeGateway, role: Role
) -> None:
    gateway, _ = await with_read_credential(make_gateway)
    who = gateway.root if role is Role.ROOT else await gateway.user("admin", role=role)

    reply = await send(gateway, who, "GET", "/namespaces/sales/tables/orders")

    assert reply.status == 200
    assert gateway.upstream.last.headers["Authorization"] == "Bearer main-token"


async def test_a_creator_without_write_uses_the_main_credential_and_is_stripped(
    make_gateway: MakeGateway,
) -> None:
    # create is no read: the read credential could not create, so the main one is used and
    # what it vends for the new table is removed.
    gateway, user = await with_read_credential(make_gateway)
    await give(gateway, user, ("sales",), "create")
    answer_json(gateway.upstream, vending_answer())

    reply = await send(gateway, user, "POST", "/namespaces/sales/tables",
                       {"name": "orders", "schema": SCHEMA},
                       headers={DELEGATION: "vended-credentials"})  # fmt: skip

    received = gateway.upstream.last
    assert received.headers["Authorization"] == "Bearer main-token"
    assert DELEGATION not in received.headers
    assert reply.json()["storage-credentials"] == []


async def test_a_readers_change_is_refused_although_a_read_credential_exists(
    make_gateway: MakeGateway,
) -> None:
    gateway, user = await with_read_credential(make_gateway, "read")

    reply = await send(gateway, user, "POST", "/namespaces/sales/tables/orders", UPDATE)

    assert_forbidden(reply, gateway)
