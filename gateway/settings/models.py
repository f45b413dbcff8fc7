"""The settings themselves: frozen dataclasses with their defaults, and the names they allow.

The comments say why a setting exists; ``loading`` reads them from TOML and the environment,
``validation`` checks their values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = (
    "DEFAULT_ACCESS",
    "NAME_RE",
    "UPSTREAM_AUTH_TYPES",
    "UPSTREAM_CLIENTS",
    "CatalogSettings",
    "RoleHeaderSettings",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "TokenSettings",
    "UiSettings",
    "UpstreamAuthSettings",
)

# Catalog and tenant names: lowercase and URL-safe (DuckDB lowercases its endpoint).
NAME_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
UPSTREAM_AUTH_TYPES: Final = ("none", "bearer", "oauth2")
# The HTTP client forwarding to a catalog (proxy.transport): the gateway's lean one, or
# aiohttp's, the control it is measured against and a fallback should the lean one misbehave.
UPSTREAM_CLIENTS: Final = ("lean", "aiohttp")
# What a catalog's tenant's TenantUsers may do without a grant (issue 12): "write" is every
# action (what a TenantUser could do before grants existed: read, commit, create, drop and
# namespace properties), "read" the read action only, "none" nothing (only grants count).
DEFAULT_ACCESS: Final = ("write", "read", "none")


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
    # Peers allowed to set X-Forwarded-For (addresses or CIDRs, IPv4 or IPv6); from anyone
    # else it is replaced, never trusted. The client is then the first hop, from the right,
    # that is not one of them.
    trusted_proxies: tuple[str, ...] = ()
    # Longest request line (method, path, query). The Iceberg spec sets no limit; a namespace
    # of 34 levels of 251 characters, valid in SeaweedFS, needs more than 8 KiB.
    max_request_line_bytes: int = 64 * 1024
    # Longest single header line.
    max_header_bytes: int = 16 * 1024
    # TLS on the listener: PEM files of the certificate (chain) and its private key, both or
    # neither; re-read on SIGHUP without dropping a connection. Relative to the config file.
    tls_cert_file: str = ""
    tls_key_file: str = ""
    # With TLS on, answers carry Strict-Transport-Security with this max-age (0: none).
    hsts_seconds: int = 31536000
    # How long a stopping process (SIGTERM, SIGINT) lets requests in flight finish after it
    # stops accepting connections (a rolling deploy's drain); then it exits.
    drain_seconds: float = 10.0
    # A request head must arrive whole within this many seconds (nginx client_header_timeout).
    header_timeout_seconds: float = 10.0
    # Idle keep-alive connections are closed after this many seconds (nginx: 75).
    keepalive_timeout_seconds: float = 75.0
    # Human session tokens (from /api/v1/login) are for the management API; with this set,
    # they are accepted on catalog routes too.
    allow_sessions_on_catalog_routes: bool = False


@dataclass(frozen=True, slots=True)
class StoreSettings:
    # The embedded SQLite file (one host; its workers share it).
    path: str = "var/pangolin.db"
    # A PostgreSQL database instead (replicas on several hosts share it):
    # postgresql://user@host:5432/db?sslmode=verify-full&sslrootcert=/etc/pangolin/db-ca.pem
    # (TLS as the URL asks: sslmode, sslrootcert, sslcert, sslkey are asyncpg's, as libpq's).
    url: str = ""
    # The database password: from PANGOLIN_STORE__PASSWORD or PANGOLIN_STORE__PASSWORD_FILE (a
    # secret file), never the config file. A password in the URL works too; this one wins.
    password: str = ""
    # Connections per process to PostgreSQL (cache misses and writes; none per request).
    pool_size: int = 10
    # How often each process checks whether another process changed identities (rotation,
    # deactivation ...). This bounds how stale another worker's view can be.
    change_poll_seconds: float = 0.5
    # last_used_at and the requests per day of each service user are counted in memory and
    # written in batches this often (and at shutdown).
    last_used_flush_seconds: float = 30.0
    # Request-path audit records (auth failures, token requests, failed logins) are queued in
    # memory (bounded) and written this often, so recording them never slows a request.
    audit_flush_seconds: float = 1.0
    # While the store cannot be reached, identities already cached keep working this long
    # after the last successful poll; then every authenticated request is 503, so a
    # revocation made during an outage is never ignored for longer.
    outage_grace_seconds: float = 30.0

    def __repr__(self) -> str:
        # The URL may hold the database password, and password is one: never in a log line.
        where = "<postgresql url>" if self.url else repr(self.path)
        return f"StoreSettings({where}, pool_size={self.pool_size})"


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

    @property
    def is_set(self) -> bool:
        """False only for the "not configured" of an optional credential (type "")."""
        return self.type != ""


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
    # A second, read-only upstream credential: requests of callers that may only read what
    # they ask for go upstream with it, so the upstream itself vends read-only storage access
    # and refuses writes. Not set (type ""): such callers' table answers lose their vended
    # storage access instead (proxy.rewrite.strip_storage_credentials).
    upstream_auth_read: UpstreamAuthSettings = field(
        default_factory=lambda: UpstreamAuthSettings(type="")
    )
    # DEFAULT_ACCESS: what the tenant's TenantUsers may do here without a grant.
    default_access: str = "write"
    # Send the upstream a signed identity assertion (X-Pangolin-Assertion: an ES256 JWT of at
    # most 60 s, verifiable with /.well-known/jwks.json), so it can verify who calls without
    # trusting the network; its audience is assertion_audience, or else the catalog's name.
    identity_assertion: bool = False
    assertion_audience: str = ""


@dataclass(frozen=True, slots=True)
class KeySettings:
    # The longest a service user's key may go unrotated (the documented "rotate at least
    # every 90 days"), in days; 0: no maximum.
    max_age_days: int = 0
    # KEY_AGE_ACTIONS: "warn" (answers say when the key should be rotated by) or "refuse"
    # (a key past the maximum age is refused like an expired one, and so are its tokens).
    max_age_action: str = "warn"
    # From this many days before a key passes the maximum age, or before its service user
    # expires, answers carry X-Pangolin-Key-Expires and X-Pangolin-Key-Notice, and the
    # access log reminds once a day per key.
    notice_days: int = 14


KEY_AGE_ACTIONS: Final = ("warn", "refuse")


@dataclass(frozen=True, slots=True)
class LimitSettings:
    # Backoff after failed authentications (a wrong or unknown API key, a bad token, a client
    # refused at the token endpoint), counted per client address and per (address, key id).
    # Past a budget, a failure is answered 429 with a Retry-After that doubles with each
    # further one (from 1 s, at most the window); past the address's budget, credentials
    # from that address that would need a store read wait for the Retry-After too. A correct
    # credential already in use is never slowed by any of it, and nothing is counted per key
    # id alone: knowing a victim's key id (its public part) gains an attacker nothing. A
    # count ends once failed_auth_window_seconds pass without a failure.
    failed_auth_per_key: int = 10
    failed_auth_per_address: int = 50
    failed_auth_window_seconds: float = 300.0
    # Every service user's request rate limit, unless its own says otherwise: a token bucket
    # of requests_per_second (0: no limit) holding up to burst requests (0: a second's
    # worth). Past it: 429 with Retry-After. Shared by the workers of an instance at once,
    # and by replicas on one store within a flush or two (store.audit_flush_seconds).
    requests_per_second: float = 0.0
    burst: int = 0
    # Requests with no credential at all (health checks, discovery, the UI's login page,
    # 401s), per client address (IPv6: per /64): a token bucket as above; 0: no limit. Off by
    # default: behind a load balancer without server.trusted_proxies every client shares
    # its address.
    anonymous_per_second: float = 0.0
    anonymous_burst: int = 0


@dataclass(frozen=True, slots=True)
class ForwardAuthSettings:
    # The forward-auth endpoints (/forward-auth/nginx, /traefik, /envoy/...), on only when
    # this is set: the shared secret the proxy sends in X-Pangolin-Forward-Auth. Their
    # answers hold the upstream credential the proxy must add, so nothing else may ask.
    # Meant for PANGOLIN_FORWARD_AUTH__SECRET_FILE; at least 32 characters.
    secret: str = ""
    # Lets the proxy cache an allow decision this long (Cache-Control: private, max-age);
    # 0: never. A revocation then reaches requests the proxy decides from its cache only
    # after this many seconds.
    cache_seconds: int = 0

    def __repr__(self) -> str:
        return (
            f"ForwardAuthSettings(secret={'<set>' if self.secret else '<off>'}, "
            f"cache_seconds={self.cache_seconds})"
        )


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
    limits: LimitSettings = field(default_factory=LimitSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    forward_auth: ForwardAuthSettings = field(default_factory=ForwardAuthSettings)
    catalogs: Mapping[str, CatalogSettings] = field(default_factory=dict)

    @property
    def store_path(self) -> Path:
        return Path(self.store.path)
