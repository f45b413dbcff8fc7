"""Settings: frozen dataclasses loaded from TOML, overridden by ``PANGOLIN_*`` variables.

(Over 300 lines: the dataclasses, their loader and the one pure ``validate()``; the split into
a ``settings/`` package of models, loader and validation is still to do.)

Loading reports every problem at once (unknown keys, wrong types, invalid values) in the
style of oauth2-proxy's ``--config-test``: ``SettingsError.problems`` is the whole list.

Environment overrides address keys by path with ``__`` between levels, for example
``PANGOLIN_SERVER__PORT=9090`` or
``PANGOLIN_CATALOGS__DEFAULT__UPSTREAM_AUTH__CLIENT_SECRET=...``. Relative paths in the file
are resolved against the directory of the file, so a config works from any working directory.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from .routing import RESERVED_CATALOG_NAMES
from .signing_keys import parse_signing_key

__all__ = (
    "CatalogSettings",
    "RoleHeaderSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StoreSettings",
    "TokenSettings",
    "UiSettings",
    "UpstreamAuthSettings",
    "load_settings",
    "settings_from_dict",
    "validate",
    "warnings",
)

ENV_PREFIX: Final = "PANGOLIN_"
# Catalog and tenant names: lowercase and URL-safe (DuckDB lowercases its endpoint).
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
UPSTREAM_AUTH_TYPES: Final = ("none", "bearer", "oauth2")
# The HTTP client forwarding to a catalog (proxy.transport): the gateway's lean one, or
# aiohttp's, the control it is measured against and a fallback should the lean one misbehave.
UPSTREAM_CLIENTS: Final = ("lean", "aiohttp")


class SettingsError(Exception):
    """The configuration has problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    # The base URL clients use to reach the gateway (behind a load balancer, say). Empty means
    # "derive it from each request's scheme and Host".
    public_url: str = ""
    # Largest request body forwarded to a catalog; larger ones get 413 before anything is sent.
    max_body_bytes: int = 64 * 1024 * 1024
    # Largest form body accepted by the token endpoint.
    max_form_bytes: int = 64 * 1024
    # Peers allowed to set X-Forwarded-For; from anyone else it is replaced, never trusted.
    trusted_proxies: tuple[str, ...] = ()
    # Longest request line (method, path, query). The Iceberg spec sets no limit; a namespace
    # of 34 levels of 251 characters, valid in SeaweedFS, needs more than 8 KiB.
    max_request_line_bytes: int = 64 * 1024
    # Longest single header line.
    max_header_bytes: int = 16 * 1024
    # A request head must arrive whole within this many seconds (nginx client_header_timeout).
    header_timeout_seconds: float = 10.0
    # Idle keep-alive connections are closed after this many seconds (nginx: 75).
    keepalive_timeout_seconds: float = 75.0
    # Human session tokens (from /api/v1/login) are for the management API; with this set,
    # they are accepted on catalog routes too.
    allow_sessions_on_catalog_routes: bool = False


@dataclass(frozen=True, slots=True)
class StoreSettings:
    path: str = "var/pangolin.db"
    # How often each process checks whether another process changed identities (rotation,
    # deactivation ...). This bounds how stale another worker's view can be.
    change_poll_seconds: float = 0.5
    # last_used_at and the requests per day of each service user are counted in memory and
    # written in batches this often (and at shutdown).
    last_used_flush_seconds: float = 30.0
    # Request-path audit records (auth failures, token requests, failed logins) are queued in
    # memory (bounded) and written this often, so recording them never slows a request.
    audit_flush_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class TokenSettings:
    lifetime_seconds: int = 3600
    # Sessions of human administrators (POST /api/v1/login): absolute lifetime from the
    # login, and how long one may go unused before it ends.
    session_lifetime_seconds: int = 8 * 3600
    session_idle_seconds: int = 30 * 60
    issuer: str = "pangolin-gateway"
    audience: str = "iceberg-catalog"
    # A private EC P-256 JWK (``pangolin-gateway keygen`` makes one) that signs tokens instead
    # of the key kept in the store; meant for PANGOLIN_TOKENS__SIGNING_KEY_FILE, so replicas
    # share it and it lives with the other secrets.
    signing_key: str = ""

    def __repr__(self) -> str:
        return (
            f"TokenSettings(lifetime_seconds={self.lifetime_seconds}, issuer={self.issuer!r}, "
            f"signing_key={'<set>' if self.signing_key else '<store>'})"
        )


