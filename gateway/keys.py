"""Typed keys for application-wide and per-request state (aiohttp ``AppKey``/``RequestKey``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from .audit import AuditQueue
from .authn import Authenticator, AuthOutcome
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
    "CLOCK",
    "FORWARDERS",
    "HTTP_SESSION",
    "REQUEST_ID",
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

REQUEST_ID = web.RequestKey("pangolin.request_id", str)
AUTH = web.RequestKey("pangolin.auth", AuthOutcome)
