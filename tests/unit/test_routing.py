"""The one path grammar (``gateway.routing``): every route of the Iceberg REST spec with its
class, methods and answer filter; normalisation; and the path forms it refuses."""

from __future__ import annotations

import pytest

from gateway.routing import ICEBERG_METHODS, ROUTES, UNKNOWN, parse_catalog_path, parse_request_path

# Every path of the spec (iceberg-clients-on-the-wire §1.7): (method, path, operationId,
# route class, answers filtered as). Paths are written as clients send them after /v1/.
SPEC_ROUTES = [
    ("GET", "config", "getConfig", "config", "config"),
    ("POST", "oauth/tokens", "getToken", "token", None),
    ("GET", "wh/namespaces", "listNamespaces", "namespace", None),
    ("POST", "wh/namespaces", "createNamespace", "namespace", None),
    ("GET", "wh/namespaces/a%1Fb", "loadNamespaceMetadata", "namespace", None),
    ("HEAD", "wh/namespaces/a%1Fb", "namespaceExists", "namespace", None),
    ("DELETE", "wh/namespaces/a%1Fb", "dropNamespace", "namespace", None),
    ("POST", "wh/namespaces/ns/properties", "updateProperties", "namespace", None),
    ("GET", "wh/namespaces/ns/tables", "listTables", "table", "table"),
    ("POST", "wh/namespaces/ns/tables", "createTable", "table", "table"),
    ("POST", "wh/namespaces/ns/register", "registerTable", "table", "table"),
    ("GET", "wh/namespaces/ns/tables/t", "loadTable", "table", "table"),
    ("HEAD", "wh/namespaces/ns/tables/t", "tableExists", "table", "table"),
    ("POST", "wh/namespaces/ns/tables/t", "updateTable", "table", "table"),
    ("DELETE", "wh/namespaces/ns/tables/t", "dropTable", "table", "table"),
    ("POST", "wh/namespaces/ns/tables/t/unregister", "unregisterTable", "table", None),
    ("GET", "wh/namespaces/ns/tables/t/credentials", "loadCredentials", "table", None),
    ("POST", "wh/namespaces/ns/tables/t/plan", "planTableScan", "table", None),
    ("GET", "wh/namespaces/ns/tables/t/plan/p1", "fetchPlanningResult", "table", None),
    ("DELETE", "wh/namespaces/ns/tables/t/plan/p1", "cancelPlanning", "table", None),
    ("POST", "wh/namespaces/ns/tables/t/tasks", "fetchScanTasks", "table", None),
    ("POST", "wh/namespaces/ns/tables/t/metrics", "reportMetrics", "table", None),
    ("POST", "wh/namespaces/ns/tables/t/sign", "signRequest", "table", None),
    ("POST", "wh/tables/rename", "renameTable", "table", None),
    ("POST", "wh/transactions/commit", "commitTransaction", "table", None),
    ("GET", "wh/namespaces/ns/views", "listViews", "view", "table"),
    ("POST", "wh/namespaces/ns/views", "createView", "view", "table"),
    ("GET", "wh/namespaces/ns/views/v", "loadView", "view", "table"),
    ("HEAD", "wh/namespaces/ns/views/v", "viewExists", "view", "table"),
    ("POST", "wh/namespaces/ns/views/v", "replaceView", "view", "table"),
    ("DELETE", "wh/namespaces/ns/views/v", "dropView", "view", "table"),
    ("POST", "wh/views/rename", "renameView", "view", None),
    ("POST", "wh/namespaces/ns/register-view", "registerView", "view", "table"),
    ("GET", "wh/namespaces/ns/functions", "listFunctions", "other", None),
    ("GET", "wh/namespaces/ns/functions/f", "loadFunction", "other", None),
]


@pytest.mark.parametrize(("method", "path", "operation", "klass", "answers"), SPEC_ROUTES)
def test_every_spec_route_has_its_operation_class_and_answer_filter(
    method: str, path: str, operation: str, klass: str, answers: str | None
) -> None:
    parsed = parse_catalog_path(path)
    assert parsed.refusal is None
    assert parsed.route.operations[method] == operation
    assert parsed.route.klass == klass
    assert parsed.route.answers == answers


def test_the_table_lists_every_spec_route_once() -> None:
    templates = {parse_catalog_path(path).route.template for _, path, *_ in SPEC_ROUTES}
    assert templates == set(ROUTES)
    operations = [op for route in ROUTES.values() for op in route.operations.values()]
    assert sorted(operations) == sorted(op for _, _, op, _, _ in SPEC_ROUTES)


