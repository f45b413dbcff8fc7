"""Auditing of refused management actions (successful ones are recorded by the store, in the
same transaction as the change)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..audit.events import record_event
from ..errors import DomainError, GatewayError, describe

__all__ = ("audited", "record_refusal")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def audited(action: str, target_type: str) -> Callable[[Handler], Handler]:
    """Record a failure audit entry when ``handler`` refuses (an error of either tree)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except (GatewayError, DomainError) as exc:
                record_refusal(request, action, target_type, exc)
                raise

        return wrapper

    return decorate


def record_refusal(
    request: web.Request, action: str, target_type: str, exc: GatewayError | DomainError
) -> None:
    """One failure record for a refused ``action`` (also for a refusal a handler answers
    itself, as the UI does when it shows a form again with the error)."""
    status, _, message = describe(exc)
    record_event(
        request,
        action=action,
        outcome="failure",
        target_type=target_type,
        target_id=request.match_info.get("id"),
        detail=f"{status}: {message}",
    )
