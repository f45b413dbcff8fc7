"""The one path grammar: what a catalog path (everything after ``/v1/``) is.

Every decision about a path is taken here, from one normalised form: the catalog mount, the
token endpoint, the Iceberg route (operation, route class, the methods it takes, which of its
answers are filtered), the prefix the warehouse fence judges, and what goes upstream. A second
reading of the same bytes anywhere else is how a proxy's checks and its upstream come to
disagree, so nothing else in the gateway splits or decodes a catalog path.

Normalisation (RFC 3986 section 6.2.2): percent-encoded unreserved characters are decoded
(``%6Eamespaces`` is ``namespaces``) and the hex of every other escape is upper-cased
(``%1f`` is ``%1F``). The normalised path is what the upstream receives.

Refused with 400, because a lenient upstream (Tomcat, Spring, servlet containers, Go routers
that decode first) could read them differently from us, and no Iceberg client sends them (each
client was observed with and without a trailing ``/`` on its URI):

- empty segments (``//``, a trailing ``/``) and ``;`` path parameters;
- dot segments, however encoded (``..``, ``%2e%2e``, ``%252e``);
- a backslash, raw non-ASCII bytes, a malformed escape, and an encoded NUL (C-string
  truncation);
- anything that resembles the token endpoint without being it: ``oauth/tokens.json``,
  ``tokens%2e``, ``OAuth/Tokens``, ``oauth%2Ftokens``, overlong UTF-8 or fullwidth slashes
  (judged on a *lenient* reading: decoded repeatedly, ``;params`` dropped, ``\\`` as ``/``,
  ``//`` merged, cut at NUL, ``#`` or ``?``, NFKC-folded, lower-cased);
- a path whose Iceberg route changes when ``%2F`` is read as ``/`` (``namespaces/a%2Ftables%2Ft``
  would be ``loadTable`` to an upstream that decodes before routing). A prefix may carry ``%2F``
  (DuckDB sends ``my/pfx`` as ``my%2Fpfx``): the route stays the same;
- a namespace, table, view or function name that breaks the identifier rule (``identifiers``:
  ``*``, ``?``, ``$``, quotes, control characters) or is not UTF-8. Names are read once, here:
  a ``{namespace}`` segment split at ``%1F`` into its levels, each level and name
  percent-decoded as UTF-8.

Every route also carries its privilege (``Privilege``: the level of resource it acts on, the
action of the grant model, whether the body changes the decision), and ``decide`` gives a
parsed path's (route, resource, action): what the grants will be checked against.

(Over 300 lines: the route table and each route's privilege are read row by row together;
one module keeps the grammar in one place, which is its reason to exist.)
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple
from urllib.parse import parse_qsl, unquote, unquote_to_bytes

from .identifiers import name_refusal

__all__ = (
    "ACTIONS",
    "ICEBERG_METHODS",
    "RESERVED_CATALOG_NAMES",
    "ROUTE_CLASSES",
    "ROUTES",
    "ROUTE_KEYWORDS",
    "UNKNOWN",
    "Action",
    "CatalogPath",
    "Decision",
    "Level",
    "Privilege",
    "Route",
    "decide",
    "parse_catalog_path",
    "parse_request_path",
    "query_refusal",
)

# The only methods the Iceberg REST spec uses; any other never reaches a handler (405).
ICEBERG_METHODS: Final = ("GET", "HEAD", "POST", "DELETE")
# Metrics label values (``route`` of the request counters).
ROUTE_CLASSES: Final = ("config", "namespace", "table", "view", "token", "other")
# First segments of Iceberg routes: a catalog with one of these names could not be told apart
# from a default-catalog path such as /v1/namespaces/v1/tables (namespace "v1").
RESERVED_CATALOG_NAMES: Final = frozenset(
    {"namespaces", "tables", "views", "transactions", "config", "oauth", "v1"}
)
# Route keywords that may follow a prefix (and that a path without one starts with).
ROUTE_KEYWORDS: Final = frozenset({"namespaces", "tables", "views", "transactions"})
_UNRESERVED: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE: Final = re.compile(r"%(..)?", re.DOTALL)
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_TOKEN_LOOKALIKE: Final = re.compile(r"(?:^|/)oauth/tokens")
# RFC 3986 pchar and "/" (a path), and "?" too (a query): everything else must be escaped.
_PATH_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*")
_QUERY_CHARS: Final = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*")
# Overlong UTF-8 (C0/C1 lead bytes) spelling an ASCII character, as lenient decoders read it.
_OVERLONG: Final = re.compile(rb"[\xc0\xc1][\x80-\xbf]")


Level = Literal["catalog", "namespace", "table", "view"]
Action = Literal["read", "write", "create", "drop", "manage"]
# The grant model's actions (issue 12) and what holding each one allows.
ACTIONS: Final[Mapping[Action, frozenset[Action]]] = {
    "read": frozenset({"read"}),
    "write": frozenset({"write", "read"}),
    "create": frozenset({"create"}),
    "drop": frozenset({"drop"}),
    "manage": frozenset({"read", "write", "create", "drop", "manage"}),
}


@dataclass(frozen=True, slots=True)
class Privilege:
    """What one operation needs: ``action`` on the resource of ``level`` that its URL names.

    The resource is a tuple of names, ``()`` for the catalog itself: the namespace's levels,
    then the table's or view's name. ``level`` is what the path names, except for
    ``listNamespaces``, whose namespace is the ``parent`` query (the catalog without one).
    ``body_aware``: the body names more resources or raises the action (see each row);
    the decision must read it. ``visibility``: a grant on the resource or anywhere below it
    is enough (ancestors of what one may use are listable and HEAD-able); list answers are
    then filtered to what the caller may see."""

    level: Level
    action: Action
    body_aware: bool = False
    visibility: bool = False


@dataclass(frozen=True, slots=True, eq=False)  # one object per route: compared by identity
class Route:
    """One Iceberg REST route (a path template) and what the gateway does with it."""

    template: str
    klass: str  # a ROUTE_CLASSES value
    operations: Mapping[str, str]  # method -> the spec's operationId
    # Which filter the answers get before a client sees them: "config", "table" or None.
    # "table" strips upstream session credentials from a ``config`` map (see proxy.rewrite).
    answers: str | None
    # method -> what the operation needs; None only for the token endpoint (the gateway's own).
    privileges: Mapping[str, Privilege | None]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(sorted(self.operations))


_NS = "namespaces/{namespace}"
_TABLE = f"{_NS}/tables/{{table}}"
# (template, class, method -> operationId, answers filter)
_ROWS: Final[list[tuple[str, str, dict[str, str], str | None]]] = [
    ("config", "config", {"GET": "getConfig"}, "config"),
    ("oauth/tokens", "token", {"POST": "getToken"}, None),
    ("namespaces", "namespace", {"GET": "listNamespaces", "POST": "createNamespace"}, None),
    (_NS, "namespace",
     {"GET": "loadNamespaceMetadata", "HEAD": "namespaceExists", "DELETE": "dropNamespace"},
     None),
    (f"{_NS}/properties", "namespace", {"POST": "updateProperties"}, None),
    (f"{_NS}/tables", "table", {"GET": "listTables", "POST": "createTable"}, "table"),
    (f"{_NS}/register", "table", {"POST": "registerTable"}, "table"),
    (_TABLE, "table",
     {"GET": "loadTable", "HEAD": "tableExists", "POST": "updateTable", "DELETE": "dropTable"},
     "table"),
    (f"{_TABLE}/unregister", "table", {"POST": "unregisterTable"}, None),
    (f"{_TABLE}/credentials", "table", {"GET": "loadCredentials"}, None),
    (f"{_TABLE}/plan", "table", {"POST": "planTableScan"}, None),
    (f"{_TABLE}/plan/{{plan-id}}", "table",
     {"GET": "fetchPlanningResult", "DELETE": "cancelPlanning"}, None),
    (f"{_TABLE}/tasks", "table", {"POST": "fetchScanTasks"}, None),
    (f"{_TABLE}/metrics", "table", {"POST": "reportMetrics"}, None),
    (f"{_TABLE}/sign", "table", {"POST": "signRequest"}, None),
    ("tables/rename", "table", {"POST": "renameTable"}, None),
    ("transactions/commit", "table", {"POST": "commitTransaction"}, None),
    (f"{_NS}/views", "view", {"GET": "listViews", "POST": "createView"}, "table"),
    (f"{_NS}/views/{{view}}", "view",
     {"GET": "loadView", "HEAD": "viewExists", "POST": "replaceView", "DELETE": "dropView"},
     "table"),
    ("views/rename", "view", {"POST": "renameView"}, None),
    (f"{_NS}/register-view", "view", {"POST": "registerView"}, "table"),
    (f"{_NS}/functions", "other", {"GET": "listFunctions"}, None),
    (f"{_NS}/functions/{{function}}", "other", {"GET": "loadFunction"}, None),
]  # fmt: skip


_P = Privilege
# operationId -> its privilege: ui-grants-forward-auth-postgres §2.5's "GW" column, with the
# issue's model where they differ (said in the row). A route missing here fails the import.
_PRIVILEGES: Final[dict[str, Privilege | None]] = {
    "getConfig": _P("catalog", "read", visibility=True),
    "getToken": None,  # answered by the gateway itself, never forwarded: no grant applies
    "listNamespaces": _P("namespace", "read", visibility=True),  # the parent, or the catalog
    # create on the parent of the body's namespace (the catalog for a top-level one);
    # manage if its properties set a location.
    "createNamespace": _P("catalog", "create", body_aware=True),
    "loadNamespaceMetadata": _P("namespace", "read"),
    "namespaceExists": _P("namespace", "read", visibility=True),
    "dropNamespace": _P("namespace", "drop"),
    "updateProperties": _P("namespace", "manage"),
    "listTables": _P("namespace", "read", visibility=True),
    # manage if the body sets location, write.metadata.path or write.data.path; write too for
    # stage-create (CVE-2026-42809) and, like loadTable, for vended credentials (a header).
    "createTable": _P("namespace", "create", body_aware=True),
    # manage, not create as the issue lists it (§2.5 and §2.6's advice): the metadata-location
    # is arbitrary, so create and read on one namespace would otherwise read any table whose
    # metadata file one can name, by registering it here. manage implies drop (overwrite).
    "registerTable": _P("namespace", "manage"),
    "loadTable": _P("table", "read"),  # read-write storage credentials only with write
    "tableExists": _P("table", "read"),
    # manage if the updates hold set-location or set location/write.*.path properties
    "updateTable": _P("table", "write", body_aware=True),
    "dropTable": _P("table", "drop"),  # purgeRequested=true (the query) also needs write
    "unregisterTable": _P("table", "drop"),  # the table leaves the catalog, like a drop
    "loadCredentials": _P("table", "read"),  # read-write credentials only with write
    "planTableScan": _P("table", "read"),
    "fetchPlanningResult": _P("table", "read"),
    "cancelPlanning": _P("table", "read"),  # cancels a plan the caller could make
    "fetchScanTasks": _P("table", "read"),
    "reportMetrics": _P("table", "read"),  # telemetry: a reader's jobs send it too
    "signRequest": _P("table", "read", body_aware=True),  # write unless the method is GET/HEAD
    # drop on the body's source table and create on its destination namespace; §2.5 allows
    # "drop (or write)" on the source, the issue says drop: write does not imply removing.
    "renameTable": _P("catalog", "drop", body_aware=True),
    # write on every table of table-changes, all or nothing; the catalog (which implies them
    # all) is what the path alone would need.
    "commitTransaction": _P("catalog", "write", body_aware=True),
    "listViews": _P("namespace", "read", visibility=True),
    "createView": _P("namespace", "create", body_aware=True),  # manage if it sets a location
    "loadView": _P("view", "read"),
    "viewExists": _P("view", "read"),
    "replaceView": _P("view", "write", body_aware=True),  # manage with a set-location update
    "dropView": _P("view", "drop"),
    "renameView": _P("catalog", "drop", body_aware=True),  # as renameTable
    "registerView": _P("namespace", "manage"),  # as registerTable: an arbitrary location
    # Not in §2.5. Functions are no resources of the grant model: reading one, or the list,
    # is reading its namespace.
    "listFunctions": _P("namespace", "read"),
    "loadFunction": _P("namespace", "read"),
}


def _route(template: str, klass: str, operations: dict[str, str], answers: str | None) -> Route:
    privileges = {method: _PRIVILEGES[op] for method, op in operations.items()}  # KeyError
    return Route(template, klass, operations, answers, privileges)


# Every route of the Iceberg REST spec (iceberg-clients-on-the-wire §1.7), by template.
ROUTES: Final = {row[0]: _route(*row) for row in _ROWS}
_STALE = set(_PRIVILEGES) - {op for row in _ROWS for op in row[2].values()}
if _STALE:  # a privilege for an operation no route has: the table and the rows disagree
    raise RuntimeError(f"privileges for unknown operations: {sorted(_STALE)}")
# A path that is no spec route: forwarded (under the warehouse fence) with its answers
# filtered like a table's, since nothing says what it holds. Nothing says what it reads or
# changes either, so it needs the strongest right there is: manage on the whole catalog
# (fail closed: a caller confined by grants is refused, full access keeps working).
UNKNOWN: Final = Route(
    "", "other", dict.fromkeys(ICEBERG_METHODS, "unknown"), "table",
    dict.fromkeys(ICEBERG_METHODS, Privilege("catalog", "manage")),
)  # fmt: skip
_PLACEHOLDERS: Final = {"{namespace}": "namespace", "{table}": "table", "{view}": "view",
                        "{function}": "function"}  # fmt: skip
_BY_SHAPE: Final = {
    tuple(s if not s.startswith("{") else "*" for s in template.split("/")): route
    for template, route in ROUTES.items()
}


@dataclass(frozen=True, slots=True)
class CatalogPath:
    """A catalog path after ``/v1/``, read once."""

    mount: str | None  # the catalog named by ``/v1/{mount}/v1/...``; None: the default catalog
    tail: str  # normalised path after the mount: what goes upstream (before the fence)
    route: Route
    prefix: str | None  # the raw prefix segments before the route (None: no prefix)
    refusal: str | None  # why the path is refused (400), or None
    namespace: tuple[str, ...] = ()  # the {namespace} levels, decoded
    name: str | None = None  # the {table}, {view} or {function} name, decoded

    @property
    def is_token_endpoint(self) -> bool:
        return self.route is ROUTES["oauth/tokens"]


def _refused(reason: str) -> CatalogPath:
    return CatalogPath(None, "", UNKNOWN, None, f"Malformed request: {reason}")


def _normalise(raw: str) -> str | None:
    """Unreserved escapes decoded and hex upper-cased; None for a malformed escape."""
    bad = False

    def fix(match: re.Match[str]) -> str:
        nonlocal bad
        hex_ = match.group(1)
        if hex_ is None or not set(hex_) <= _HEX:
            bad = True
            return ""
        char = chr(int(hex_, 16))
        return char if char in _UNRESERVED else f"%{hex_.upper()}"

    normal = _ESCAPE.sub(fix, raw) if "%" in raw else raw
    return None if bad else normal


def _lenient(path: str) -> str:
    """``path`` as the most lenient server might read it (see the module docstring)."""
    text = path
    for _ in range(4):
        data = _OVERLONG.sub(
            lambda m: bytes([((m.group(0)[0] & 0x1F) << 6) | (m.group(0)[1] & 0x3F)]),
            unquote_to_bytes(text),
        )
        once = data.decode("utf-8", "replace")
        if once == text:
            break
        text = once
    text = unicodedata.normalize("NFKC", text).replace("\\", "/")
    for stop in ("\x00", "#", "?"):
        text = text.partition(stop)[0]
    segments = (segment.partition(";")[0].strip() for segment in text.split("/"))
    return "/".join(segment for segment in segments if segment).lower()


def _match(segments: list[str]) -> tuple[Route, int]:
    """The route of ``segments`` and where it starts (the prefix is what comes before)."""
    if segments in (["config"], ["oauth", "tokens"]):
        return ROUTES["/".join(segments)], 0
    for start, segment in enumerate(segments):
        if segment not in ROUTE_KEYWORDS:
            continue
        rest = segments[start:]
        for shape, route in _BY_SHAPE.items():
            if len(shape) == len(rest) and all(
                s == "*" or s == r for s, r in zip(shape, rest, strict=True)
            ):
                return route, start
    return UNKNOWN, 0


def _split_mount(segments: list[str]) -> tuple[str | None, list[str]]:
    # "/v1/namespaces/v1/..." is namespace "v1" of the default catalog, not a mount.
    if len(segments) >= 2 and segments[1] == "v1" and segments[0] not in RESERVED_CATALOG_NAMES:
        return segments[0], segments[2:]
    return None, segments


@functools.lru_cache(maxsize=4096)
def parse_catalog_path(raw: str) -> CatalogPath:
    """Read ``raw``, the raw (still percent-encoded) path after ``/v1/`` without its query.

    A pure function of the path, cached: clients ask for the same few paths over and over,
    and a flood of distinct paths only cycles a bounded cache."""
    if not raw.isascii():
        return _refused("non-ASCII characters in path must be percent-encoded")
    if "\\" in raw or ";" in raw:
        return _refused("path parameters and backslashes are not allowed in paths")
    if not _PATH_CHARS.fullmatch(raw):
        # A raw "#" (which an upstream may read as a fragment and route only what precedes
        # it), a space, quotes, brackets...: RFC 3986 has them percent-encoded in a path.
        return _refused("characters outside RFC 3986 path characters must be percent-encoded")
    normal = _normalise(raw)
    if normal is None:
        return _refused("malformed percent-encoding in path")
    decoded = unquote(normal)
    if "\x00" in decoded:
        return _refused("NUL characters in path")
    segments = normal.split("/")
    if "" in segments:
        return _refused("empty path segments are not allowed")
    lenient = _lenient(normal)
    lenient_segments = lenient.split("/")
    if any(segment in (".", "..") for segment in lenient_segments):
        return _refused("dot segments are not allowed in paths")
    mount, tail_segments = _split_mount(segments)
    if not tail_segments:
        return _refused("empty path segments are not allowed")
    route, start = _match(tail_segments)
    lenient_tail = _split_mount(lenient_segments)[1]
    if route is not ROUTES["oauth/tokens"] and _TOKEN_LOOKALIKE.search("/".join(lenient_tail)):
        return _refused("the path resembles the token endpoint")
    decoded_tail = [s for segment in tail_segments for s in unquote(segment).split("/")]
    if _match(decoded_tail)[0] is not route:
        return _refused("the path reads as another route when %2F is decoded")
    prefix = "/".join(tail_segments[:start]) if start else None
    namespace: tuple[str, ...] = ()
    name = None
    for part, segment in zip(route.template.split("/"), tail_segments[start:], strict=False):
        kind = _PLACEHOLDERS.get(part)
        if kind is None:
            continue
        names = _decode_names(segment.split("%1F") if kind == "namespace" else [segment])
        if names is None:
            return _refused(f"a {kind} name is not valid UTF-8")
        for text in names:
            if (refusal := name_refusal(kind, text)) is not None:
                return CatalogPath(None, "", UNKNOWN, None, refusal)
        if kind == "namespace":
            namespace = tuple(names)
        else:
            name = names[0]
    return CatalogPath(mount, "/".join(tail_segments), route, prefix, None, namespace, name)


def _decode_names(parts: list[str]) -> list[str] | None:
    try:
        return [unquote(part, errors="strict") for part in parts]
    except UnicodeDecodeError:
        return None


def parse_request_path(raw_path: str) -> CatalogPath:
    """Read a request's whole raw path (without its query), which the router matched on its
    decoded form: "/%761/..." reached the catalog route, but only "/v1/..." is one."""
    if not raw_path.startswith("/v1/"):
        return _refused("catalog paths start with /v1/")
    return parse_catalog_path(raw_path[len("/v1/") :])


def _parents(query: str) -> list[tuple[str, ...]] | None:
    """The ``parent`` namespaces of a ``listNamespaces`` query, decoded (None: not UTF-8)."""
    if not query:
        return []
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        return None
    return [tuple(value.split("\x1f")) if value else () for key, value in pairs if key == "parent"]


# Looked up once: query_refusal runs on every catalog request.
_LIST_NAMESPACES_ROUTE: Final = ROUTES["namespaces"]


def query_refusal(path: CatalogPath, method: str, query: str) -> str | None:
    """Why the query is refused (400): a character RFC 3986 has escaped in a query (a raw
    "#" would end it for an upstream that reads fragments), or a ``parent`` namespace of
    ``listNamespaces`` that breaks the identifier rule. Other queries name no resource."""
    if not query:
        return None
    if not _QUERY_CHARS.fullmatch(query):
        return (
            "Malformed request: characters outside RFC 3986 query characters must be "
            "percent-encoded"
        )
    if path.route is not _LIST_NAMESPACES_ROUTE or method != "GET":
        return None
    parents = _parents(query)
    if parents is None:
        return "Malformed request: a namespace name is not valid UTF-8"
    for levels in parents:
        for level in levels:
            if (refusal := name_refusal("namespace", level)) is not None:
                return refusal
    return None


class Decision(NamedTuple):
    """What a request needs: ``action`` on ``resource`` (``()``: the catalog itself)."""

    route: Route
    operation: str  # the spec's operationId
    resource: tuple[str, ...]
    action: Action
    privilege: Privilege


def decide(path: CatalogPath, method: str, query: str = "") -> Decision | None:
    """The privilege a request of ``method`` for ``path`` needs, from its URL alone (the body
    of a ``body_aware`` one can name more; an unknown route needs manage on the catalog).
    None when nothing may be granted: a refused path, a method the route does not take, the
    token endpoint.

    ``query`` matters to ``listNamespaces`` only: its ``parent``, the catalog without one (and
    with several, since an upstream could read any of them)."""
    if path.refusal is not None:
        return None
    privilege = path.route.privileges.get(method)
    if privilege is None:
        return None
    operation = path.route.operations[method]
    resource: tuple[str, ...] = ()
    if operation == "listNamespaces":
        parents = _parents(query)
        resource = parents[0] if parents is not None and len(parents) == 1 else ()
    elif privilege.level == "namespace":
        resource = path.namespace
    elif privilege.level in ("table", "view"):
        assert path.name is not None  # the route's template names it
        resource = (*path.namespace, path.name)
    return Decision(path.route, operation, resource, privilege.action, privilege)
