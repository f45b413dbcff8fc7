"""Typed keys for application-wide and per-request state (aiohttp ``AppKey``/``RequestKey``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

# Types only: the keys are names, and importing what they hold at run time would make this
# module, which every handler imports, depend on the whole gateway.
if TYPE_CHECKING:
    import aiohttp
    from prometheus_client import CollectorRegistry

    from .audit.clients import ClientAddresses
    from .audit.queue import AuditQueue
    from .auth.authenticator import Authenticator, AuthOutcome
    from .auth.backoff import AuthBackoff
    from .auth.key_age import KeyAgePolicy
    from .auth.rate_limit import RateLimiter
    from .auth.tokens import TokenService
    from .identity.grant_admin import GrantAdmin
    from .identity.service_users import ServiceUserAdmin
    from .identity.sessions import SessionAdmin
    from .identity.tenants import TenantDirectory
    from .identity.users import UserAdmin
    from .observability.metrics import GatewayMetrics
    from .proxy.configured import Configured
    from .store import Store

__all__ = (
    "GRANTS",
    "AUDIT",
    "AUTH",
    "AUTHENTICATOR",
    "BACKOFF",
    "CATALOG",
    "CLIENTS",
    "CLOCK",
    "CONFIGURED",
    "DECIDED",
    "HTTP_SESSION",
    "KEY_POLICY",
    "METRICS",
    "METRICS_REGISTRY",
    "RATES",
    "REQUEST_ID",
    "ROUTE",
    "SERVICE_USERS",
    "SESSIONS",
    "STORE",
    "TENANTS",
    "TOKENS",
    "USERS",
)

# The settings in force and the catalogs' forwarders, which a reload replaces (see there).
CONFIGURED: web.AppKey[Configured] = web.AppKey("pangolin.configured")
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("pangolin.clock")
STORE: web.AppKey[Store] = web.AppKey("pangolin.store")
TOKENS: web.AppKey[TokenService] = web.AppKey("pangolin.tokens")
AUTHENTICATOR: web.AppKey[Authenticator] = web.AppKey("pangolin.authenticator")
BACKOFF: web.AppKey[AuthBackoff] = web.AppKey("pangolin.backoff")
KEY_POLICY: web.AppKey[KeyAgePolicy] = web.AppKey("pangolin.key_policy")
RATES: web.AppKey[RateLimiter] = web.AppKey("pangolin.rates")
SERVICE_USERS: web.AppKey[ServiceUserAdmin] = web.AppKey("pangolin.service_users")
USERS: web.AppKey[UserAdmin] = web.AppKey("pangolin.users")
GRANTS: web.AppKey[GrantAdmin] = web.AppKey("pangolin.grants")
SESSIONS: web.AppKey[SessionAdmin] = web.AppKey("pangolin.sessions")
TENANTS: web.AppKey[TenantDirectory] = web.AppKey("pangolin.tenants")
AUDIT: web.AppKey[AuditQueue] = web.AppKey("pangolin.audit")
CLIENTS: web.AppKey[ClientAddresses] = web.AppKey("pangolin.clients")
HTTP_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("pangolin.http_session")
METRICS_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("pangolin.metrics_registry")
METRICS: web.AppKey[GatewayMetrics] = web.AppKey("pangolin.metrics")

REQUEST_ID: web.RequestKey[str] = web.RequestKey("pangolin.request_id")
AUTH: web.RequestKey[AuthOutcome] = web.RequestKey("pangolin.auth")
# The configured catalog a request is for ("-" for none or an unknown one) and its route
# class (``observability.metrics.ROUTES``): labels for metrics and the access log, never
# client text.
CATALOG: web.RequestKey[str] = web.RequestKey("pangolin.catalog")
ROUTE: web.RequestKey[str] = web.RequestKey("pangolin.route")
# A forward-auth decision's dialect and the original method and path (no query) it was about,
# set once the proxy's secret is checked: the access log names the request decided, not the
# /forward-auth endpoint every decision shares.
DECIDED: web.RequestKey[tuple[str, str, str]] = web.RequestKey("pangolin.decided")
