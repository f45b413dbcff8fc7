"""The management API under ``/api/v1``: service users, users, tenants, audit, who am I.

Handlers authenticate through the same middleware as catalog routes (API key, gateway token,
or a session token from ``/api/v1/login``) and apply the rules in ``access``.
"""

from __future__ import annotations

from aiohttp import web

from . import audit_log, openapi, service_users, tenants, users

__all__ = ("routes",)


def routes() -> list[web.RouteDef]:
    return [
        *service_users.routes(),
        *users.routes(),
        *tenants.routes(),
        *audit_log.routes(),
        *openapi.routes(),
    ]
