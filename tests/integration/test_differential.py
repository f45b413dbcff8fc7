"""Differential test: through the gateway, every spec-valid Iceberg REST request gets the
answer the catalog itself gives.

Two twin SeaweedFS catalogs start fresh, with the same table bucket and credentials. Each
generated request goes straight to twin A (with A's own OAuth2 token, at the prefixed path
``/v1/{prefix}/...`` that A's ``/v1/config`` names) and through the gateway to twin B (with a
service user's API key, at one of the gateway's path forms), in the same order, so the twins go
through the same history. Both answers must have the same status and, after ``normalise``,
the same body. Every difference is collected, and the test fails once with all of them.

The requests come from a seeded ``random.Random`` walking the routes of the Iceberg REST spec
(configuration, namespaces, tables, commits, renames, views, transactions, metrics, and two
routes SeaweedFS does not implement) over a model of the catalog that follows twin A's
answers, so most requests name things that exist and some name things that do not. Names,
path spellings and bodies vary the way the spec allows: multi-level namespaces joined with
``%1F``, names with spaces, unicode, reserved and control characters, 255-character names,
names that look like route words, percent-encoded letters (``%6Eamespaces`` is
``namespaces``), request lines past 8 KiB. Spec-valid requests that fail (a missing table, a
duplicate namespace, a non-empty namespace dropped) must fail alike. The one difference that
is the gateway's own: a request naming something the identifier rule refuses (``*``, ``?``,
``$``, quotes, control characters, in its path, ``parent`` query or the body of a create,
rename or registration) gets the gateway's 400 whatever twin A answered, and a change twin A
made anyway is made on twin B directly.

The one exception to determinism: a commit that adds a snapshot carries the wall clock as its
``timestamp-ms``, since SeaweedFS refuses snapshot timestamps before the table's last update
and later updates before the last snapshot (a masked field; the outcome does not depend on it).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import re
import secrets
import string
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest

from gateway.demo.seaweedfs import SeaweedFS, free_ports

from ..live import LiveGateway, SeaweedUpstream

pytestmark = pytest.mark.seaweedfs

SEED: Final = 20260601
MAX_REQUESTS: Final = 280
WAREHOUSE: Final = "warehouse"  # the table bucket, and the gateway catalog's warehouse
HOST: Final = "127.0.0.1"

Json = Any
Namespace = tuple[str, ...]
Ident = tuple[Namespace, str]
Rewrite = Literal["config", "table"] | None

# ---------------------------------------------------------------------------------------------
# Normalisation: what may legitimately differ between the two answers.
# ---------------------------------------------------------------------------------------------

# The gateway's documented rewrites (design.md §7, gateway/proxy/rewrite.py), applied to twin
# A's successful answers to predict what the gateway must pass on. /v1/config loses what would
# send clients around the gateway or hand them the upstream's auth, and names the catalog's
# prefix; table and view answers lose the session credentials in their ``config``.
# One rule for both (keys matched case-insensitively): /v1/config's defaults and overrides, and
# the config map of table and view answers.
DROPPED: Final = frozenset(
    {"uri", "oauth2-server-uri", "token", "credential", "scope", "s3.signer.uri", "signer.uri"}
)
DROPPED_PREFIXES: Final = (
    "header.", "rest.auth.", "rest.sigv4", "rest.signing", "urn:ietf:params:oauth:token-type:",
)  # fmt: skip

# Values that two independent servers choose for themselves.
_UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_EPOCH_MS: Final = re.compile(r"(?<!\d)\d{13}(?!\d)")  # in messages ("... timestamp 17961...")
_TIMESTAMP_KEYS: Final = frozenset({"last-updated-ms", "timestamp-ms"})
# Vended S3 credentials (keys, session token, its expiry): fresh on every answer.
_CREDENTIAL_KEY: Final = re.compile(r"access-key|secret|session-token|expir", re.IGNORECASE)
# Sets sent as lists (updateProperties' answer), in the server's hash-map order.
_UNORDERED_KEYS: Final = frozenset({"updated", "removed", "missing"})


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def _drop(section: Json) -> None:
    if isinstance(section, dict):
        for key in [
            k for k in section if (low := k.lower()) in DROPPED or low.startswith(DROPPED_PREFIXES)
        ]:
            del section[key]


def gateway_rewrite(doc: Json, rewrite: Rewrite, prefix: str) -> Json:
    """``doc`` (a successful catalog answer) as the gateway documents it passes it on."""
    if not isinstance(doc, dict):
        return doc
    if rewrite == "config" and ("defaults" in doc or "overrides" in doc):
        for section in ("defaults", "overrides"):
            _drop(doc.get(section))
        overrides = doc.setdefault("overrides", {})
        if isinstance(overrides, dict):
            overrides["prefix"] = prefix
    elif rewrite == "table":
        _drop(doc.get("config"))
    return doc


def _mask(value: Json, hosts: Mapping[str, str]) -> Json:
    if isinstance(value, dict):
        masked: dict[str, Json] = {}
        for key, item in value.items():
            if key in _TIMESTAMP_KEYS:
                masked[key] = "<timestamp>"
            elif _CREDENTIAL_KEY.search(key) and isinstance(item, str | int):
                masked[key] = "<credential>"
            elif key in _UNORDERED_KEYS and isinstance(item, list):
                masked[key] = sorted(_mask(item, hosts), key=json.dumps)
            else:
                masked[key] = _mask(item, hosts)
        return masked
    if isinstance(value, list):
        return [_mask(item, hosts) for item in value]
    if isinstance(value, str):
        for literal, placeholder in hosts.items():
            value = value.replace(literal, placeholder)
        return _EPOCH_MS.sub("<ms>", _UUID.sub("<uuid>", value))
    return value


def normalise(
    answer: Answer, hosts: Mapping[str, str], *, rewrite: Rewrite = None, prefix: str = ""
) -> Json:
    """The answer's body as compared: parsed JSON (int64s exact), with ``rewrite`` applied
    when given (only to twin A's answers, only to a 200), then masked:

    - UUIDs anywhere (``table-uuid``, ``view-uuid``, UUIDs quoted in error messages);
    - ``last-updated-ms`` and ``timestamp-ms`` values, and 13-digit epoch milliseconds quoted
      in messages;
    - vended credential values (keys named like ``s3.access-key-id``, ``s3.secret-access-key``,
      ``s3.session-token``, ``...-expires-at-ms``), in ``config`` and ``storage-credentials``
      alike; the keys stay, so a credential one side has and the other lacks still shows;
    - the order of the ``updated``/``removed``/``missing`` lists of updateProperties (sets
      that SeaweedFS lists in hash-map order);
    - each server's own URLs (``hosts``: the twin's S3 endpoint and catalog URL, the gateway's
      URL), replaced by the same placeholder on both sides. Metadata locations are
      ``s3://warehouse/...`` on both twins and are compared as they are.

    An empty body is None; a body that is not JSON is kept as text."""
    if not answer.body:
        return None
    try:
        doc = json.loads(answer.body)
    except ValueError:
        return {"<not JSON>": _mask(answer.body.decode("utf-8", "replace"), hosts)}
    if rewrite is not None and answer.status == 200:
        doc = gateway_rewrite(doc, rewrite, prefix)
    return _mask(doc, hosts)


# ---------------------------------------------------------------------------------------------
# The two ways to reach a catalog.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """Where to send, with which credential, and the host-specific strings its answers may
    carry (literal -> placeholder, see ``normalise``)."""

    port: int
    credential: Mapping[str, str]
    hosts: Mapping[str, str]

    def send(
        self, method: str, path: str, body: bytes | None, headers: Mapping[str, str]
    ) -> Answer:
        # http.client sends the path exactly as given (no re-quoting: %6E stays %6E), and a new
        # connection per request keeps one side's closed connection from touching the next.
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={**headers, **self.credential})
            response = conn.getresponse()
            return Answer(response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            # No complete answer (reset, cut off): a difference to report, not a crash.
            return Answer(0, f"no answer: {type(exc).__name__}: {exc}".encode())
        finally:
            conn.close()


@dataclass(frozen=True)
class Twins:
    direct: Side  # twin A, straight
    gateway: Side  # twin B, through the gateway
    twin_b: Side  # twin B, straight: brings it level when the gateway refused a change
    prefix: str  # what twin A's /v1/config names as the warehouse's prefix


@contextlib.contextmanager
def _twin(data_dir: Path, access_key: str, secret_key: str) -> Iterator[SeaweedUpstream]:
    """``SeaweedUpstream.start`` with credential vending on, so table answers for requests
    with ``X-Iceberg-Access-Delegation`` carry S3 credentials (which the twins mint apart)."""
    server = SeaweedFS(
        data_dir,
        ports=free_ports(),
        access_key=access_key,
        secret_key=secret_key,
        table_bucket=WAREHOUSE,
        vend_credentials=True,
    )
    with server:
        yield SeaweedUpstream(server, access_key, secret_key)


def _hosts(seaweed: SeaweedUpstream, gateway_url: str = "") -> dict[str, str]:
    hosts = {
        seaweed.server.s3_endpoint: "<s3-endpoint>",
        seaweed.server.iceberg_url: "<catalog-url>",
    }
    if gateway_url:
        hosts[gateway_url] = "<gateway-url>"
    return hosts


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twins]:
    # Fresh twins for this module alone: the session's ``seaweed`` has other tests' history.
    access_key = "PGLDIFF" + secrets.token_hex(4).upper()
    secret_key = secrets.token_urlsafe(24)
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(_twin(tmp_path_factory.mktemp("twin-a"), access_key, secret_key))
        b = stack.enter_context(_twin(tmp_path_factory.mktemp("twin-b"), access_key, secret_key))
        gateway = stack.enter_context(LiveGateway.start(tmp_path_factory.mktemp("diff-gw"), b))
        created = gateway.user("diff")
        direct = Side(
            port=a.server.ports.iceberg,
            credential={"Authorization": f"Bearer {a.server.upstream_token()}"},
            hosts=_hosts(a),
        )
        config = direct.send("GET", f"/v1/config?warehouse={WAREHOUSE}", None, {})
        assert config.status == 200, config
        prefix = json.loads(config.body)["overrides"]["prefix"]
        assert prefix == WAREHOUSE, "the gateway's catalog puts unprefixed paths under this"
        through = Side(
            port=int(urlsplit(gateway.url).port or 80),
            credential={"X-API-Key": created.api_key.plaintext()},
            hosts=_hosts(b, gateway.url),
        )
        twin_b = Side(
            port=b.server.ports.iceberg,
            credential={"Authorization": f"Bearer {b.server.upstream_token()}"},
            hosts=_hosts(b),
        )
        yield Twins(direct, through, twin_b, prefix)


# ---------------------------------------------------------------------------------------------
# Requests.
# ---------------------------------------------------------------------------------------------

# How a gateway client may spell a catalog path: under the catalog's mount or at the root (the
# default catalog), without the prefix (the gateway adds it) or with it.
GATEWAY_FORMS: Final = {
    "mount": "/v1/default/v1/{tail}",
    "mount+prefix": "/v1/default/v1/{prefix}/{tail}",
    "root": "/v1/{tail}",
    "root+prefix": "/v1/{prefix}/{tail}",
}


@dataclass(frozen=True)
class Call:
    """One spec request. ``tail`` is the raw path after ``/v1/{prefix}/`` (``config`` for
    getConfig); ``form`` picks the gateway's spelling of the path, and ``prefix`` how a
    prefixed form spells the prefix (twin A gets the same spelling)."""

    op: str  # the spec's operationId
    method: str
    tail: str
    query: str = ""
    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()
    form: str = "mount"
    prefix: str = WAREHOUSE
    target: tuple[Any, ...] = ()  # what the model updates from twin A's answer
    rewrite: Rewrite = None

    def direct_path(self, prefix: str) -> str:
        if self.tail == "config":
            # The gateway asks for its own warehouse, whatever the client named (scope.py).
            return f"/v1/config?warehouse={quote(WAREHOUSE, safe='')}"
        spelled = self.prefix if self.form.endswith("+prefix") else quote(prefix, safe="")
        return self._with_query(f"/v1/{spelled}/{self.tail}")

    def gateway_path(self) -> str:
        if self.tail == "config":
            base = "/v1/default/v1/config" if self.form.startswith("mount") else "/v1/config"
            return self._with_query(base)
        return self._with_query(GATEWAY_FORMS[self.form].format(tail=self.tail, prefix=self.prefix))

    def _with_query(self, path: str) -> str:
        return f"{path}?{self.query}" if self.query else path


ROUTE_WORDS: Final = tuple(
    "v1 config namespaces tables views transactions oauth tokens rename register warehouse "
    "default properties metrics commit".split()
)
EXOTIC_NAMES: Final = (
    "with space", "ünïcödé", "数据", "emoji😀", "a%b", "a/b", "a?b", "a#b", "a+b", "a&b",
    "a;b", "a=b", "a.b", "UPPER", "MiXeD", "a\nb", "a\tb", "a\rb", "a\x00b", "~tilde",
    "'quote'", '"dq"', "a\\b", "_under", "-dash",
)  # fmt: skip
FIELD_TYPES: Final = tuple(
    "long int string boolean double float date timestamp timestamptz decimal(10,2) binary "
    "fixed[4] time".split()
)
# Operations that change the catalog (when they succeed).
MUTATIONS: Final = frozenset(
    "createNamespace dropNamespace updateProperties createTable updateTable renameTable "
    "dropTable registerTable commitTransaction createView replaceView renameView dropView".split()
)
# The gateway's identifier rule (gateway/identifiers.py), written again here: what it refuses
# whatever the catalog would say. \x1f is missing: it separates namespace levels in a path.
HOSTILE_NAME: Final = re.compile(r"[*?$'\"`\x00-\x1e\x7f-\x9f]")
NAMED_IN_BODY: Final = frozenset(
    "createNamespace createTable registerTable createView registerView renameTable renameView"
    .split()
)  # fmt: skip
PLAIN_FIRST: Final = string.ascii_lowercase + string.digits
PLAIN_REST: Final = string.ascii_lowercase + string.digits + "_-"


@dataclass
class Model:
    """The catalog as twin A's answers describe it (dicts: insertion-ordered, deterministic)."""

    namespaces: dict[Namespace, None] = field(default_factory=dict)
    tables: dict[Ident, dict[str, Json]] = field(default_factory=dict)  # last LoadTableResult
    views: dict[Ident, dict[str, Json]] = field(default_factory=dict)  # last LoadViewResult


