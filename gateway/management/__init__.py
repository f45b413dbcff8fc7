"""The management API under ``/api/v1``: service users, their grants and roles, users,
tenants, audit, who am I, the catalogs a caller may use, and the OpenAPI document of it all.

Handlers authenticate through the same middleware as catalog routes (API key, gateway token,
or a session token from ``/api/v1/login``) and apply the rules in ``access``. Each module
declares its operations once (``operations.Operation``); the routes and the OpenAPI document
are both made from ``ALL_OPERATIONS``.
"""

from __future__ import annotations

from aiohttp import web

from . import audit_log, catalogs, grants, openapi, service_users, tenants, users
from .operations import Operation, route_defs

__all__ = ("ALL_OPERATIONS", "routes")

ALL_OPERATIONS: tuple[Operation, ...] = openapi.with_document(
    (
        *service_users.OPERATIONS,
        *grants.OPERATIONS,
        *users.OPERATIONS,
        *tenants.OPERATIONS,
        *audit_log.OPERATIONS,
        *catalogs.OPERATIONS,
    )
)


def routes() -> list[web.RouteDef]:
    return route_defs(ALL_OPERATIONS)
