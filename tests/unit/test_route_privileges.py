"""Every Iceberg REST route decided (issue 12): each operation's privilege in ``routing``, the
resource a parsed path names, and the identifier rule of paths, queries and bodies."""

from __future__ import annotations

import json

import pytest

from gateway.identifiers import (
    NAMED_IN_BODY,
    NOT_A_JSON_OBJECT,
    json_object,
    name_refusal,
    names_refusal,
)
from gateway.routing import (
    ROUTES,
    UNKNOWN,
    decide,
    parse_catalog_path,
    query_refusal,
)

from .test_routing import SPEC_ROUTES


def body_refusal(operation: str, body: bytes) -> str | None:
    """What the catalog handler makes of a body naming something: read, then judged."""
    doc = json_object(body)
    return NOT_A_JSON_OBJECT if doc is None else names_refusal(operation, doc)


# operationId -> (level, action, body_aware), written out so that any change to the table in
# routing shows here as a diff. getToken is the gateway's own endpoint: no privilege.
PRIVILEGES: dict[str, tuple[str, str, bool] | None] = {
    "getConfig": ("catalog", "read", False),
    "getToken": None,
    "listNamespaces": ("namespace", "read", False),
    "createNamespace": ("catalog", "create", True),
    "loadNamespaceMetadata": ("namespace", "read", False),
    "namespaceExists": ("namespace", "read", False),
    "dropNamespace": ("namespace", "drop", False),
    "updateProperties": ("namespace", "manage", False),
    "listTables": ("namespace", "read", False),
    "createTable": ("namespace", "create", True),
    "registerTable": ("namespace", "manage", False),
    "loadTable": ("table", "read", False),
    "tableExists": ("table", "read", False),
    "updateTable": ("table", "write", True),
    "dropTable": ("table", "drop", False),
    "unregisterTable": ("table", "drop", False),
    "loadCredentials": ("table", "read", False),
    "planTableScan": ("table", "read", False),
    "fetchPlanningResult": ("table", "read", False),
    "cancelPlanning": ("table", "read", False),
    "fetchScanTasks": ("table", "read", False),
    "reportMetrics": ("table", "read", False),
    "signRequest": ("table", "read", True),
    "renameTable": ("catalog", "drop", True),
    "commitTransaction": ("catalog", "write", True),
    "listViews": ("namespace", "read", False),
    "createView": ("namespace", "create", True),
    "loadView": ("view", "read", False),
    "viewExists": ("view", "read", False),
    "replaceView": ("view", "write", True),
    "dropView": ("view", "drop", False),
    "renameView": ("catalog", "drop", True),
    "registerView": ("namespace", "manage", False),
    "listFunctions": ("namespace", "read", False),
    "loadFunction": ("namespace", "read", False),
}
# A grant on or below the resource is enough; list answers are filtered (§2.7's visibility).
BY_VISIBILITY = {"getConfig", "listNamespaces", "namespaceExists", "listTables", "listViews"}


def test_the_privilege_table_lists_every_operation_of_the_spec() -> None:
    operations = {op for route in ROUTES.values() for op in route.operations.values()}
    assert set(PRIVILEGES) == operations == {op for _, _, op, _, _ in SPEC_ROUTES}


@pytest.mark.parametrize(("method", "path", "operation"), [r[:3] for r in SPEC_ROUTES])
def test_every_spec_route_has_its_privilege(method: str, path: str, operation: str) -> None:
    route = parse_catalog_path(path).route
    privilege = route.privileges[method]
    expected = PRIVILEGES[operation]
    if expected is None:
        assert privilege is None
        return
    assert privilege is not None
    assert (privilege.level, privilege.action, privilege.body_aware) == expected
    assert privilege.visibility == (operation in BY_VISIBILITY)


def test_every_route_has_a_privilege_for_each_of_its_methods() -> None:
    for route in ROUTES.values():
        assert set(route.privileges) == set(route.operations)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "wh/namespaces"),  # a method the route does not take
        ("DELETE", "wh/tables/rename"),
        ("POST", "oauth/tokens"),  # the gateway's own: nothing to grant
        ("GET", "wh/namespaces/../config"),  # refused by the grammar
    ],
)
def test_what_is_no_operation_has_no_privilege(method: str, path: str) -> None:
    assert decide(parse_catalog_path(path), method) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "wh/something/else"),  # no spec route
        ("POST", "wh/namespaces/ns/tables/t/snapshots"),
        ("GET", "v1/aws/s3/sign"),  # the legacy signer: a separate spec, not routed
        ("HEAD", "wh/anything"),
    ],
)
def test_an_unknown_route_needs_manage_on_the_whole_catalog(method: str, path: str) -> None:
    """Fail closed: nothing says what an unknown route reads or changes."""
    parsed = parse_catalog_path(path)
    assert parsed.route is UNKNOWN
    decision = decide(parsed, method)
    assert decision is not None
    assert (decision.resource, decision.action) == ((), "manage")


