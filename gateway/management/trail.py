"""Auditing of refused management actions (successful ones are recorded by the store, in the
same transaction as the change)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..audit.events import record_event
from ..errors import DomainError, GatewayError, describe

__all__ = ("audited",)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def audited(action: str, target_type: str) -> Callable[[Handler], Handler]:
    """Record a failure audit entry when ``handler`` refuses (an error of either tree)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except (GatewayError, DomainError) as exc:
                status, _, message = describe(exc)
                record_event(
                    request,
                    action=action,
                    outcome="failure",
                    target_type=target_type,
                    target_id=request.match_info.get("id"),
                    detail=f"{status}: {message}",
                )
                raise

        return wrapper

    return decorate
