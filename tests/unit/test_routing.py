"""The one path grammar (``gateway.routing``): every route of the Iceberg REST spec with its
class, methods and answer filter; normalisation; and the path forms it refuses."""

from __future__ import annotations

import pytest

from gateway.routing import (
    ICEBERG_METHODS,
    ROUTES,
    UNKNOWN,
    parse_catalog_path,
    parse_request_path,
    query_refusal,
)

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


# -- characters RFC 3986 has percent-encoded (a raw "#" above all) ---------------------------

# What a raw "#" does to a lenient upstream: it reads what follows as a fragment and routes
# only what precedes it ("tables/orders#/metrics" judged as reportMetrics, acted on as a
# commit). The refusal names RFC 3986: not some other rule that happens to catch a case.
RFC_3986 = "characters outside RFC 3986"


def hash_insertions(path: str) -> list[str]:
    """``path`` with a raw "#" at its start, on either side of every "/", and at its end."""
    places = {0, len(path)} | {i + side for i, c in enumerate(path) if c == "/" for side in (0, 1)}
    return [path[:i] + "#" + path[i:] for i in sorted(places)]


@pytest.mark.parametrize(("method", "path", "operation", "klass", "answers"), SPEC_ROUTES)
def test_a_raw_hash_anywhere_in_the_path_of_every_route_is_refused(
    method: str, path: str, operation: str, klass: str, answers: str | None
) -> None:
    for variant in hash_insertions(path):
        parsed = parse_catalog_path(variant)
        assert parsed.refusal is not None and RFC_3986 in parsed.refusal, variant
        assert parsed.route is UNKNOWN and not parsed.is_token_endpoint, variant
        assert parse_request_path(f"/v1/default/v1/{variant}").refusal == parsed.refusal


@pytest.mark.parametrize(
    ("char", "escape"),
    [(" ", "%20"), ('"', "%22"), ("<", "%3C"), (">", "%3E"), ("[", "%5B"), ("]", "%5D"),
     ("{", "%7B"), ("}", "%7D"), ("|", "%7C"), ("^", "%5E"), ("`", "%60"), ("#", "%23")],
)  # fmt: skip
def test_a_raw_character_outside_rfc_3986_path_characters_is_refused_wherever_it_is(
    char: str, escape: str
) -> None:
    for raw in (
        f"namespaces/a{char}b/tables/t",  # in a name
        f"w{char}h/namespaces/ns/tables/t",  # in the prefix
        f"namespaces/ns/tables{char}/t",  # in a keyword
        f"default/v1/config{char}",  # at the end
    ):
        parsed = parse_catalog_path(raw)
        assert parsed.refusal is not None and RFC_3986 in parsed.refusal, raw
    # Percent-encoded, the same character is a name's, for the name rule to judge: quotes
    # are refused by it (test_route_privileges), the others go to the catalog.
    encoded = parse_catalog_path(f"namespaces/a{escape}b/tables/t")
    if char in '"`':
        assert encoded.refusal is not None and "quote" in encoded.refusal
    else:
        assert encoded.refusal is None
        assert (encoded.namespace, encoded.name) == ((f"a{char}b",), "t")
        assert encoded.route is ROUTES["namespaces/{namespace}/tables/{table}"]
    in_prefix = parse_catalog_path(f"w{escape}h/namespaces/ns/tables/t")
    assert (in_prefix.refusal, in_prefix.prefix) == (None, f"w{escape}h")


QUERY_ESCAPES = {char: f"%{ord(char):02X}" for char in '# "<>{}|^`[]'}


@pytest.mark.parametrize(("method", "path", "operation", "klass", "answers"), SPEC_ROUTES)
@pytest.mark.parametrize(
    "query",
    ["#", "pageToken=p1#", "#/metrics", "parent=sales#x", "purgeRequested=false#true",
     "a=b c", 'a="b"', "a=<b>", "a={b}", "a=b|c", "a=b^c", "a=`b`", "a=[b]"],
)  # fmt: skip
def test_a_raw_character_outside_rfc_3986_in_the_query_is_refused_on_every_route(
    method: str, path: str, operation: str, klass: str, answers: str | None, query: str
) -> None:
    parsed = parse_catalog_path(path)

    refusal = query_refusal(parsed, method, query)

    assert refusal is not None and RFC_3986 in refusal
    # Percent-encoded, it ends nothing; "?" and "/" are query characters too.
    encoded = "".join(QUERY_ESCAPES.get(c, c) for c in query) + "&x=a/b?c"
    assert query_refusal(parsed, method, encoded) is None
