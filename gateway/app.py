"""The application factory: wires settings, store, tokens, authentication and forwarding.

Resources live in ``cleanup_ctx`` contexts, so what was set up is torn down in reverse order,
and only if its set-up succeeded: the store (flushing ``last_used`` on the way out), then the
upstream clients: one keep-alive transport per catalog for forwarding and its ``/readyz``
probe (the lean ``UpstreamClient``, or ``AiohttpTransport`` where the catalog's ``client`` says
so), and one ``ClientSession`` for upstream token requests (no cookie jar, so one user's
upstream cookies can never reach another).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.aiohttp import make_aiohttp_handler

from . import catalog, discovery, forward_auth, health, management
from .audit.clients import ClientAddresses
from .audit.queue import AuditQueue
from .auth.assertions import IdentityAssertions
from .auth.authenticator import Authenticator
from .auth.backoff import AuthBackoff
from .auth.key_age import KeyAgePolicy
from .auth.rate_limit import LocalRates, RateLimiter, Rates
from .auth.tokens import TokenService
from .connection import handler_args
from .identity.grant_admin import GrantAdmin
from .identity.service_users import ServiceUserAdmin
from .identity.sessions import SessionAdmin
from .identity.tenants import TenantDirectory
from .identity.users import UserAdmin
from .middleware import gateway_middleware
from .observability.metrics import GatewayMetrics
from .proxy import (
    AiohttpTransport,
    Forwarder,
    HeaderPolicy,
    UpstreamClient,
    UpstreamTransport,
    make_upstream_auth,
)
from .proxy.configured import Configured
from .routing import ICEBERG_METHODS
from .settings import CatalogSettings, Settings
from .state import (
    AUDIT,
    AUTHENTICATOR,
    BACKOFF,
    CLIENTS,
    CLOCK,
    CONFIGURED,
    GRANTS,
    HTTP_SESSION,
    KEY_POLICY,
    METRICS,
    METRICS_REGISTRY,
    RATES,
    SERVICE_USERS,
    SESSIONS,
    STORE,
    TENANTS,
    TOKENS,
    USERS,
)
from .store import Store, make_store
from .ui import setup_ui

__all__ = ("AuthenticatorFactory", "create_app")

AuthenticatorFactory = Callable[
    [Store, TokenService, Callable[[], float], SessionAdmin], Authenticator
]

_LOGGER = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    clock: Callable[[], float] = time.time,
    authenticator: AuthenticatorFactory = Authenticator,
    rates: Rates | None = None,
) -> web.Application:
    """Build the gateway. A ``store`` passed in is used as is (opened, and closed by its owner);
    ``authenticator`` builds what turns a request's credential into a principal (the benchmark
    passes one that lets anonymous requests through: no such switch exists in the product);
    ``rates`` the rate limits' table (the workers of ``--workers N`` share one)."""
    # One registry per app (not prometheus_client's global one), so that several apps in one
    # process, as in the tests, never clash.
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    metrics = GatewayMetrics(registry, settings.catalogs)
    app = web.Application(
        middlewares=[gateway_middleware(metrics, settings)],
        # Only bodies we read whole (the token form) are bound by this; proxied bodies stream
        # and are bound by server.max_body_bytes instead.
        client_max_size=settings.server.max_form_bytes,
        handler_args=handler_args(settings),
    )
    app[CONFIGURED] = Configured(settings)
    app[CLOCK] = clock
    app[METRICS_REGISTRY] = registry
    app[METRICS] = metrics
    app[CLIENTS] = ClientAddresses(settings.server.trusted_proxies)
    app[RATES] = RateLimiter(rates if rates is not None else LocalRates(), clock)
    key_policy = app[KEY_POLICY] = KeyAgePolicy(settings.keys, clock)
    app.on_response_prepare.append(key_policy.on_response_prepare)
    if settings.server.tls_cert_file and settings.server.hsts_seconds:
        app.on_response_prepare.append(_strict_transport(settings.server.hsts_seconds))
    metrics.watch_key_ages(key_policy)
    app.cleanup_ctx.append(_store_context(store, authenticator))
    app.cleanup_ctx.append(_upstream_context)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    # Unauthenticated like the health checks: it holds no key, token, path or id (see metrics).
    app.router.add_get("/metrics", make_aiohttp_handler(registry, disable_compression=True))
    app.router.add_get("/.well-known/jwks.json", discovery.jwks)
    app.router.add_get("/.well-known/oauth-authorization-server", discovery.oauth_metadata)
    app.router.add_routes(management.routes())
    if settings.ui.enabled:
        setup_ui(app)
    if settings.forward_auth.secret:
        app.router.add_get("/forward-auth/nginx", forward_auth.nginx)
        app.router.add_get("/forward-auth/traefik", forward_auth.traefik)
        for method in ICEBERG_METHODS:  # Envoy asks with the client's method and path
            app.router.add_route(
                method, forward_auth.ENVOY_PREFIX + r"/{tail:[\s\S]*}", forward_auth.envoy
            )
    # Only the methods Iceberg uses reach a handler: the router answers any other (TRACE,
    # PROPFIND, ...) with 405 and Allow, which the middleware sends before authenticating.
    # [\s\S]: any path reaches the grammar, a decoded newline included ("." stops at one).
    for method in ICEBERG_METHODS:
        app.router.add_route(method, r"/v1/{tail:[\s\S]*}", catalog.catalog_request)
    return app