@pytest.mark.parametrize(
    ("path", "prefix", "klass"),
    [
        ("namespaces", None, "namespace"),
        ("namespaces/tables", None, "namespace"),  # a namespace named "tables"
        ("namespaces/tables/tables/views", None, "table"),  # table "views" in "tables"
        ("wh/a%2Fb/namespaces/ns/tables/t/metrics", "wh/a%2Fb", "table"),  # DuckDB's %2F
        ("my%2Fpfx/namespaces", "my%2Fpfx", "namespace"),
        ("views/namespaces/ns/views/v", "views", "view"),  # a prefix that is a keyword
        ("something/else", None, "other"),
    ],
)
def test_routes_are_found_after_any_prefix(path: str, prefix: str | None, klass: str) -> None:
    parsed = parse_catalog_path(path)
    assert parsed.refusal is None
    assert (parsed.prefix, parsed.route.klass) == (prefix, klass)


@pytest.mark.parametrize(
    ("raw", "mount", "tail"),
    [
        ("default/v1/config", "default", "config"),
        ("config", None, "config"),
        ("namespaces/v1/tables", None, "namespaces/v1/tables"),  # namespace "v1", no mount
        ("%64efault/v1/%6Eamespaces", "default", "namespaces"),  # unreserved escapes decoded
        ("default/v1/namespaces/a%1fb", "default", "namespaces/a%1Fb"),  # hex upper-cased
        ("default/v1/namespaces/a%20b%3Ac", "default", "namespaces/a%20b%3Ac"),  # others kept
        ("namespaces/a%3ab%7e", None, "namespaces/a%3Ab~"),  # a name's escapes, the same way
    ],
)
def test_paths_are_normalised_once_and_the_mount_split_from_the_normal_form(
    raw: str, mount: str | None, tail: str
) -> None:
    parsed = parse_catalog_path(raw)
    assert parsed.refusal is None
    assert (parsed.mount, parsed.tail) == (mount, tail)


def test_the_token_endpoint_is_recognised_in_the_normal_form_only() -> None:
    assert parse_catalog_path("oauth/tokens").is_token_endpoint
    assert parse_catalog_path("default/v1/oauth/tokens").is_token_endpoint
    assert parse_catalog_path("default/v1/%6Fauth/tokens").is_token_endpoint


@pytest.mark.parametrize(
    "raw",
    [
        # empty segments and trailing slashes (no client sends them)
        "namespaces//ns",
        "namespaces/ns/tables//t",
        "default/v1/namespaces/",
        "default/v1/config/",
        "//config",
        "default/v1//config",
        # path parameters, backslashes, raw non-ASCII, bad escapes
        "config;x",
        "namespaces/ns;jsessionid=1/tables/t",
        "namespaces\\ns",
        "namespaces/é",
        "namespaces/%zz",
        "namespaces/%4",
        # dot segments however encoded
        "namespaces/../config",
        "namespaces/%2e%2e/config",
        "namespaces/%252e%252e/config",
        "namespaces/.",
        # an encoded NUL (C-string truncation)
        "namespaces/a%00b",
        # names breaking the identifier rule (more in test_route_privileges)
        "namespaces/line%0abreak",
        "namespaces/ns/tables/a%2Ab",
        # token endpoint look-alikes
        "default/v1/oauth/tokens.json",
        "default/v1/oauth/tokens%2e",
        "default/v1/oauth/tokens%23",
        "default/v1/oauth/tokens%3F",
        "default/v1/OAuth/Tokens",
        "default/v1/oauth%2Ftokens",
        "default/v1/oauth%252Ftokens",
        "oauth%c0%aftokens",
        "oauth%ef%bc%8ftokens",
        "wh/oauth/tokens",
        "namespaces/x/oauth/tokens",
        # a route that changes when %2F is read as "/"
        "namespaces/ns%2Ftables%2Ft",
        "wh/namespaces/ns%2Fviews%2Fv",
    ],
)
def test_paths_a_lenient_upstream_could_read_differently_are_refused(raw: str) -> None:
    parsed = parse_catalog_path(raw)
    assert parsed.refusal is not None and parsed.refusal.startswith("Malformed request: ")
    assert not parsed.is_token_endpoint


def test_unknown_paths_take_every_iceberg_method_and_have_their_answers_filtered() -> None:
    parsed = parse_catalog_path("wh/something/else")
    assert parsed.route is UNKNOWN
    assert parsed.route.methods == tuple(sorted(ICEBERG_METHODS))
    assert parsed.route.answers == "table"


def test_a_request_path_is_a_catalog_path_only_when_its_raw_form_starts_with_v1() -> None:
    assert parse_request_path("/v1/default/v1/config").route is ROUTES["config"]
    # The router matches the decoded path; the grammar judges the raw one.
    refused = parse_request_path("/%761/default/v1/namespaces")
    assert refused.refusal is not None and refused.route is UNKNOWN
