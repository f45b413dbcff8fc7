"""Validating settings: pure checks of values, with no I/O; ``warnings()`` for risky ones."""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from ..networks import network_problem
from ..routing import RESERVED_CATALOG_NAMES
from ..signing_keys import parse_signing_key
from .models import (
    DEFAULT_ACCESS,
    KEY_AGE_ACTIONS,
    NAME_RE,
    UPSTREAM_AUTH_TYPES,
    UPSTREAM_CLIENTS,
    CatalogSettings,
    RoleHeaderSettings,
    Settings,
    UpstreamAuthSettings,
)

__all__ = ("validate", "warnings")


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
    for name, catalog in sorted(settings.catalogs.items()):
        if catalog.default_access != "write" and not (catalog.warehouse or catalog.prefix):
            found.append(
                f"catalogs.{name}: default_access is {catalog.default_access!r} but no "
                "warehouse is pinned: grants name namespaces, so a grant on 'sales' holds "
                "for 'sales' in every warehouse of the upstream; set warehouse (or prefix)"
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
    if bool(server.tls_cert_file) != bool(server.tls_key_file):
        problems.append("server.tls_cert_file, server.tls_key_file: give both, or neither")
    if not 0 <= server.hsts_seconds <= 2 * 31536000:
        problems.append("server.hsts_seconds: must be between 0 and 63072000")
    if not 0 <= server.drain_seconds <= 3600:  # NaN fails too
        problems.append("server.drain_seconds: must be between 0 and 3600")
    for entry in server.trusted_proxies:
        if problem := network_problem(entry):
            problems.append(f"server.trusted_proxies: {problem}")
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
    # At least twice the step in which a session's last use is written down (TOUCH_SECONDS,
    # 60 s): with less, a busy session would still end at its idle limit.
    if not 120 <= settings.tokens.session_idle_seconds <= settings.tokens.session_lifetime_seconds:
        problems.append(
            "tokens.session_idle_seconds: must be at least 120 and at most"
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
    store = settings.store
    if store.url and urlsplit(store.url).scheme not in ("postgresql", "postgres"):
        problems.append("store.url: must be a postgresql:// URL (or empty for store.path)")
    if store.password and not store.url:
        problems.append("store.password: is the PostgreSQL store's; set store.url as well")
    if not 1 <= store.pool_size <= 100:
        problems.append("store.pool_size: must be between 1 and 100")
    if not math.isfinite(store.outage_grace_seconds) or store.outage_grace_seconds > 3600:
        # Infinite (or NaN, which compares false with everything): a revocation made during
        # an outage would be ignored for as long as the outage lasts.
        problems.append("store.outage_grace_seconds: must be a finite number up to 3600")
    elif store.outage_grace_seconds < 2 * store.change_poll_seconds:
        # Shorter, and one slow poll would turn a healthy store's traffic into 503s.
        problems.append("store.outage_grace_seconds: must be at least twice change_poll_seconds")
    limits = settings.limits
    for name in ("failed_auth_per_key", "failed_auth_per_address"):
        if not 1 <= getattr(limits, name) <= 1_000_000:
            problems.append(f"limits.{name}: must be between 1 and 1000000")
    if not 0 <= limits.requests_per_second <= 1_000_000:  # NaN fails too
        problems.append("limits.requests_per_second: must be between 0 (none) and 1000000")
    if not 0 <= limits.burst <= 10_000_000:
        problems.append("limits.burst: must be between 0 and 10000000")
    if not 0 <= limits.anonymous_per_second <= 1_000_000:  # NaN fails too
        problems.append("limits.anonymous_per_second: must be between 0 (none) and 1000000")
    if not 0 <= limits.anonymous_burst <= 10_000_000:
        problems.append("limits.anonymous_burst: must be between 0 and 10000000")
    if not 1.0 <= limits.failed_auth_window_seconds <= 86400.0:  # NaN fails too
        problems.append("limits.failed_auth_window_seconds: must be between 1 and 86400")
    keys = settings.keys
    if not 0 <= keys.max_age_days <= 36500:
        problems.append("keys.max_age_days: must be between 0 (no maximum) and 36500")
    if keys.max_age_action not in KEY_AGE_ACTIONS:
        problems.append(f"keys.max_age_action: must be one of {', '.join(KEY_AGE_ACTIONS)}")
    if not 0 <= keys.notice_days <= 365:
        problems.append("keys.notice_days: must be between 0 and 365")
    forward_auth = settings.forward_auth
    if forward_auth.secret and settings.role_headers != RoleHeaderSettings():
        # The shipped proxy templates set (and so replace a client's copy of) the default
        # names only: with others, a client's own copy would reach the catalog.
        problems.append(
            "role_headers: forward-auth (forward_auth.secret) needs the default role header "
            "names, the ones the shipped proxy templates set"
        )
    if forward_auth.secret and len(forward_auth.secret) < 32:
        problems.append("forward_auth.secret: must be at least 32 characters (or empty: off)")
    if not 0 <= forward_auth.cache_seconds <= 300:
        problems.append("forward_auth.cache_seconds: must be between 0 (none) and 300")
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
    if catalog.default_access not in DEFAULT_ACCESS:
        problems.append(
            f"{where}.default_access: must be one of {', '.join(DEFAULT_ACCESS)}, "
            f"got {catalog.default_access!r}"
        )
    problems.extend(_validate_upstream_auth(f"{where}.upstream_auth", catalog.upstream_auth))
    read = catalog.upstream_auth_read
    if read.type == "none":
        # A section without a type reads as "none": every read-only caller's request would go
        # upstream with no credential at all, which is never what the section meant.
        problems.append(
            f"{where}.upstream_auth_read.type: must be bearer or oauth2 "
            "(leave the section out for no read-only credential)"
        )
    elif read.is_set:
        problems.extend(_validate_upstream_auth(f"{where}.upstream_auth_read", read))
    return problems


def _validate_upstream_auth(where: str, auth: UpstreamAuthSettings) -> list[str]:
    problems: list[str] = []
    if auth.type not in UPSTREAM_AUTH_TYPES:
        problems.append(f"{where}.type: must be one of {', '.join(UPSTREAM_AUTH_TYPES)}")
    elif auth.type == "bearer" and not auth.token:
        problems.append(f"{where}.token: required for type 'bearer'")
    elif auth.type == "oauth2":
        if not auth.client_id or not auth.client_secret:
            problems.append(f"{where}: client_id and client_secret are required for 'oauth2'")
        if auth.token_url and not _is_http_url(auth.token_url):
            problems.append(f"{where}.token_url: must be an http(s) URL")
    return problems


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)