def _strict_transport(
    max_age: int,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """Served over TLS: tell browsers (the UI) to come back over HTTPS only."""
    value = f"max-age={max_age}"

    async def add(_request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Strict-Transport-Security"] = value

    return add


def _store_context(
    given: Store | None, make_authenticator: AuthenticatorFactory
) -> Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def context(app: web.Application) -> AsyncIterator[None]:
        settings = app[CONFIGURED].settings  # what it reads is fixed at start
        store = given if given is not None else make_store(settings.store)
        if given is None:
            await store.open()
        try:
            clock = app[CLOCK]
            tokens = await TokenService.load(store, settings.tokens, clock)
            sessions = SessionAdmin(
                store, lifetime_seconds=settings.tokens.session_lifetime_seconds,
                idle_seconds=settings.tokens.session_idle_seconds, clock=clock,
            )  # fmt: skip
            authenticator = make_authenticator(store, tokens, clock, sessions)
            store.add_change_listener(authenticator.invalidate)
            audit = AuditQueue(store)
            app[STORE], app[TOKENS], app[AUTHENTICATOR], app[AUDIT] = (
                store, tokens, authenticator, audit,
            )  # fmt: skip
            app[SERVICE_USERS] = ServiceUserAdmin(store, clock=clock)
            app[USERS] = UserAdmin(store, audit, clock=clock)
            app[SESSIONS] = sessions
            app[TENANTS] = TenantDirectory(store, clock=clock)
            app[GRANTS] = GrantAdmin(store, clock=clock)
            backoff = app[BACKOFF] = AuthBackoff(store, settings.limits, clock)
            app[METRICS].watch(authenticator, audit)
            background = [
                asyncio.create_task(
                    authenticator.run_background(
                        settings.store.change_poll_seconds,
                        settings.store.last_used_flush_seconds,
                        settings.store.outage_grace_seconds,
                    ),
                    name="pangolin-identity-refresh",
                ),
                asyncio.create_task(
                    audit.run(settings.store.audit_flush_seconds), name="pangolin-audit-writer"
                ),
                asyncio.create_task(
                    backoff.run(settings.store.audit_flush_seconds), name="pangolin-backoff"
                ),
                asyncio.create_task(
                    app[RATES].run(store, settings.store.audit_flush_seconds),
                    name="pangolin-rate-counts",
                ),
                asyncio.create_task(app[KEY_POLICY].run(store), name="pangolin-key-ages"),
            ]
            try:
                yield
            finally:
                for task in background:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                # Nothing recorded in memory is lost on a clean shutdown.
                await authenticator.flush_last_used()
                await audit.flush()
                await backoff.flush()
                await app[RATES].flush(store)
        finally:
            if given is None:
                await store.close()

    return context


async def _upstream_context(app: web.Application) -> AsyncIterator[None]:
    configured = app[CONFIGURED]
    max_body_bytes = configured.settings.server.max_body_bytes
    session = aiohttp.ClientSession(
        auto_decompress=False,  # pass bodies through byte for byte, Content-Encoding intact
        cookie_jar=aiohttp.DummyCookieJar(),
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30),
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
    )
    app[HTTP_SESSION] = session
    metrics = app[METRICS]
    assertions = IdentityAssertions(app[TOKENS], configured.settings.tokens.issuer, app[CLOCK])

    # One keep-alive pool per catalog (see proxy.transport); the shared aiohttp session serves
    # the upstream token requests, whose token_url may be another origin. A reload builds
    # forwarders the same way (proxy.configured).
    def forwarder(name: str, catalog: CatalogSettings, headers: HeaderPolicy) -> Forwarder:
        metrics.add_catalog(name)
        return Forwarder(
            _transport(catalog),
            catalog,
            make_upstream_auth(catalog, session, catalog.upstream_auth),
            headers,
            max_body_bytes=max_body_bytes,
            clients=app[CLIENTS],
            stats=metrics.upstream(name),
            read_auth=(
                make_upstream_auth(catalog, session, catalog.upstream_auth_read)
                if catalog.upstream_auth_read.is_set
                else None
            ),
            assertion=(
                functools.partial(assertions.for_principal, catalog=name,
                                  audience=catalog.assertion_audience or name)
                if catalog.identity_assertion
                else None
            ),
        )  # fmt: skip

    configured.start(forwarder)
    try:
        yield
    finally:
        await configured.close()
        await session.close()


def _transport(catalog: CatalogSettings) -> UpstreamTransport:
    """The forwarding client the catalog's ``client`` setting names (validated by settings)."""
    # Each return is checked by mypy against the Protocol: both satisfy it structurally.
    if catalog.client == "aiohttp":
        return AiohttpTransport(
            catalog.upstream,
            connect_timeout=catalog.connect_timeout_seconds,
            read_timeout=catalog.timeout_seconds,
        )
    return UpstreamClient(
        catalog.upstream,
        connect_timeout=catalog.connect_timeout_seconds,
        read_timeout=catalog.timeout_seconds,
    )