@pytest.mark.parametrize(
    ("method", "path", "query", "resource", "action"),
    [
        ("GET", "config", "", (), "read"),
        ("GET", "wh/namespaces", "", (), "read"),
        ("GET", "wh/namespaces", "parent=sales", ("sales",), "read"),
        ("GET", "wh/namespaces", "pageToken=&parent=a%1Fb&pageSize=10", ("a", "b"), "read"),
        ("GET", "wh/namespaces", "parent=", (), "read"),
        ("GET", "wh/namespaces", "parent=a&parent=b", (), "read"),  # ambiguous: the catalog
        ("POST", "wh/namespaces", "", (), "create"),
        ("GET", "wh/namespaces/sales", "", ("sales",), "read"),
        ("DELETE", "wh/namespaces/a%1fb", "", ("a", "b"), "drop"),
        ("POST", "wh/namespaces/sales/properties", "", ("sales",), "manage"),
        ("POST", "wh/namespaces/sales/tables", "", ("sales",), "create"),
        ("GET", "wh/namespaces/sales/tables/orders", "", ("sales", "orders"), "read"),
        ("POST", "namespaces/a%1Fb/tables/orders", "", ("a", "b", "orders"), "write"),
        ("POST", "wh/namespaces/sales/tables/orders/metrics", "", ("sales", "orders"), "read"),
        ("GET", "wh/namespaces/sales/tables/orders/plan/p1", "", ("sales", "orders"), "read"),
        ("POST", "wh/tables/rename", "", (), "drop"),
        ("POST", "wh/transactions/commit", "", (), "write"),
        ("DELETE", "wh/namespaces/sales/views/v", "", ("sales", "v"), "drop"),
        ("GET", "wh/namespaces/sales/functions/f", "", ("sales",), "read"),
        # names decoded once, as the grammar reads them: levels at %1F, then UTF-8
        ("GET", "wh/namespaces/d%C3%A9j%C3%A0%1Fx%2Ey/tables/with%20space", "",
         ("déjà", "x.y", "with space"), "read"),
        ("GET", "wh/namespaces/%E6%95%B0%E6%8D%AE/tables/a%25b", "", ("数据", "a%b"), "read"),
        ("GET", "default/v1/namespaces/tables/tables/views", "", ("tables", "views"), "read"),
    ],
)  # fmt: skip
def test_a_parsed_path_gives_its_route_resource_and_action(
    method: str, path: str, query: str, resource: tuple[str, ...], action: str
) -> None:
    parsed = parse_catalog_path(path)
    decision = decide(parsed, method, query)
    assert decision is not None
    assert decision.route is parsed.route
    assert (decision.resource, decision.action) == (resource, action)
    assert decision.privilege is parsed.route.privileges[method]


# -- the identifier rule --------------------------------------------------------------------

HOSTILE = ["*", "?", "$", "'", '"', "`", "\x00", "\n", "\t", "\x1b", "\x1f", "\x7f", "\x85", "\x9f"]
FINE = ["orders", "with space", "déjà", "数据", "emoji😀", "a.b", "a-b", "a_b", "a%b", "a#b",
        "a+b", "a&b", "a=b", "~tilde", "\xa0nbsp", "UPPER"]  # fmt: skip


def _escape(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


_PATH_TEMPLATES = [
    ("namespaces/{x}", "namespace"),
    ("wh/namespaces/ok%1F{x}/tables", "namespace"),
    ("wh/namespaces/{x}%1Fok/properties", "namespace"),
    ("wh/namespaces/ns/tables/{x}", "table"),
    ("wh/namespaces/ns/tables/{x}/credentials", "table"),
    ("wh/namespaces/ns/views/{x}", "view"),
    ("wh/namespaces/ns/functions/{x}", "function"),
]


@pytest.mark.parametrize(
    ("template", "kind", "char"),
    [
        (template, kind, char)
        for template, kind in _PATH_TEMPLATES
        for char in HOSTILE
        # %1F separates namespace levels: inside a namespace it is no character of a name.
        if not (char == "\x1f" and kind == "namespace")
    ],
)
def test_hostile_names_in_the_path_are_refused_without_echoing_them(
    template: str, kind: str, char: str
) -> None:
    parsed = parse_catalog_path(template.format(x=_escape(f"a{char}b")))
    assert parsed.refusal is not None
    if char != "\x00":  # NUL: refused before, with every path (C-string truncation)
        assert parsed.refusal.startswith(f"Malformed request: a {kind} name contains ")
    assert parsed.refusal.isprintable()  # no control character echoed
    assert decide(parsed, "GET") is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("namespaces/a*b", "a namespace name contains '*'"),
        ("namespaces/a$b/tables/t", "a namespace name contains '$'"),
        ("namespaces/ns/tables/it's", "a table name contains a quote"),
        ("namespaces/ns/views/a%3Fb", "a view name contains '?'"),
        ("namespaces/ns/tables/line%0Abreak", "a table name contains a control character"),
        ("namespaces/ns/tables/a%C2%85b", "a table name contains a control character"),
        ("namespaces/%FF/tables/t", "a namespace name is not valid UTF-8"),
        ("namespaces/ns/tables/%C0%AF", "a table name is not valid UTF-8"),
    ],
)
def test_the_refusal_names_what_is_wrong(path: str, message: str) -> None:
    refusal = parse_catalog_path(path).refusal
    assert refusal is not None and message in refusal


