"""The management API's operations, each declared once: method, path, handler and shapes.

``route_defs()`` registers them and ``openapi.build()`` describes them from the same list, so
a route cannot exist undocumented or be documented with a shape it does not use.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web
from pydantic import BaseModel

__all__ = ("Handler", "Operation", "route_defs")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    status: int
    answer: type[BaseModel] | None  # None: no body (204)
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    # The refusals it may answer, each with the Error shape (401/403 unless public).
    errors: tuple[int, ...] = (400, 401, 403, 404)
    public: bool = False
    no_store: bool = False  # answers carry a secret or a Host-derived URL

    @property
    def path_parameters(self) -> tuple[str, ...]:
        return tuple(part[1:-1] for part in self.path.split("/") if part.startswith("{"))


def route_defs(operations: Iterable[Operation]) -> list[web.RouteDef]:
    return [web.route(op.method, op.path, op.handler) for op in operations]
