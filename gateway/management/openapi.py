"""The OpenAPI 3.1 document of the management API, served at ``/api/v1/openapi.json``."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from .. import __version__

__all__ = ("document", "routes")

_ERROR: Final = {"$ref": "#/components/schemas/Error"}
_TIME: Final = {"type": ["string", "null"], "format": "date-time"}
_ROLE: Final = {"type": "string", "enum": ["Root", "TenantAdmin", "TenantUser"]}
_PAGE: Final = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]
_ID: Final = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _op(
    summary: str,
    ok: tuple[int, dict[str, Any] | None],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (400, 401, 403, 404),
    public: bool = False,
) -> dict[str, Any]:
    status, schema = ok
    responses: dict[str, Any] = {
        str(status): {"description": "OK"}
        if schema is None
        else {"description": "OK", "content": {"application/json": {"schema": schema}}}
    }
    for code in errors:
        responses[str(code)] = {
            "description": "Error",
            "content": {"application/json": {"schema": _ERROR}},
        }
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    return op


def _object(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _page_of(name: str) -> dict[str, Any]:
    return _object(
        {
            "items": {"type": "array", "items": _ref(name)},
            "total": {"type": "integer"},
            "limit": {"type": "integer"},
            "offset": {"type": "integer"},
        }
    )


_EXPIRY: Final = {
    "expires_at": {"type": ["string", "null"], "format": "date-time"},
    "expires_in": {"type": ["number", "null"], "description": "seconds from now"},
}


def document() -> dict[str, Any]:
    key_answer = _object({"service_user": _ref("ServiceUser"), "api_key": {"type": "string"}})
    create_su = _object(
        {"name": {"type": "string", "maxLength": 128}, "role": _ROLE,
         "description": {"type": "string", "maxLength": 1024}, "tenant": {"type": "string"},
         **_EXPIRY},
        ("name",),
    )  # fmt: skip
    update_su = _object(
        {"description": {"type": "string"}, "role": _ROLE, "active": {"type": "boolean"},
         **_EXPIRY}
    )  # fmt: skip
    su_filters = [
        {"name": "active", "in": "query", "schema": {"type": "boolean"}},
        {"name": "role", "in": "query", "schema": _ROLE},
        {"name": "tenant", "in": "query", "schema": {"type": "string"}},
        *_PAGE,
    ]
    audit_filters = [
        {"name": name, "in": "query", "schema": {"type": "string"}}
        for name in ("actor", "action", "target", "outcome")
    ] + [{"name": "since", "in": "query", "schema": {"type": "string", "format": "date-time"}}]
    paths: dict[str, Any] = {
        "/api/v1/service-users": {
            "post": _op("Create a service user; the key is in the answer, once",
                        (201, key_answer), body=create_su, errors=(400, 401, 403, 404, 409)),
            "get": _op("List service users", (200, _page_of("ServiceUser")), params=su_filters),
        },
        "/api/v1/service-users/{id}": {
            "get": _op("Get a service user", (200, _ref("ServiceUser")), params=_ID),
            "put": _op("Update description, role, expiry or active", (200, _ref("ServiceUser")),
                       body=update_su, params=_ID),
            "delete": _op("Delete a service user", (204, None), params=_ID),
        },
        "/api/v1/service-users/{id}/rotate": {
            "post": _op("New key, shown once; the old key and its tokens stop working now",
                        (200, key_answer), params=_ID),
        },
        "/api/v1/users": {
            "post": _op("Create a human administrator", (201, _ref("User")),
                        body=_object({"username": {"type": "string"},
                                      "password": {"type": "string", "minLength": 12},
                                      "role": _ROLE, "tenant": {"type": "string"}},
                                     ("username", "password")),
                        errors=(400, 401, 403, 404, 409)),
            "get": _op("List users", (200, _page_of("User")), params=_PAGE),
        },
        "/api/v1/users/{id}": {
            "get": _op("Get a user", (200, _ref("User")), params=_ID),
            "delete": _op("Delete a user", (204, None), params=_ID),
        },
        "/api/v1/users/{id}/password": {
            "put": _op("Change a password (your own needs current_password)", (200, _ref("User")),
                       body=_object({"password": {"type": "string", "minLength": 12},
                                     "current_password": {"type": "string"}}, ("password",)),
                       params=_ID),
        },
        "/api/v1/login": {
            "post": _op("Log in; returns a session token",
                        (200, _object({"token": {"type": "string"},
                                       "token_type": {"type": "string"},
                                       "expires_in": {"type": "integer"},
                                       "user": _ref("User")})),
                        body=_object({"username": {"type": "string"},
                                      "password": {"type": "string"}},
                                     ("username", "password")),
                        errors=(400, 401), public=True),
        },
        "/api/v1/tenants": {
            "post": _op("Create a tenant (Root)", (201, _ref("Tenant")),
                        body=_object({"name": {"type": "string"}}, ("name",)),
                        errors=(400, 401, 403, 409)),
            "get": _op("List tenants", (200, _page_of("Tenant"))),
        },
        "/api/v1/tenants/{id}": {
            "delete": _op("Delete an empty tenant (Root)", (204, None), params=_ID,
                          errors=(401, 403, 404, 409)),
        },
        "/api/v1/me": {"get": _op("Who the caller is", (200, _ref("Me")), errors=(401,))},
        "/api/v1/audit": {
            "get": _op("Audit records, newest first", (200, _page_of("AuditRecord")),
                       params=[*audit_filters, *_PAGE]),
        },
        # Documents itself too: every /api/v1 route is described (checked by the tests).
        "/api/v1/openapi.json": {
            "get": _op("This OpenAPI document", (200, {"type": "object"}), errors=(),
                       public=True),
        },
        "/api/v1/catalogs": {
            "get": _op("Catalogs the caller may use", (200, {"type": "object"}), errors=(401,)),
        },
    }  # fmt: skip
    schemas = {
        "Error": _object(
            {"error": _object({"message": {"type": "string"}, "type": {"type": "string"},
                               "code": {"type": "integer"}}, ("message", "type", "code"))},
            ("error",),
        ),
        "ServiceUser": _object(
            {"id": {"type": "string", "format": "uuid"}, "name": {"type": "string"},
             "description": {"type": "string"}, "tenant": {"type": "string"}, "role": _ROLE,
             "key_id": {"type": "string"}, "active": {"type": "boolean"},
             "created_at": _TIME, "created_by": {"type": ["string", "null"]},
             "expires_at": _TIME, "last_used_at": _TIME, "key_rotated_at": _TIME,
             "key_generation": {"type": "integer"}}
        ),
        "User": _object(
            {"id": {"type": "string"}, "username": {"type": "string"},
             "tenant": {"type": "string"}, "role": _ROLE, "active": {"type": "boolean"},
             "created_at": _TIME, "created_by": {"type": ["string", "null"]},
             "last_login_at": _TIME, "failed_logins": {"type": "integer"},
             "password_changed_at": _TIME}
        ),
        "Tenant": _object({"id": {"type": "string"}, "name": {"type": "string"},
                           "created_at": _TIME}),
        "Me": _object({"id": {"type": "string"}, "name": {"type": "string"},
                       "type": {"type": "string"}, "role": _ROLE, "tenant": {"type": "string"}}),
        "AuditRecord": {"type": "object"},
    }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": "Pangolin Gateway management API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "Bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
    }


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())


def routes() -> list[web.RouteDef]:
    return [web.get("/api/v1/openapi.json", openapi)]