@dataclass(frozen=True, slots=True)
class RoleHeaderSettings:
    principal_id: str = "X-Pangolin-Principal-Id"
    principal_name: str = "X-Pangolin-Principal-Name"
    principal_type: str = "X-Pangolin-Principal-Type"
    role: str = "X-Pangolin-Role"
    tenant: str = "X-Pangolin-Tenant"

    def names(self) -> tuple[str, ...]:
        return (self.principal_id, self.principal_name, self.principal_type, self.role, self.tenant)


@dataclass(frozen=True, slots=True)
class UpstreamAuthSettings:
    type: str = "none"
    token: str = ""  # for type = "bearer"
    token_url: str = ""  # for type = "oauth2"; default <upstream>/v1/oauth/tokens
    client_id: str = ""
    client_secret: str = ""
    scope: str = ""

    def __repr__(self) -> str:
        # Upstream secrets must never reach a log line through a repr.
        return f"UpstreamAuthSettings(type={self.type!r}, client_id={self.client_id!r}, ...)"


@dataclass(frozen=True, slots=True)
class CatalogSettings:
    upstream: str = ""
    tenant: str = "default"
    # The upstream warehouse this catalog is (a SeaweedFS table bucket, say): always the one
    # asked for on /v1/config, whatever the client names, so catalogs sharing an upstream and
    # its credential cannot reach each other's tables.
    warehouse: str = ""
    # The upstream's path prefix for that warehouse, when it is not the warehouse's name.
    # With a warehouse (or prefix) set, the catalog is fenced to it (see proxy.scope).
    prefix: str = ""
    connect_timeout_seconds: float = 5.0
    timeout_seconds: float = 300.0
    # The HTTP client that forwards to this upstream (UPSTREAM_CLIENTS): "lean" (the default,
    # measured faster) or "aiohttp" (the well-known one); same timeouts, limits and behaviour.
    client: str = "lean"
    upstream_auth: UpstreamAuthSettings = field(default_factory=UpstreamAuthSettings)


