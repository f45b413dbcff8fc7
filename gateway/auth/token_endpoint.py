"""The OAuth2 token endpoint: ``POST /v1/oauth/tokens`` (and ``/v1/{catalog}/v1/oauth/tokens``).

Gateway-owned and never forwarded: a server that proxies this endpoint becomes a credential
man-in-the-middle (the reason the Iceberg spec deprecated it, apache/iceberg#10537).

Grants:

- ``client_credentials``: ``client_id`` = service-user UUID, ``client_secret`` = API key, in
  the form (Java, PyIceberg legacy) or HTTP Basic (PyIceberg ``auth.type=oauth2``, DuckDB). A
  secret without a client id also works, since the key names its owner. A stray
  ``Authorization: Bearer`` (Java and PyIceberg send the old token along) is ignored, as are
  unknown form fields. Any scope is accepted and echoed.
- ``urn:ietf:params:oauth:grant-type:token-exchange``: a valid gateway token as
  ``subject_token`` buys a fresh token for the same principal (how Java refreshes). With
  client credentials as well (Java's refresh of an already-expired token), the subject may be
  expired but must still be ours and belong to that client.

Errors are RFC 6749 JSON built with authlib's error classes. An unknown client and a wrong
secret get the same ``invalid_client`` answer and take the same path.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import parse_qsl, unquote_plus

from aiohttp import web
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    OAuth2Error,
    UnsupportedGrantTypeError,
)

from ..audit.events import KEY_TARGET, record_event
from ..errors import TooManyRequests
from ..identity.models import Principal, parse_key
from ..state import AUTH, AUTHENTICATOR, BACKOFF, CLIENTS, CONFIGURED, METRICS, TOKENS
from .authenticator import Authenticator, AuthOutcome
from .caller import check_backoff, check_rate_limit, refusal
from .tokens import ACCESS_TOKEN_TYPE, MAX_TOKEN_BYTES, IssuedToken

__all__ = ("token_endpoint",)

_LOGGER = logging.getLogger(__name__)

CLIENT_CREDENTIALS: Final = "client_credentials"
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
_GRANT_LABELS: Final = {CLIENT_CREDENTIALS: "client_credentials", TOKEN_EXCHANGE: "token_exchange"}
_SUBJECT_TYPES: Final = frozenset({ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:jwt"})
_DEFAULT_SCOPE: Final = "catalog"
_MAX_SCOPE: Final = 1024
_MAX_FIELDS: Final = 64
# A "%" not followed by two hex digits. parse_qsl keeps such text literally, so the value we
# would use is not the one the client meant to send (a secret, a scope): refuse it instead.
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")


class _Refused(Exception):
    def __init__(
        self, error: OAuth2Error, key_id: str | None = None, reason: str | None = None
    ) -> None:
        super().__init__(error.error)
        self.error = error
        self.key_id = key_id  # the public part of a refused key, for the audit log
        # Why a credential failed (the authenticator's reason): set only for credentials,
        # which count towards the backoff; a malformed request does not.
        self.reason = reason


def _error_response(error: OAuth2Error) -> web.Response:
    status, body, headers = error()
    return web.Response(status=status, text=json.dumps(body), headers=dict(headers))


def _invalid_client(key_id: str | None = None, reason: str | None = "malformed") -> _Refused:
    # One message for unknown ids, wrong secrets, inactive or expired identities alike.
    return _Refused(
        InvalidClientError(description="Client authentication failed", status_code=401),
        key_id,
        reason,
    )


def _slowed(slow: TooManyRequests) -> web.Response:
    # The OAuth2 error shape (Java parses it for any status); RFC 6749 has no code for a
    # backoff, and temporarily_unavailable says "later" rather than "wrong credentials".
    body = {"error": "temporarily_unavailable", "error_description": slow.detail}
    return web.json_response(body, status=429, headers=slow.headers())


def _invalid_request(description: str) -> _Refused:
    return _Refused(InvalidRequestError(description=description))


async def token_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    if request.method != "POST":
        metrics.token_refused(InvalidRequestError.error)
        response = _error_response(InvalidRequestError(description="Use POST", status_code=405))
        response.headers["Allow"] = "POST"
        return response
    form: Mapping[str, str] = {}
    try:
        form = await _read_form(request)
        principal, issued = await _grant(request, form)
    except TooManyRequests as slow:  # over its rate limit (counted and audited there)
        metrics.token_refused("temporarily_unavailable")
        return _slowed(slow)
    except _Refused as refused:
        metrics.token_refused(refused.error.error)
        if refused.reason is not None:
            try:
                check_backoff(request, refused.reason, refused.key_id)
            except TooManyRequests as slow:
                return _slowed(slow)  # counted and, where it started, audited there
        _audit(request, form, None, f"refused: {refused.error.error}", refused.key_id)
        return _error_response(refused.error)
    metrics.token_issued(_GRANT_LABELS[form["grant_type"]])
    # One request of this service user, however many credentials it took to decide.
    request.app[AUTHENTICATOR].count_request(principal.id)
    # Who got the token, for the access log (the request itself carried no gateway credential).
    request[AUTH] = AuthOutcome(principal)
    _audit(request, form, principal, None)
    body = {
        "access_token": issued.access_token,
        "token_type": "bearer",
        "expires_in": issued.expires_in,
        # Java stores this as the token type for its next refresh; null breaks that refresh.
        "issued_token_type": ACCESS_TOKEN_TYPE,
        "scope": issued.scope,
    }
    return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


async def _read_form(request: web.Request) -> Mapping[str, str]:
    limit = request.app[CONFIGURED].settings.server.max_form_bytes
    if (request.content_length or 0) > limit:
        raise _Refused(InvalidRequestError(description="Request body too large", status_code=413))
    if request.content_type != "application/x-www-form-urlencoded":
        raise _invalid_request("Content-Type must be application/x-www-form-urlencoded")
    # read(n) returns what has arrived so far, not n bytes: read until EOF (or past the limit),
    # or a body arriving in pieces (chunked, slow client) is parsed truncated and a chunked
    # body over the limit escapes the 413.
    raw = b""
    while len(raw) <= limit:
        chunk = await request.content.read(limit + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    if len(raw) > limit:
        raise _Refused(InvalidRequestError(description="Request body too large", status_code=413))
    if _BAD_ESCAPE.search(raw):
        raise _invalid_request("Malformed form body")
    try:
        pairs = parse_qsl(
            raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
            max_num_fields=_MAX_FIELDS, errors="strict",
        )  # fmt: skip
    except (UnicodeDecodeError, ValueError):
        raise _invalid_request("Malformed form body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            # Name only safe names: authlib raises ValueError (a 500) for a description with
            # '"', '\\' or non-ASCII, and a client's arbitrary text is not ours to echo anyway.
            safe = name.isascii() and name.isidentifier()
            raise _invalid_request(f"Parameter {name} is repeated" if safe else "Repeated field")
        form[name] = value
    return form


def _audit(
    request: web.Request,
    form: Mapping[str, str],
    principal: Principal | None,
    failure: str | None,
    key_id: str | None = None,
) -> None:
    # Only a known grant type is recorded: the field is client input and must not carry
    # anything (a misplaced key, say) into the audit log.
    grant = form.get("grant_type")
    grant = grant if grant in (CLIENT_CREDENTIALS, TOKEN_EXCHANGE) else "other"
    record_event(
        request,
        action="token.issue",
        outcome="failure" if failure else "success",
        principal=principal,
        target_type=principal.type if principal is not None else (key_id and KEY_TARGET),
        target_id=principal.id if principal is not None else key_id,
        detail=f"{grant}; {failure}" if failure else grant,
    )


async def _grant(request: web.Request, form: Mapping[str, str]) -> tuple[Principal, IssuedToken]:
    grant_type = form.get("grant_type")
    if not grant_type:
        raise _invalid_request("Missing grant_type")
    scope = form.get("scope", "").strip() or _DEFAULT_SCOPE
    if len(scope) > _MAX_SCOPE or not scope.isprintable():
        raise _invalid_request("Invalid scope parameter")
    authenticator = request.app[AUTHENTICATOR]
    if grant_type == CLIENT_CREDENTIALS:
        principal = await _client(authenticator, request, form, required=True)
        assert principal is not None
    elif grant_type == TOKEN_EXCHANGE:
        principal = await _exchange(authenticator, request, form)
    else:
        raise _Refused(UnsupportedGrantTypeError(grant_type))
    refused = refusal(request, principal)
    if refused is not None:
        # Its allowlist and the key-age policy hold here too (the answer a wrong secret gets).
        raise _invalid_client(reason=refused)
    check_rate_limit(request, principal)  # a token request is a request of its own
    return principal, request.app[TOKENS].issue(principal, scope)


def _basic_credentials(request: web.Request) -> tuple[str | None, str] | None:
    headers = request.headers.getall("Authorization", ())
    if len(headers) > 1:
        raise _invalid_request("Give one Authorization header")
    scheme, _, encoded = (headers[0] if headers else "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None  # includes a stray Bearer, which we ignore by design
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client() from None
    client_id, sep, secret = decoded.partition(":")
    # RFC 6749 2.3.1: both parts are form-encoded before Basic encoding (%2D is "-"). DuckDB
    # and PyIceberg send them raw, which decoding leaves as they are: keys and UUIDs hold no
    # "%" or "+".
    if not sep:  # no colon: the whole value is the secret
        return None, unquote_plus(decoded)
    return unquote_plus(client_id) or None, unquote_plus(secret)


async def _client(
    authenticator: Authenticator,
    request: web.Request,
    form: Mapping[str, str],
    *,
    required: bool,
) -> Principal | None:
    """Authenticate the client from HTTP Basic or the form; None if none was presented."""
    basic = _basic_credentials(request)
    if basic is not None:
        if "client_id" in form or "client_secret" in form:
            # RFC 6749 2.3: one authentication method per request. Which of two clients a
            # server acts on is exactly what must never be left to chance.
            raise _invalid_request("Give client credentials once: in Basic or in the form")
        client_id, secret = basic
    elif "client_secret" in form:
        client_id, secret = form.get("client_id") or None, form["client_secret"]
    elif required:
        raise _invalid_client(reason=None)  # no credential at all: nothing failed
    else:
        return None
    key = parse_key(secret)
    if key is None:
        raise _invalid_client()
    backoff = request.app[BACKOFF]
    may_read = not backoff.held or backoff.may_read(request.app[CLIENTS].address(request))
    outcome = await authenticator.authenticate_key(key, may_read=may_read)
    principal = outcome.principal
    if principal is None:
        raise _invalid_client(outcome.key_id, outcome.reason or "unknown_key")
    if client_id is not None and client_id.strip() != principal.id:
        raise _invalid_client(outcome.key_id, "wrong_client")
    return principal


async def _exchange(
    authenticator: Authenticator, request: web.Request, form: Mapping[str, str]
) -> Principal:
    subject = form.get("subject_token", "")
    if not subject:
        raise _invalid_request("Missing subject_token")
    subject_type = form.get("subject_token_type", "")
    if subject_type not in _SUBJECT_TYPES:
        raise _invalid_request("Unsupported subject_token_type")
    if len(subject) > MAX_TOKEN_BYTES:
        raise _invalid_request("subject_token too large")
    client = await _client(authenticator, request, form, required=False)
    claims = authenticator.verify_token(subject, allow_expired=client is not None)
    # Only service-user tokens are renewed here. Humans are never issued one (their sessions
    # are opaque store rows, which verify_token refuses), and the check stays so that no
    # future token type could stretch a session by being exchanged again and again.
    if claims is None or claims.principal_type != "service_user":
        raise _Refused(InvalidGrantError(description="Invalid subject_token"), reason="bad_token")
    outcome: AuthOutcome = await authenticator.principal_for_claims(claims)
    if outcome.principal is None or (client is not None and client.id != outcome.principal.id):
        reason = outcome.reason or "wrong_client"
        raise _Refused(InvalidGrantError(description="Invalid subject_token"), reason=reason)
    return outcome.principal
