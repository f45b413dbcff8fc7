"""Who is calling: the principal a handler requires, or the refusal every handler gives alike.

The middleware only annotates a request with its authentication outcome; handlers that need a
caller ask here, so catalog routes and the management API refuse in one way: 400 for an
ambiguous request (a credential header repeated, or two credentials naming different
principals: which one a server acts on is exactly what a smuggler exploits), 401 otherwise,
each failure counted and audited.
"""

from __future__ import annotations

from aiohttp import web

from ..audit.events import record_auth_failure
from ..errors import BadRequest, Unauthenticated
from ..identity.models import Principal
from ..state import AUTH
from .credentials import AMBIGUOUS

__all__ = ("require_principal",)


def require_principal(request: web.Request, target_type: str, target_id: str | None) -> Principal:
    outcome = request[AUTH]
    if outcome.principal is not None:
        return outcome.principal
    record_auth_failure(request, target_type, target_id)
    if outcome.reason == AMBIGUOUS.kind:
        raise BadRequest(
            "Malformed request: give one credential (one X-API-Key or one Authorization header)"
        )
    raise Unauthenticated()
