"""Recording request-path events in the audit log through the bounded queue (``audit``):
authentication failures, token requests and refused management actions. Never blocks."""

from __future__ import annotations

from aiohttp import web

from ..identity.models import Principal
from ..state import AUDIT, AUTH, CLIENTS, CLOCK
from ..store import AuditRecord, ClientInfo
from .queue import MAX_USER_AGENT

__all__ = ("KEY_TARGET", "client_details", "record_auth_failure", "record_event")

# The target type of a failure recorded against the key id of a refused API key.
KEY_TARGET = "service_user_key"
_MAX_DETAIL = 300
_MAX_TARGET = 200


def _printable(text: str | None, limit: int) -> str | None:
    """Client-influenced text (a path id, an error naming a field) as safe to store: cut to
    ``limit`` and every unprintable character, lone surrogates included, replaced by "?".
    A surrogate cannot be encoded for SQLite, so one such record failed every batch write of
    the queue, for good (and with it GET /api/v1/audit); control characters would reach the
    terminal of whoever reads the log."""
    if not text:
        return None
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


def client_details(request: web.Request) -> ClientInfo:
    """The client's address (``clients``: the peer's, or behind trusted proxies the first
    untrusted X-Forwarded-For hop) and truncated user agent. The user agent is untrusted
    text: it is only ever stored, truncated and made printable, never interpreted."""
    agent = request.headers.get("User-Agent")
    if agent is not None:
        agent = "".join(ch if ch.isprintable() else "?" for ch in agent[:MAX_USER_AGENT])
    return ClientInfo(request.app[CLIENTS].address(request), agent)


def record_event(
    request: web.Request,
    *,
    action: str,
    outcome: str,
    principal: Principal | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    detail: str | None = None,
) -> None:
    """Queue one audit record about ``request``. ``detail`` must never hold a secret."""
    if principal is None:
        principal = request[AUTH].principal if AUTH in request else None
    client = client_details(request)
    request.app[AUDIT].record(
        AuditRecord(
            at=request.app[CLOCK](),
            actor=principal.id if principal is not None else "anonymous",
            action=action,
            target_type=target_type,
            target_id=_printable(target_id, _MAX_TARGET),
            tenant_id=principal.tenant_id if principal is not None else None,
            outcome=outcome,
            client_addr=client.addr,
            user_agent=client.user_agent,
            detail=_printable(detail, _MAX_DETAIL),
        )
    )


def record_auth_failure(request: web.Request, target_type: str, target_id: str | None) -> None:
    """A request refused with 401: why (never the credential itself) and where to."""
    outcome = request[AUTH] if AUTH in request else None
    reason = outcome.reason if outcome is not None else None
    path = request.rel_url.raw_path  # no query: keys never travel there, but be strict
    if outcome is not None and outcome.key_id is not None:
        # A refused API key: recorded against its key id (the path stays in the detail), so
        # the failures show on its service user's page.
        target_type, target_id = KEY_TARGET, outcome.key_id
    record_event(
        request,
        action="auth.failure",
        outcome="failure",
        target_type=target_type,
        target_id=target_id,
        detail=f"{reason or 'missing'}: {request.method} {path}",
    )