@pytest.mark.parametrize("name", FINE)
def test_names_the_rule_allows_pass(name: str) -> None:
    parsed = parse_catalog_path(f"wh/namespaces/{_escape(name)}/tables/{_escape(name)}")
    assert parsed.refusal is None
    assert (parsed.namespace, parsed.name) == ((name,), name)
    assert name_refusal("table", name) is None


def test_a_prefix_is_no_identifier() -> None:
    # The warehouse prefix is the catalog's business (the fence judges it), not a name.
    assert parse_catalog_path("w%24h/namespaces").refusal is None


@pytest.mark.parametrize(
    ("query", "refused"),
    [
        ("", False),
        ("parent=a%1Fb&pageSize=10", False),
        ("parent=d%C3%A9j%C3%A0", False),
        ("parent=a%2Ab", True),
        ("parent=ok%1Fa%24b", True),
        ("pageToken=x&parent=a%0Ab", True),
        ("%70arent=a%22b", True),  # the key decoded, as every server reads it
        ("parent=ok&parent=a%60b", True),
        ("parent=%FF", True),
        ("pageToken=a%2Ab", False),  # only parent names a namespace
    ],
)
def test_the_parent_query_of_list_namespaces_follows_the_rule(query: str, refused: bool) -> None:
    refusal = query_refusal(parse_catalog_path("wh/namespaces"), "GET", query)
    assert (refusal is not None) == refused
    if refusal is not None:
        assert refusal.startswith("Malformed request: a namespace name ")
    # other routes and methods carry no parent
    assert query_refusal(parse_catalog_path("wh/namespaces"), "POST", query) is None
    assert query_refusal(parse_catalog_path("wh/namespaces/ns/tables"), "GET", query) is None


BODIES = {
    "createNamespace": lambda n: {"namespace": ["ok", n], "properties": {}},
    "createTable": lambda n: {"name": n, "schema": {"type": "struct", "fields": []}},
    "registerTable": lambda n: {"name": n, "metadata-location": "s3://b/m.json"},
    "createView": lambda n: {"name": n, "schema": {}, "view-version": {}},
    "registerView": lambda n: {"name": n, "metadata-location": "s3://b/m.json"},
    "renameTable": lambda n: {
        "source": {"namespace": ["a"], "name": "t"},
        "destination": {"namespace": ["b"], "name": n},
    },
    "renameView": lambda n: {
        "source": {"namespace": [n], "name": "v"},
        "destination": {"namespace": ["b"], "name": "v"},
    },
    "commitTransaction": lambda n: {
        "table-changes": [
            {"identifier": {"namespace": ["a"], "name": "t"}, "requirements": [], "updates": []},
            {"identifier": {"namespace": ["a", n], "name": "u"}, "updates": []},
        ]
    },
}


def test_every_operation_naming_something_in_its_body_is_covered() -> None:
    assert set(BODIES) == set(NAMED_IN_BODY)


@pytest.mark.parametrize("operation", sorted(BODIES))
@pytest.mark.parametrize("char", HOSTILE)
def test_hostile_names_in_bodies_are_refused(operation: str, char: str) -> None:
    for ensure_ascii in (True, False):
        body = json.dumps(BODIES[operation](f"a{char}b"), ensure_ascii=ensure_ascii).encode()
        refusal = body_refusal(operation, body)
        assert refusal is not None and refusal.startswith("Malformed request: a ")
        assert refusal.isprintable()


@pytest.mark.parametrize("operation", sorted(BODIES))
@pytest.mark.parametrize("name", FINE)
def test_fine_names_in_bodies_pass(operation: str, name: str) -> None:
    assert body_refusal(operation, json.dumps(BODIES[operation](name)).encode()) is None


def test_a_namespace_sent_as_one_string_is_judged_as_one_level() -> None:
    # A lenient parser (Jackson's ACCEPT_SINGLE_VALUE_AS_ARRAY) would read it as a level.
    assert body_refusal("createNamespace", b'{"namespace": "a*b"}') is not None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'"a*b"',
        b'{"name": "ok", "name": "a*b"}',  # which one counts depends on the parser
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "a\xff"}',
    ],
)
def test_a_body_we_cannot_read_names_from_is_refused(body: bytes) -> None:
    refusal = body_refusal("createTable", body)
    assert refusal is not None and refusal.startswith("Malformed request: the request body")


@pytest.mark.parametrize(
    "body",
    [
        b"{}",  # what is missing or mistyped is the catalog's to say
        b'{"name": 5}',
        b'{"source": "x", "destination": null}',
    ],
)
def test_what_is_missing_or_mistyped_is_left_to_the_catalog(body: bytes) -> None:
    for operation in NAMED_IN_BODY:
        assert body_refusal(operation, body) is None
