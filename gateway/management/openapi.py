"""The OpenAPI 3.1 document of the management API, served at ``/api/v1/openapi.json``,
generated from the operations (``operations``) and their pydantic shapes (``schemas``)."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from .. import __version__
from .operations import Operation
from .schemas import Error

__all__ = ("build", "with_document")

_REF: Final = "#/components/schemas/{model}"
# A body that cannot be read at all: too large, or not JSON in UTF-8.
_BODY_ERRORS: Final = (413, 415)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _parameters(op: Operation, schemas: dict[str, Any]) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in op.path_parameters
    ]
    if op.query is not None:
        query = schemas[op.query.__name__]
        parameters += [
            {"name": name, "in": "query", "required": False, "schema": schema}
            for name, schema in query["properties"].items()
        ]
    return parameters


def _operation(op: Operation, schemas: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": "OK"}
    if op.answer is not None:
        answer["content"] = _json(_ref(op.answer))
    responses = {str(op.status): answer}
    errors = (*op.errors, *(_BODY_ERRORS if op.body is not None else ()))
    for code in sorted(set(errors)):
        responses[str(code)] = {"description": "Refused", "content": _json(_ref(Error))}
    if not op.public:
        # Every operation that needs a caller backs off failed credentials (auth.backoff).
        responses["429"] = {
            "description": "Too many failed authentications from this address",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": _json(_ref(Error)),
        }
    described: dict[str, Any] = {
        "operationId": _operation_id(op),
        "summary": op.summary,
        "responses": responses,
    }
    if op.body is not None:
        # Optional when every field is: an empty body then reads as {} (parsing.read_body).
        required = any(field.is_required() for field in op.body.model_fields.values())
        described["requestBody"] = {"required": required, "content": _json(_ref(op.body))}
    parameters = _parameters(op, schemas)
    if parameters:
        described["parameters"] = parameters
    if op.public:
        described["security"] = []
    return described


def _operation_id(op: Operation) -> str:
    """``getServiceUsersById`` for ``GET /api/v1/service-users/{id}``."""
    words = re.findall(r"\{?[a-z]+", op.path.removeprefix("/api/v1/"))
    return op.method.lower() + "".join(
        "By" + word[1:].title() if word.startswith("{") else word.title() for word in words
    )


def _without_null_defaults(schema: Any) -> Any:
    # "Left out" is spelled default=None in the models; in JSON Schema a null default would
    # contradict fields that may not be null, and says nothing for those that may.
    if isinstance(schema, dict):
        return {
            key: _without_null_defaults(value)
            for key, value in schema.items()
            if not (key == "default" and value is None)
        }
    if isinstance(schema, list):
        return [_without_null_defaults(value) for value in schema]
    return schema


def build(operations: Iterable[Operation]) -> dict[str, Any]:
    operations = tuple(operations)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [(Error, "serialization")]
    for op in operations:
        models += [(m, "validation") for m in (op.body, op.query) if m is not None]
        if op.answer is not None:
            models.append((op.answer, "serialization"))
    _, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = _without_null_defaults(top.get("$defs", {}))
    paths: dict[str, Any] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, schemas)
    # Query models are parameters, not components of their own.
    for op in operations:
        if op.query is not None:
            schemas.pop(op.query.__name__, None)
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


def with_document(operations: Iterable[Operation]) -> tuple[Operation, ...]:
    """``operations`` and one more that serves their OpenAPI document (and describes itself:
    every /api/v1 route is in the document, which the tests check)."""

    async def serve(request: web.Request) -> web.Response:
        return web.json_response(described())

    everything = (
        *operations,
        Operation("GET", "/api/v1/openapi.json", serve, "This OpenAPI document", 200, None,
                  errors=(), public=True),
    )  # fmt: skip
    described = functools.cache(lambda: build(everything))
    return everything