class Plan:
    """Generates the requests, one at a time: ``observe`` feeds each answer of twin A back
    before the next request is made, so the next one can name what now exists."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.model = Model()
        self._counter = 0
        self._ops: dict[str, tuple[Callable[[], Call], int]] = {
            "getConfig": (self.get_config, 2),
            "listNamespaces": (self.list_namespaces, 5),
            "createNamespace": (self.create_namespace, 10),
            "loadNamespaceMetadata": (self.load_namespace, 7),
            "namespaceExists": (self.namespace_exists, 4),
            "dropNamespace": (self.drop_namespace, 4),
            "updateProperties": (self.update_properties, 5),
            "listTables": (self.list_tables, 5),
            "createTable": (self.create_table, 10),
            "loadTable": (self.load_table, 9),
            "tableExists": (self.table_exists, 4),
            "updateTable": (self.update_table, 10),
            "renameTable": (self.rename_table, 3),
            "dropTable": (self.drop_table, 3),
            "registerTable": (self.register_table, 2),
            "commitTransaction": (self.commit_transaction, 2),
            "reportMetrics": (self.report_metrics, 2),
            "loadCredentials": (self.load_credentials, 1),
            "planTableScan": (self.plan_table_scan, 1),
            "listViews": (self.list_views, 3),
            "createView": (self.create_view, 4),
            "loadView": (self.load_view, 3),
            "viewExists": (self.view_exists, 2),
            "replaceView": (self.replace_view, 3),
            "renameView": (self.rename_view, 2),
            "dropView": (self.drop_view, 2),
        }

    @property
    def operations(self) -> frozenset[str]:
        return frozenset(self._ops)

    def __iter__(self) -> Iterator[Call]:
        yield from self._opening()
        once = list(self._ops.values())
        self.rng.shuffle(once)
        for make, _ in once:  # every operation at least once
            yield make()
        makers = [make for make, _ in self._ops.values()]
        weights = [weight for _, weight in self._ops.values()]
        while True:
            yield self.rng.choices(makers, weights)[0]()

    def _opening(self) -> Iterator[Call]:
        """A fixed start that builds some state and sends the cases every run must contain."""
        yield self.get_config(query="")
        yield self.get_config(query=f"warehouse={WAREHOUSE}")
        yield self.get_config(query="warehouse=another-warehouse")
        first = (self.plain_name(),)
        yield self.create_namespace(first)
        yield self.create_namespace(first)  # a duplicate: 409
        child = (*first, self.plain_name())
        yield self.create_namespace(child)
        for name in ("v1", "oauth", "n" * 251, "with space", "ünïcödé", "a\nb"):
            yield self.create_namespace((name,))
        yield self.create_table(first, name=self.plain_name())
        yield self.create_table(child, name=self.plain_name())
        yield self.create_table(("oauth",), name="tokens")
        yield self.create_table(("v1",), name="tables")
        yield self.drop_namespace(first)  # holds a table: 409
        yield self.load_table(first, name="no_such_table")  # 404
        yield self.load_namespace(("a\nb",))  # %0A in the path
        yield self.load_namespace((first[0], "a\nb"))
        # A request line over 8 KiB (34 levels of 251 characters), and one just under it.
        yield self.load_namespace(tuple(f"{i:02d}" + "x" * 249 for i in range(34)))
        yield self.load_namespace(tuple(f"{i:02d}" + "y" * 249 for i in range(29)))
        # Percent-encoded letters in route words and the prefix: the same path to a server.
        yield self.call("listNamespaces", "GET", "%6Eamespaces", form="mount")
        yield self.call("listNamespaces", "GET", "%6Eamespaces", form="root")
        yield self.call("listNamespaces", "GET", "%6Eamespaces", form="mount+prefix")
        yield self.call(
            "listNamespaces", "GET", "namespaces", form="mount+prefix", prefix="%77arehouse"
        )
        yield self.call(
            "listTables", "GET", f"namespaces/{self.ns_path(first)}/t%61bles", form="mount"
        )

    # -- building blocks ----------------------------------------------------------------------

    def call(
        self,
        op: str,
        method: str,
        tail: str,
        *,
        query: str = "",
        body: Json = None,
        headers: Mapping[str, str] | None = None,
        target: tuple[Any, ...] = (),
        rewrite: Rewrite = None,
        form: str | None = None,
        prefix: str | None = None,
    ) -> Call:
        rng = self.rng
        all_headers = dict(headers or {})
        raw: bytes | None = None
        if body is not None:
            raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode()
            all_headers["Content-Type"] = "application/json"
        if rng.random() < 0.3:
            all_headers["Accept"] = "application/json"
        if method in ("POST", "DELETE") and rng.random() < 0.2:
            all_headers["Idempotency-Key"] = _uuid7(rng)
        if form is None:
            form = rng.choice(list(GATEWAY_FORMS))
        if prefix is None:
            prefix = rng.choice((WAREHOUSE,) * 8 + ("%77arehouse", "wareh%6Fuse"))
        return Call(
            op, method, tail, query, raw, tuple(all_headers.items()), form, prefix, target, rewrite
        )

    def plain_name(self) -> str:
        rng = self.rng
        return rng.choice(PLAIN_FIRST) + "".join(rng.choices(PLAIN_REST, k=rng.randint(0, 11)))

    def new_name(self) -> str:
        """A name for something new: mostly ones SeaweedFS accepts, sometimes any the spec
        allows (SeaweedFS refuses those with 400, which the gateway must pass on)."""
        rng = self.rng
        pick = rng.random()
        if pick < 0.72:
            return self.plain_name()
        if pick < 0.80:
            return rng.choice(ROUTE_WORDS)
        if pick < 0.85:
            return rng.choice(PLAIN_FIRST) * rng.randint(250, 256)  # 256: one past the limit
        return rng.choice(EXOTIC_NAMES)

    def encode(self, name: str) -> str:
        """A path segment: percent-encoded UTF-8, now and then with a letter encoded too."""
        text = quote(name, safe="")
        letters = [i for i, ch in enumerate(text) if ch.isalnum()]
        if letters and self.rng.random() < 0.1:
            i = self.rng.choice(letters)
            text = f"{text[:i]}%{ord(text[i]):02X}{text[i + 1 :]}"
        return text

    def ns_path(self, namespace: Namespace) -> str:
        separator = "%1f" if self.rng.random() < 0.1 else "%1F"
        return separator.join(self.encode(level) for level in namespace)

    def word(self, word: str) -> str:
        """A route word, rarely with one letter percent-encoded (``t%61bles``)."""
        if self.rng.random() < 0.04:
            i = self.rng.randrange(len(word))
            return f"{word[:i]}%{ord(word[i]):02X}{word[i + 1 :]}"
        return word

    def delegation(self) -> dict[str, str]:
        if self.rng.random() < 0.5:
            return {"X-Iceberg-Access-Delegation": "vended-credentials"}
        return {}

    def pick_namespace(self, existing: float = 0.85) -> Namespace:
        if self.model.namespaces and self.rng.random() < existing:
            return self.rng.choice(list(self.model.namespaces))
        if self.model.namespaces and self.rng.random() < 0.3:
            return (*self.rng.choice(list(self.model.namespaces)), self.new_name())
        return (self.new_name(),)

    def pick_table(self, existing: float = 0.85) -> Ident:
        if self.model.tables and self.rng.random() < existing:
            return self.rng.choice(list(self.model.tables))
        return self.pick_namespace(), self.new_name()

    def pick_view(self, existing: float = 0.85) -> Ident:
        if self.model.views and self.rng.random() < existing:
            return self.rng.choice(list(self.model.views))
        return self.pick_namespace(), self.new_name()

    def ns_tail(self, namespace: Namespace, *rest: str) -> str:
        """``namespaces/{namespace}[/rest...]``."""
        return "/".join((self.word("namespaces"), self.ns_path(namespace), *rest))

    def table_tail(self, ident: Ident, kind: str = "tables") -> str:
        namespace, name = ident
        return self.ns_tail(namespace, self.word(kind), self.encode(name))

    def properties(self) -> dict[str, str]:
        rng = self.rng
        keys = ("owner", "comment", "write.format.default", "k", "ключ", "a b", "x.y.z")
        values = ("v", "", "ünï", "1", "with space", "x" * 300, '{"json": true}')
        return {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 3))}

    def schema(self) -> dict[str, Json]:
        rng = self.rng
        names = rng.sample(("id", "name", "ts", "amount", "flag", "day", "tags", "data"), 3)
        fields: list[dict[str, Json]] = []
        next_id = 1
        for name in names[: rng.randint(1, 3)]:
            if name == "tags":
                kind: Json = {
                    "type": "list",
                    "element-id": next_id + 1,
                    "element": "string",
                    "element-required": False,
                }
                fields.append({"id": next_id, "name": name, "required": False, "type": kind})
                next_id += 2
                continue
            fields.append(
                {
                    "id": next_id,
                    "name": name,
                    "required": rng.random() < 0.3,
                    "type": rng.choice(FIELD_TYPES),
                }
            )
            next_id += 1
        return {"type": "struct", "schema-id": 0, "fields": fields}

    # -- operations ---------------------------------------------------------------------------

    def get_config(self, query: str | None = None) -> Call:
        if query is None:
            query = self.rng.choice(
                (
                    "",
                    f"warehouse={WAREHOUSE}",
                    "warehouse=other",
                    "warehouse=s3%3A%2F%2Fwarehouse",
                    "warehouse=",
                )
            )
        return self.call(
            "getConfig",
            "GET",
            "config",
            query=query,
            rewrite="config",
            form=self.rng.choice(("mount", "root")),
        )

    def list_namespaces(self) -> Call:
        rng = self.rng
        query = rng.choice(
            ("", "parent", "parent", "pageSize=1", "pageToken=&pageSize=2", "pageSize=100")
        )
        if query == "parent":
            query = "parent=" + self.ns_path(self.pick_namespace())
        return self.call("listNamespaces", "GET", self.word("namespaces"), query=query)

    def create_namespace(self, namespace: Namespace | None = None) -> Call:
        if namespace is None:
            pick = self.rng.random()
            if pick < 0.15 and self.model.namespaces:
                namespace = self.rng.choice(list(self.model.namespaces))  # duplicate
            else:
                namespace = self.pick_namespace(existing=0.0)
        body = {"namespace": list(namespace), "properties": self.properties()}
        return self.call(
            "createNamespace", "POST", self.word("namespaces"), body=body, target=(namespace,)
        )

    def load_namespace(self, namespace: Namespace | None = None) -> Call:
        namespace = namespace if namespace is not None else self.pick_namespace()
        tail = self.ns_tail(namespace)
        return self.call("loadNamespaceMetadata", "GET", tail)

    def namespace_exists(self) -> Call:
        tail = self.ns_tail(self.pick_namespace())
        return self.call("namespaceExists", "HEAD", tail)

    def drop_namespace(self, namespace: Namespace | None = None) -> Call:
        if namespace is None:
            empty = [ns for ns in self.model.namespaces if not self._holds_anything(ns)]
            if empty and self.rng.random() < 0.6:
                namespace = self.rng.choice(empty)
            else:
                namespace = self.pick_namespace()
        tail = self.ns_tail(namespace)
        return self.call("dropNamespace", "DELETE", tail, target=(namespace,))

    def _holds_anything(self, namespace: Namespace) -> bool:
        inside = [ns for ns, _ in (*self.model.tables, *self.model.views)]
        children = [ns for ns in self.model.namespaces if ns[: len(namespace)] == namespace]
        return namespace in inside or len(children) > 1

    def update_properties(self) -> Call:
        rng = self.rng
        updates = self.properties()
        removals = rng.sample(("owner", "comment", "k", "never-set"), rng.randint(0, 2))
        if updates and rng.random() < 0.15:
            removals.append(next(iter(updates)))  # the same key in both: 422
        tail = self.ns_tail(self.pick_namespace(), "properties")
        return self.call(
            "updateProperties", "POST", tail, body={"removals": removals, "updates": updates}
        )

    def list_tables(self) -> Call:
        query = self.rng.choice(("", "", "pageSize=1", "pageToken=&pageSize=50"))
        tail = self.ns_tail(self.pick_namespace(), self.word("tables"))
        return self.call("listTables", "GET", tail, query=query)

    def create_table(self, namespace: Namespace | None = None, name: str | None = None) -> Call:
        rng = self.rng
        if namespace is None:
            namespace = self.pick_namespace(existing=0.9)
        if name is None:
            taken = [n for ns, n in (*self.model.tables, *self.model.views) if ns == namespace]
            name = rng.choice(taken) if taken and rng.random() < 0.15 else self.new_name()
        schema = self.schema()
        body: dict[str, Json] = {"name": name, "schema": schema}
        first = schema["fields"][0]
        if rng.random() < 0.4 and first["type"] in ("long", "int", "string", "date"):
            transform = rng.choice(("identity", "bucket[8]", "truncate[4]", "void"))
            body["partition-spec"] = {"spec-id": 0, "fields": [
                {"source-id": first["id"], "field-id": 1000, "name": "p0", "transform": transform},
            ]}  # fmt: skip
        if rng.random() < 0.2:
            body["write-order"] = {"order-id": 1, "fields": [
                {"source-id": first["id"], "transform": "identity", "direction": "asc",
                 "null-order": "nulls-first"},
            ]}  # fmt: skip
        if rng.random() < 0.5:
            body["properties"] = self.properties()
        staged = rng.random() < 0.1
        if staged:
            body["stage-create"] = True
        tail = self.ns_tail(namespace, self.word("tables"))
        return self.call(
            "createTable",
            "POST",
            tail,
            body=body,
            headers=self.delegation(),
            target=() if staged else ((namespace, name),),
            rewrite="table",
        )

    def load_table(self, namespace: Namespace | None = None, name: str | None = None) -> Call:
        ident = (
            (namespace, name) if namespace is not None and name is not None else self.pick_table()
        )
        query = self.rng.choice(("", "", "snapshots=all", "snapshots=refs"))
        return self.call(
            "loadTable",
            "GET",
            self.table_tail(ident),
            query=query,
            headers=self.delegation(),
            target=(ident,),
            rewrite="table",
        )

    def table_exists(self) -> Call:
        return self.call("tableExists", "HEAD", self.table_tail(self.pick_table()))

    def update_table(self) -> Call:
        ident = self.pick_table()
        loaded = self.model.tables.get(ident)
        requirements, updates = self._changes(loaded)
        body: dict[str, Json] = {"requirements": requirements, "updates": updates}
        if self.rng.random() < 0.5:
            body["identifier"] = {"namespace": list(ident[0]), "name": ident[1]}
        return self.call(
            "updateTable",
            "POST",
            self.table_tail(ident),
            body=body,
            target=(ident,),
            rewrite="table",
        )

    def _changes(self, loaded: dict[str, Json] | None) -> tuple[list[Json], list[Json]]:
        """(requirements, updates) of a commit to the table ``loaded`` describes."""
        rng = self.rng
        kind = rng.choice(("set", "set", "remove", "schema", "snapshot", "snapshot", "stale"))
        metadata = loaded["metadata"] if loaded else None
        if kind == "set" or metadata is None:
            return [], [{"action": "set-properties", "updates": self.properties() or {"k": "v"}}]
        if kind == "remove":
            return [], [{"action": "remove-properties", "removals": ["k", "owner"]}]
        schema_id = metadata["current-schema-id"]
        if kind == "stale":  # a requirement that no longer holds: 409
            requirement = rng.choice((
                {"type": "assert-table-uuid", "uuid": "00000000-0000-0000-0000-000000000000"},
                {"type": "assert-current-schema-id", "current-schema-id": schema_id + 7},
            ))  # fmt: skip
            return [requirement], [{"action": "set-properties", "updates": {"stale": "yes"}}]
        if kind == "schema":  # a new optional column
            last = metadata["last-column-id"]
            fields = next(s for s in metadata["schemas"] if s["schema-id"] == schema_id)["fields"]
            added = {"id": last + 1, "name": f"c{last + 1}", "required": False,
                     "type": rng.choice(FIELD_TYPES)}  # fmt: skip
            new_id = max(s["schema-id"] for s in metadata["schemas"]) + 1
            schema = {"type": "struct", "schema-id": new_id, "fields": [*fields, added]}
            return (
                [{"type": "assert-current-schema-id", "current-schema-id": schema_id},
                 {"type": "assert-last-assigned-field-id", "last-assigned-field-id": last}],
                [{"action": "add-schema", "schema": schema, "last-column-id": last + 1},
                 {"action": "set-current-schema", "schema-id": -1}],
            )  # fmt: skip
        # A snapshot with an int64 id, on branch main (its manifest list need not exist).
        snapshot_id = rng.getrandbits(63) or 1
        parent = metadata.get("current-snapshot-id", -1)
        snapshot: dict[str, Json] = {
            "snapshot-id": snapshot_id,
            "sequence-number": metadata.get("last-sequence-number", 0) + 1,
            "timestamp-ms": time.time_ns() // 1_000_000,  # see the module docstring
            "manifest-list": f"{metadata['location']}/metadata/snap-{snapshot_id}.avro",
            "summary": {"operation": "append"},
            "schema-id": schema_id,
        }
        if parent not in (None, -1):
            snapshot["parent-snapshot-id"] = parent
        return (
            [{"type": "assert-ref-snapshot-id", "ref": "main",
              "snapshot-id": snapshot.get("parent-snapshot-id")}],
            [{"action": "add-snapshot", "snapshot": snapshot},
             {"action": "set-snapshot-ref", "ref-name": "main", "type": "branch",
              "snapshot-id": snapshot_id}],
        )  # fmt: skip

    def rename_table(self) -> Call:
        source = self.pick_table()
        if self.model.tables and self.rng.random() < 0.15:
            destination = self.rng.choice(list(self.model.tables))  # taken: 409
        else:
            destination = (self.pick_namespace(existing=0.9), self.new_name())
        body = {"source": _ident(source), "destination": _ident(destination)}
        return self.call(
            "renameTable",
            "POST",
            f"{self.word('tables')}/rename",
            body=body,
            target=(source, destination),
        )

    def drop_table(self) -> Call:
        ident = self.pick_table()
        query = self.rng.choice(("", "", "purgeRequested=true", "purgeRequested=false"))
        return self.call(
            "dropTable", "DELETE", self.table_tail(ident), query=query, target=(ident,)
        )

    def register_table(self) -> Call:
        rng = self.rng
        location = "s3://warehouse/nowhere/metadata/v1.metadata.json"
        if self.model.tables and rng.random() < 0.8:
            location = self.model.tables[rng.choice(list(self.model.tables))]["metadata-location"]
        namespace, name = self.pick_namespace(existing=0.9), self.new_name()
        tail = self.ns_tail(namespace, "register")
        return self.call(
            "registerTable",
            "POST",
            tail,
            body={"name": name, "metadata-location": location},
            target=((namespace, name),),
            rewrite="table",
        )

    def commit_transaction(self) -> Call:
        changes = []
        for _ in range(self.rng.randint(1, 2)):
            ident = self.pick_table(existing=0.9)
            changes.append(
                {
                    "identifier": _ident(ident),
                    "requirements": [],
                    "updates": [
                        {"action": "set-properties", "updates": {"txn": str(self._count())}}
                    ],
                }
            )
        return self.call(
            "commitTransaction",
            "POST",
            f"{self.word('transactions')}/commit",
            body={"table-changes": changes},
        )

    def report_metrics(self) -> Call:
        ident = self.pick_table()
        body = {
            "report-type": "commit-report",
            "table-name": ".".join((*ident[0], ident[1])),
            "snapshot-id": self.rng.getrandbits(63),
            "sequence-number": 1,
            "operation": "append",
            "metrics": {},
        }
        return self.call("reportMetrics", "POST", self.table_tail(ident) + "/metrics", body=body)

    def load_credentials(self) -> Call:
        return self.call(
            "loadCredentials", "GET", self.table_tail(self.pick_table()) + "/credentials"
        )

    def plan_table_scan(self) -> Call:
        tail = self.table_tail(self.pick_table()) + "/plan"
        return self.call("planTableScan", "POST", tail, body={"case-sensitive": True})

    def list_views(self) -> Call:
        tail = self.ns_tail(self.pick_namespace(), self.word("views"))
        return self.call("listViews", "GET", tail, query=self.rng.choice(("", "pageSize=1")))

    def _view_version(self, version_id: int, namespace: Namespace) -> dict[str, Json]:
        n = self._count()
        return {
            "version-id": version_id,
            "timestamp-ms": 1_700_000_000_000 + n,
            "schema-id": 0,
            "summary": {"engine-name": "differential"},
            "representations": [{"type": "sql", "sql": f"select {n} as id", "dialect": "spark"}],
            "default-namespace": list(namespace),
        }

    def create_view(self) -> Call:
        rng = self.rng
        namespace = self.pick_namespace(existing=0.9)
        taken = [n for ns, n in (*self.model.tables, *self.model.views) if ns == namespace]
        name = rng.choice(taken) if taken and rng.random() < 0.15 else self.new_name()
        body = {
            "name": name,
            "schema": {
                "type": "struct",
                "schema-id": 0,
                "fields": [{"id": 1, "name": "id", "required": False, "type": "long"}],
            },
            "view-version": self._view_version(1, namespace),
            "properties": self.properties(),
        }
        tail = self.ns_tail(namespace, self.word("views"))
        return self.call(
            "createView", "POST", tail, body=body, target=((namespace, name),), rewrite="table"
        )

    def load_view(self) -> Call:
        ident = self.pick_view()
        return self.call(
            "loadView", "GET", self.table_tail(ident, "views"), target=(ident,), rewrite="table"
        )

    def view_exists(self) -> Call:
        return self.call("viewExists", "HEAD", self.table_tail(self.pick_view(), "views"))

    def replace_view(self) -> Call:
        ident = self.pick_view()
        loaded = self.model.views.get(ident)
        versions = loaded["metadata"]["versions"] if loaded else []
        version_id = max((v["version-id"] for v in versions), default=1) + 1
        requirements: list[Json] = []
        if self.rng.random() < 0.2:
            requirements = [
                {"type": "assert-view-uuid", "uuid": "00000000-0000-0000-0000-000000000000"}
            ]
        body = {
            "requirements": requirements,
            "updates": [
                {
                    "action": "add-view-version",
                    "view-version": self._view_version(version_id, ident[0]),
                },
                {"action": "set-current-view-version", "view-version-id": -1},
                {"action": "set-properties", "updates": self.properties()},
            ],
        }
        return self.call(
            "replaceView",
            "POST",
            self.table_tail(ident, "views"),
            body=body,
            target=(ident,),
            rewrite="table",
        )

    def rename_view(self) -> Call:
        source = self.pick_view()
        destination = (self.pick_namespace(existing=0.9), self.new_name())
        body = {"source": _ident(source), "destination": _ident(destination)}
        return self.call(
            "renameView",
            "POST",
            f"{self.word('views')}/rename",
            body=body,
            target=(source, destination),
        )

    def drop_view(self) -> Call:
        ident = self.pick_view()
        return self.call("dropView", "DELETE", self.table_tail(ident, "views"), target=(ident,))

    def _count(self) -> int:
        self._counter += 1
        return self._counter

    # -- the model follows twin A -------------------------------------------------------------

    def observe(self, call: Call, answer: Answer) -> None:
        model, status, target = self.model, answer.status, call.target
        doc: Json = None
        if answer.status == 200:
            with contextlib.suppress(ValueError):
                doc = json.loads(answer.body)
        op = call.op
        if op == "createNamespace" and isinstance(doc, dict):
            model.namespaces[tuple(doc["namespace"])] = None
        elif op == "dropNamespace" and status == 204:
            model.namespaces.pop(target[0], None)
        elif op in ("createTable", "registerTable", "loadTable", "updateTable") and target:
            if isinstance(doc, dict) and "metadata" in doc:
                model.tables[target[0]] = doc
        elif op in ("createView", "loadView", "replaceView") and isinstance(doc, dict):
            model.views[target[0]] = doc
        elif op == "renameTable" and status == 204 and target[0] in model.tables:
            model.tables[target[1]] = model.tables.pop(target[0])
        elif op == "renameView" and status == 204 and target[0] in model.views:
            model.views[target[1]] = model.views.pop(target[0])
        elif op == "dropTable" and status == 204:
            model.tables.pop(target[0], None)
        elif op == "dropView" and status == 204:
            model.views.pop(target[0], None)


def _ident(ident: Ident) -> dict[str, Json]:
    return {"namespace": list(ident[0]), "name": ident[1]}


def _uuid7(rng: random.Random) -> str:
    value = f"{rng.getrandbits(128):032x}"
    return f"{value[:8]}-{value[8:12]}-7{value[13:16]}-8{value[17:20]}-{value[20:]}"


# ---------------------------------------------------------------------------------------------
# Reporting.
# ---------------------------------------------------------------------------------------------


def _ok(answer: Answer) -> bool:
    return 200 <= answer.status < 300


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else f"{text[:limit]}...(+{len(text) - limit} chars)"


def _show(doc: Json, limit: int = 1600) -> str:
    return _short(json.dumps(doc, sort_keys=True, ensure_ascii=False), limit)


def describe(
    index: int,
    call: Call,
    paths: tuple[str, str],
    answers: tuple[Answer, Answer],
    bodies: tuple[Json, Json],
) -> str:
    (direct_path, gateway_path), (direct, through) = paths, answers
    return (
        f"#{index} {call.op}: {call.method} {_short(gateway_path)}\n"
        f"  direct  {direct.status} {call.method} {_short(direct_path)}\n"
        f"          {_show(bodies[0])}\n"
        f"  gateway {through.status}\n"
        f"          {_show(bodies[1])}"
    )


# ---------------------------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------------------------


def _answer(status: int, doc: Json) -> Answer:
    return Answer(status, json.dumps(doc).encode())


def test_normalise_predicts_the_documented_config_rewrite() -> None:
    upstream = _answer(200, {
        "defaults": {"warehouse": "s3://warehouse", "uri": "http://up", "rest.auth.type": "x"},
        "overrides": {"prefix": "elsewhere", "token": "t", "header.X-Tenant": "a", "scope": "s",
                      "rest.sigv4-enabled": "true", "keep": "me"},
    })  # fmt: skip

    assert normalise(upstream, {}, rewrite="config", prefix="warehouse") == {
        "defaults": {"warehouse": "s3://warehouse"},
        "overrides": {"prefix": "warehouse", "keep": "me"},
    }


def test_normalise_masks_what_two_servers_choose_apart_and_keeps_the_rest() -> None:
    def table(uuid: str, port: int, stamp: int, key: str) -> Answer:
        return _answer(200, {
            "metadata-location": "s3://warehouse/a/t/metadata/v1.metadata.json",
            "metadata": {"table-uuid": uuid, "last-updated-ms": stamp,
                         "current-snapshot-id": 2663087109101640605,
                         "metadata-log": [{"timestamp-ms": stamp}]},
            "config": {"s3.endpoint": f"http://127.0.0.1:{port}", "s3.access-key-id": key,
                       "s3.session-token-expires-at-ms": str(stamp), "token": "upstream"},
        })  # fmt: skip

    first = table("14e1fbce-0637-4fce-96e2-36c5c9f70458", 8333, 1796156852141, "ASIA1")
    second = table("5c022f9b-f51c-4472-a755-c4d2f43eb28b", 9333, 1796156874611, "ASIA2")
    one = normalise(first, {"http://127.0.0.1:8333": "<s3>"}, rewrite="table")
    other = normalise(second, {"http://127.0.0.1:9333": "<s3>"}, rewrite="table")

    assert one == other
    assert one["metadata"]["current-snapshot-id"] == 2663087109101640605  # int64 exact
    assert "token" not in one["config"]  # stripped as the gateway documents
    assert normalise(second, {}) != other  # without the rewrite, the token and port show


def test_normalise_keeps_error_messages_but_not_the_uuids_or_times_in_them() -> None:
    def conflict(uuid: str, stamp: int) -> Answer:
        message = f"UUID mismatch: {uuid} != 0, at {stamp}"
        return _answer(409, {"error": {"message": message, "type": "Commit", "code": 409}})

    masked = normalise(conflict("14e1fbce-0637-4fce-96e2-36c5c9f70458", 1796156852141), {})

    assert masked == normalise(conflict("5c022f9b-f51c-4472-a755-c4d2f43eb28b", 1796156874611), {})
    assert masked["error"]["message"] == "UUID mismatch: <uuid> != 0, at <ms>"
    assert normalise(Answer(400, b"Bad Request"), {}) == {"<not JSON>": "Bad Request"}
    assert normalise(_answer(200, {"updated": ["b", "a"]}), {}) == {"updated": ["a", "b"]}


def _strings(value: Json) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | dict):
        for item in value.values() if isinstance(value, dict) else value:
            yield from _strings(item)


def breaks_identifier_rule(call: Call) -> bool:
    """Whether ``call`` names something the gateway refuses, whatever the catalog says."""
    names = [unquote(call.tail)]
    names += [value for key, value in parse_qsl(call.query) if key == "parent"]
    if call.op in NAMED_IN_BODY and call.body is not None:
        doc = json.loads(call.body)
        for key in ("namespace", "name", "source", "destination"):
            names += _strings(doc.get(key))
    return any(HOSTILE_NAME.search(name) for name in names)


def test_the_identifier_rule_is_told_apart() -> None:
    def create(name: str) -> Call:
        body = json.dumps({"name": name}).encode()
        return Call("createTable", "POST", "namespaces/ns/tables", body=body)

    assert breaks_identifier_rule(create("a$b")) and breaks_identifier_rule(create("a\nb"))
    assert not breaks_identifier_rule(create("ünïcödé"))
    assert not breaks_identifier_rule(create("a b"))
    assert breaks_identifier_rule(Call("loadNamespaceMetadata", "GET", "namespaces/ok%1Fa%0Ab"))
    assert not breaks_identifier_rule(Call("loadNamespaceMetadata", "GET", "namespaces/a%1Fb"))
    assert breaks_identifier_rule(Call("listNamespaces", "GET", "namespaces", query="parent=%27"))


def test_gateway_answers_every_spec_request_as_the_catalog_itself_does(twins: Twins) -> None:
    plan = Plan(random.Random(SEED))
    differences: list[str] = []
    seen: set[str] = set()
    direct_successes = 0
    refused = 0  # by the gateway's identifier rule
    sent = 0
    for sent, call in enumerate(plan, start=1):
        headers = dict(call.headers)
        direct_path, gateway_path = call.direct_path(twins.prefix), call.gateway_path()
        direct = twins.direct.send(call.method, direct_path, call.body, headers)
        through = twins.gateway.send(call.method, gateway_path, call.body, headers)
        plan.observe(call, direct)
        seen.add(call.op)
        direct_successes += _ok(direct)
        expected = normalise(direct, twins.direct.hosts, rewrite=call.rewrite, prefix=twins.prefix)
        actual = normalise(through, twins.gateway.hosts)
        if breaks_identifier_rule(call):
            refused += 1
            error = actual.get("error", {}) if isinstance(actual, dict) else {}
            message = str(error.get("message", ""))
            if through.status != 400 or not message.startswith("Malformed request: "):
                differences.append(
                    describe(sent, call, (direct_path, gateway_path), (direct, through),
                             ({"error": "the gateway's 400"}, actual))
                )  # fmt: skip
            if call.op in MUTATIONS and _ok(direct):
                twins.twin_b.send(call.method, direct_path, call.body, headers)  # level
        elif direct.status != through.status or expected != actual:
            report = describe(
                sent, call, (direct_path, gateway_path), (direct, through), (expected, actual)
            )
            if call.op in MUTATIONS and _ok(direct) and not _ok(through):
                # Twin A changed and twin B did not (an error answer changes nothing): make the
                # same change on B directly, or every later request would differ for this one.
                level = twins.twin_b.send(call.method, direct_path, call.body, headers)
                report += f"\n  (twin B brought level directly: {level.status})"
            differences.append(report)
        if sent == MAX_REQUESTS:
            break
    # The run is meaningful: it reached every operation, and the catalog did real work.
    assert seen == plan.operations, f"operations never sent: {sorted(plan.operations - seen)}"
    assert direct_successes >= sent // 3, f"only {direct_successes} of {sent} requests succeeded"
    assert refused > 0, "no request named something the identifier rule refuses"
    if differences:
        pytest.fail(
            f"{len(differences)} of {sent} requests were answered differently through the "
            "gateway (normalised bodies; see normalise()):\n\n" + "\n\n".join(differences),
            pytrace=False,
        )