@dataclass(frozen=True, slots=True)
class UiSettings:
    # The admin UI at /ui/ on the gateway's own listener (human administrators log in there).
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    default_catalog: str = "default"
    server: ServerSettings = field(default_factory=ServerSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    tokens: TokenSettings = field(default_factory=TokenSettings)
    role_headers: RoleHeaderSettings = field(default_factory=RoleHeaderSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    catalogs: Mapping[str, CatalogSettings] = field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return Path(self.store.path)


def load_settings(path: Path | str | None, environ: Mapping[str, str]) -> Settings:
    """Read ``path`` (optional), apply ``PANGOLIN_*`` overrides, validate; raise SettingsError."""
    problems: list[str] = []
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path)
        base = path.resolve().parent
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError([f"{path}: file not found"]) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError([f"{path}: cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([f"{path}: not valid TOML: {exc}"]) from None
    _apply_env(data, environ, problems)
    settings = settings_from_dict(data, problems)
    # Semantic checks run even when there are unknown keys or wrong types, so one run lists
    # every problem. A setting already reported as malformed (its default stands in for it)
    # is not reported a second time.
    malformed = [problem.partition(": ")[0] for problem in problems]
    problems.extend(
        problem
        for problem in validate(settings)
        if not any(_within(problem.partition(": ")[0], where) for where in malformed)
    )
    if problems:
        raise SettingsError(problems)
    store_path = Path(settings.store.path)
    if not store_path.is_absolute():
        store = dataclasses.replace(settings.store, path=str(base / store_path))
        settings = dataclasses.replace(settings, store=store)
    return settings


def _within(path: str, where: str) -> bool:
    """Whether settings ``path`` is ``where`` or lies inside it."""
    return path == where or path.startswith(where + ".")


def _apply_env(data: dict[str, Any], environ: Mapping[str, str], problems: list[str]) -> None:
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "PANGOLIN_CONFIG":
            continue
        # Read by the admin CLI, by click (serve --workers) and by the bench switch: not settings.
        if name in ("PANGOLIN_URL", "PANGOLIN_API_KEY", "PANGOLIN_WORKERS"):
            continue
        if name.endswith("_FILE"):
            # Docker/Kubernetes secrets convention: PANGOLIN_X_FILE=/run/secrets/x sets X to
            # the file's content, so secrets need not sit in the environment or the TOML.
            try:
                value = Path(value).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{name}: cannot read {value}: {exc.strerror or exc}")
                continue
            except UnicodeDecodeError:
                problems.append(f"{name}: {value} is not UTF-8 text")
                continue
            name = name[: -len("_FILE")]
        path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__")]
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value


def settings_from_dict(data: Mapping[str, Any], problems: list[str]) -> Settings:
    """Build Settings from plain data, appending type and unknown-key problems."""
    return _build(Settings, data, "", problems)


_T = typing.TypeVar("_T")


def _build(cls: type[_T], data: Any, where: str, problems: list[str]) -> _T:
    if not isinstance(data, Mapping):
        problems.append(f"{where or 'top level'}: expected a table")
        return cls()
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in data.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in fields:
            problems.append(f"{name}: unknown setting")
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(typing.cast(type[Any], hint), raw, name, problems)
        elif typing.get_origin(hint) is Mapping:
            if not isinstance(raw, Mapping):
                problems.append(f"{name}: expected a table")
                continue
            item_cls = typing.get_args(hint)[1]
            values[key] = {
                str(k): _build(item_cls, v, f"{name}.{k}", problems) for k, v in raw.items()
            }
        else:
            ok, value = _coerce(hint, raw)
            if ok:
                values[key] = value
            else:
                problems.append(f"{name}: expected {_describe(hint)}, got {raw!r}")
    return cls(**values)


def _coerce(hint: Any, raw: Any) -> tuple[bool, Any]:
    """Convert a TOML value (or an environment string) to ``hint``."""
    if hint is bool:
        if isinstance(raw, bool):
            return True, raw
        if isinstance(raw, str) and raw.lower() in ("true", "1", "yes", "false", "0", "no"):
            return True, raw.lower() in ("true", "1", "yes")
        return False, None
    if hint is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return True, raw
        if isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return True, int(raw)
        return False, None
    if hint is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return True, float(raw)
        if isinstance(raw, str):
            try:
                return True, float(raw)
            except ValueError:
                return False, None
        return False, None
    if hint is str:
        return (True, raw) if isinstance(raw, str) else (False, None)
    if typing.get_origin(hint) is tuple:
        if isinstance(raw, str):  # environment: comma-separated
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            return True, tuple(raw)
        return False, None
    raise TypeError(f"unsupported settings type {hint!r}")  # a programming error


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is tuple:
        return "a list of strings"
    names: dict[object, str] = {bool: "true or false", int: "an integer", float: "a number"}
    return names.get(hint, "a string")


def warnings(settings: Settings) -> list[str]:
    """Settings that work but are risky; pure. ``check-config`` and ``serve`` say them."""
    found: list[str] = []
    server = settings.server
    if not server.public_url and server.host not in ("127.0.0.1", "localhost", "::1"):
        found.append(
            "server.public_url is empty: published URLs (the OAuth metadata's token_endpoint, "
            "/api/v1/catalogs) are built from each request's Host header; set it to the URL "
            "clients use"
        )
    return found


def validate(settings: Settings) -> list[str]:
    """Every semantic problem in ``settings``; pure, an empty list means valid."""
    problems: list[str] = []
    server = settings.server
    if not 0 <= server.port <= 65535:
        problems.append(f"server.port: {server.port} is not a TCP port (0-65535)")
    if server.public_url and not _is_http_url(server.public_url):
        problems.append("server.public_url: must be an http:// or https:// URL")
    if server.max_body_bytes < 1:
        problems.append("server.max_body_bytes: must be positive")
    if server.max_form_bytes < 1024:
        problems.append("server.max_form_bytes: must be at least 1024")
    if not 8190 <= server.max_request_line_bytes <= 1024 * 1024:
        problems.append("server.max_request_line_bytes: must be from 8190 to 1048576")
    if not 8190 <= server.max_header_bytes <= 1024 * 1024:
        problems.append("server.max_header_bytes: must be from 8190 to 1048576")
    if server.header_timeout_seconds <= 0:
        problems.append("server.header_timeout_seconds: must be positive")
    if server.keepalive_timeout_seconds <= 0:
        problems.append("server.keepalive_timeout_seconds: must be positive")
    if not settings.store.path:
        problems.append("store.path: must not be empty")
    if settings.store.change_poll_seconds <= 0:
        problems.append("store.change_poll_seconds: must be positive")
    if settings.store.audit_flush_seconds <= 0:
        problems.append("store.audit_flush_seconds: must be positive")
    if settings.store.last_used_flush_seconds <= 0:
        problems.append("store.last_used_flush_seconds: must be positive")
    if not 60 <= settings.tokens.lifetime_seconds <= 7 * 86400:
        problems.append("tokens.lifetime_seconds: must be between 60 and 604800")
    if not 60 <= settings.tokens.session_lifetime_seconds <= 7 * 86400:
        problems.append("tokens.session_lifetime_seconds: must be between 60 and 604800")
    if not 60 <= settings.tokens.session_idle_seconds <= settings.tokens.session_lifetime_seconds:
        problems.append(
            "tokens.session_idle_seconds: must be at least 60 and at most"
            " tokens.session_lifetime_seconds"
        )
    if settings.tokens.signing_key:
        try:
            parse_signing_key(settings.tokens.signing_key)
        except ValueError as exc:
            problems.append(f"tokens.signing_key: {exc}")
    if not settings.tokens.issuer:
        problems.append("tokens.issuer: must not be empty")
    if not settings.tokens.audience:
        problems.append("tokens.audience: must not be empty")
    names = [n.lower() for n in settings.role_headers.names()]
    for header in settings.role_headers.names():
        if not re.fullmatch(r"[A-Za-z0-9-]+", header):
            problems.append(f"role_headers: {header!r} is not a valid header name")
    if len(set(names)) != len(names):
        problems.append("role_headers: header names must be distinct")
    if not settings.catalogs:
        problems.append("catalogs: at least one catalog is required")
    for name, catalog in settings.catalogs.items():
        problems.extend(_validate_catalog(name, catalog))
    if settings.default_catalog and settings.default_catalog not in settings.catalogs:
        problems.append(f"default_catalog: {settings.default_catalog!r} is not one of the catalogs")
    return problems


def _validate_catalog(name: str, catalog: CatalogSettings) -> list[str]:
    where = f"catalogs.{name}"
    problems: list[str] = []
    if not NAME_RE.fullmatch(name):
        problems.append(
            f"{where}: catalog names must be lowercase letters, digits, '-' or '_' "
            "(clients such as DuckDB lowercase their endpoint)"
        )
    if name in RESERVED_CATALOG_NAMES:
        problems.append(f"{where}: {name!r} is reserved (it is an Iceberg route segment)")
    if not catalog.upstream:
        problems.append(f"{where}.upstream: required")
    elif not _is_http_url(catalog.upstream):
        problems.append(f"{where}.upstream: must be an http:// or https:// URL")
    segment = re.compile(r"[A-Za-z0-9._~-]+")
    if catalog.prefix and not segment.fullmatch(catalog.prefix):
        problems.append(
            f"{where}.prefix: must be one URL-safe path segment (clients re-encode prefixes)"
        )
    elif catalog.warehouse and not catalog.prefix and not segment.fullmatch(catalog.warehouse):
        problems.append(
            f"{where}.prefix: required when the warehouse is not a plain name "
            "(the upstream's path prefix for it)"
        )
    if not NAME_RE.fullmatch(catalog.tenant):
        # A name no tenant can have would silently leave the catalog to Root alone.
        problems.append(f"{where}.tenant: must be a tenant name (lowercase letters, digits, - _)")
    if catalog.connect_timeout_seconds <= 0 or catalog.timeout_seconds <= 0:
        problems.append(f"{where}: timeouts must be positive")
    if catalog.client not in UPSTREAM_CLIENTS:
        problems.append(
            f"{where}.client: must be one of {', '.join(UPSTREAM_CLIENTS)}, got {catalog.client!r}"
        )
    auth = catalog.upstream_auth
    if auth.type not in UPSTREAM_AUTH_TYPES:
        problems.append(
            f"{where}.upstream_auth.type: must be one of {', '.join(UPSTREAM_AUTH_TYPES)}"
        )
    elif auth.type == "bearer" and not auth.token:
        problems.append(f"{where}.upstream_auth.token: required for type 'bearer'")
    elif auth.type == "oauth2":
        if not auth.client_id or not auth.client_secret:
            problems.append(
                f"{where}.upstream_auth: client_id and client_secret are required for 'oauth2'"
            )
        if auth.token_url and not _is_http_url(auth.token_url):
            problems.append(f"{where}.upstream_auth.token_url: must be an http(s) URL")
    return problems


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
