"""Typed keys for application-wide and per-request state (aiohttp ``AppKey``/``RequestKey``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from .audit import AuditQueue
from .authn import Authenticator, AuthOutcome
from .metrics import GatewayMetrics
from .proxy import Forwarder
from .service_users import ServiceUserAdmin
from .settings import Settings
from .store import Store
from .tenants import TenantDirectory
from .tokens import TokenService
from .users import UserAdmin

__all__ = (
    "AUDIT",
    "AUTH",
    "AUTHENTICATOR",
    "CATALOG",
    "CLOCK",
    "FORWARDERS",
    "HTTP_SESSION",
    "METRICS",
    "METRICS_REGISTRY",
    "REQUEST_ID",
    "ROUTE",
    "SERVICE_USERS",
    "SETTINGS",
    "STORE",
    "TENANTS",
    "TOKENS",
    "USERS",
)

SETTINGS = web.AppKey("pangolin.settings", Settings)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("pangolin.clock")
STORE = web.AppKey("pangolin.store", Store)
TOKENS = web.AppKey("pangolin.tokens", TokenService)
AUTHENTICATOR = web.AppKey("pangolin.authenticator", Authenticator)
SERVICE_USERS = web.AppKey("pangolin.service_users", ServiceUserAdmin)
USERS = web.AppKey("pangolin.users", UserAdmin)
TENANTS = web.AppKey("pangolin.tenants", TenantDirectory)
AUDIT = web.AppKey("pangolin.audit", AuditQueue)
HTTP_SESSION = web.AppKey("pangolin.http_session", aiohttp.ClientSession)
FORWARDERS = web.AppKey("pangolin.forwarders", Mapping[str, Forwarder])
METRICS_REGISTRY = web.AppKey("pangolin.metrics_registry", CollectorRegistry)
METRICS = web.AppKey("pangolin.metrics", GatewayMetrics)

REQUEST_ID = web.RequestKey("pangolin.request_id", str)
AUTH = web.RequestKey("pangolin.auth", AuthOutcome)
# The configured catalog a request is for ("-" for none or an unknown one) and its route
# class (``metrics.ROUTES``): labels for metrics and the access log, never client text.
CATALOG = web.RequestKey("pangolin.catalog", str)
ROUTE = web.RequestKey("pangolin.route", str)
