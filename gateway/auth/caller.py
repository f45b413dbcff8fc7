"""Who is calling: the principal a handler requires, or the refusal every handler gives alike.

The middleware only annotates a request with its authentication outcome; handlers that need a
caller ask here, so catalog routes and the management API refuse in one way: 400 for an
ambiguous request (a credential header repeated, or two credentials naming different
principals: which one a server acts on is exactly what a smuggler exploits), 401 otherwise,
each failure counted and audited. A failed credential also counts towards the backoff
(``backoff``): past its budget the answer is 429 with Retry-After, and the backoff's start is
audited once instead of each failure. A good credential may still be refused here: from
outside its allowlist, or past the maximum key age the policy refuses (``refusal``); and a
service user over its rate limit gets 429 (``check_rate_limit``, once per request however
many times a handler asks for its caller).
"""

from __future__ import annotations

import math
from typing import Final

from aiohttp import web

from ..audit.events import KEY_TARGET, record_auth_failure, record_event
from ..errors import BadRequest, TooManyRequests, Unauthenticated
from ..identity.models import Principal
from ..networks import counted_address
from ..state import AUTH, BACKOFF, CLIENTS, CONFIGURED, KEY_POLICY, METRICS, RATES
from .authenticator import ANONYMOUS, HELD, AuthOutcome
from .credentials import AMBIGUOUS
from .rate_limit import retry_after

__all__ = (
    "KEY_TOO_OLD", "NOT_ALLOWED_HERE", "check_anonymous_rate", "check_backoff",
    "check_rate_limit", "refusal", "require_principal",
)  # fmt: skip

RATE_LIMITED: Final = "Rate limit exceeded for this service user; retry later"
ANONYMOUS_LIMITED: Final = "Too many requests without credentials from this address; retry later"

# The reasons of a good credential refused: used from outside its service user's allowlist,
# or a key past the maximum age when the policy refuses such keys.
NOT_ALLOWED_HERE: Final = "address_not_allowed"
KEY_TOO_OLD: Final = "key_too_old"
_RATE_COUNTED: Final[web.RequestKey[bool]] = web.RequestKey("pangolin.rate_counted")


def require_principal(request: web.Request, target_type: str, target_id: str | None) -> Principal:
    outcome = request[AUTH]
    principal = outcome.principal
    if principal is not None:
        refused = refusal(request, principal)
        if refused is None:
            check_rate_limit(request, principal)
            return principal
        # A good credential from outside its allowlist, or a key the policy finds too old:
        # refused like any failed credential (the same 401: nothing tells a thief the key
        # is good), audited against its owner.
        outcome = request[AUTH] = AuthOutcome(None, refused)
        target_type, target_id = "service_user", principal.id
    if outcome.reason not in (ANONYMOUS.reason, AMBIGUOUS.kind):  # a credential failed
        check_backoff(request, outcome.reason, outcome.key_id)
    record_auth_failure(request, target_type, target_id)
    if outcome.reason == AMBIGUOUS.kind:
        raise BadRequest(
            "Malformed request: give one credential (one X-API-Key or one Authorization header)"
        )
    raise Unauthenticated()


def refusal(request: web.Request, principal: Principal) -> str | None:
    """Why an authenticated ``principal`` may still not act here, or None: a client address
    outside its allowlist, a key past the maximum age the policy refuses."""
    if principal.networks and not principal.allowed_from(request.app[CLIENTS].address(request)):
        return NOT_ALLOWED_HERE
    if request.app[KEY_POLICY].too_old(principal):
        return KEY_TOO_OLD
    return None


def check_rate_limit(request: web.Request, principal: Principal) -> None:
    """Count a request of ``principal`` against its rate limit (its own, or the configured
    default; none for humans); raise TooManyRequests past it."""
    if principal.type != "service_user":
        return
    limits = request.app[CONFIGURED].settings.limits
    rate = principal.rate_limit if principal.rate_limit is not None else limits.requests_per_second
    # No limit (the default) ends it here, before any per-request state: a membership test
    # on a request raises (and catches) a KeyError when the key is absent.
    if not rate or _RATE_COUNTED in request:
        return
    request[_RATE_COUNTED] = True  # a handler may ask for its caller more than once
    burst = principal.rate_burst or limits.burst or max(1, math.ceil(rate))
    wait = request.app[RATES].wait(principal.id, rate, burst)
    if not wait:
        return
    request.app[METRICS].throttled("rate")
    if request.app[RATES].first_refusal_this_minute(principal.id):
        # One record per service user and minute, however many refusals: a flood of
        # requests over the limit cannot flood the audit log.
        record_event(
            request, action="rate_limit", outcome="failure", principal=principal,
            target_type="service_user", target_id=principal.id,
            detail=f"over {rate:g} requests/s (burst {burst}); further refusals this "
            "minute are not audited one by one",
        )  # fmt: skip
    raise TooManyRequests(retry_after(wait), RATE_LIMITED)


def check_anonymous_rate(request: web.Request) -> None:
    """Count a request that presented no credential against its client address's limit
    (``limits.anonymous_per_second``; IPv6 by /64); raise TooManyRequests past it. What
    it protects: the answers anyone may ask for (/readyz, which asks the store and every
    upstream; discovery; the UI's login page; the 401s)."""
    limits = request.app[CONFIGURED].settings.limits
    rate = limits.anonymous_per_second
    burst = limits.anonymous_burst or max(1, math.ceil(rate))
    unit = counted_address(request.app[CLIENTS].address(request))
    wait = request.app[RATES].wait(f"addr:{unit}", rate, burst)
    if wait:
        request.app[METRICS].throttled("anonymous")
        raise TooManyRequests(retry_after(wait), ANONYMOUS_LIMITED)


def check_backoff(request: web.Request, reason: str | None, key_id: str | None) -> None:
    """Count a failed credential; raise TooManyRequests if its answer is to be 429. A held
    client's credential (``HELD``: not looked up) is not counted again."""
    backoff = request.app[BACKOFF]
    address = request.app[CLIENTS].address(request)
    metrics = request.app[METRICS]
    if reason == HELD.reason:
        metrics.throttled("held")
        raise TooManyRequests(backoff.retry_after(address))
    verdict = backoff.failed(address, key_id)
    if not verdict.retry_after:
        return
    metrics.throttled(verdict.scope)
    if verdict.started:
        record_event(
            request,
            action="auth.backoff",
            outcome="failure",
            target_type=KEY_TARGET if verdict.scope == "key" else None,
            target_id=key_id if verdict.scope == "key" else None,
            detail=f"{verdict.scope} past its budget of failed authentications; "
            "further failures are answered 429 and not audited one by one",
        )
    raise TooManyRequests(verdict.retry_after)
