"""Strict JSON input for the management API, and the JSON shapes it answers with.

Bodies must be a JSON object of known fields with the right types: an unknown field, a wrong
type or malformed JSON is a 400 whose message names the field, before anything changes.
Nothing here ever serializes a key digest or a password hash.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from ..identity.models import Role, ServiceUser, Tenant, User

__all__ = (
    "NO_STORE",
    "Field",
    "parse_role",
    "bool_param",
    "expiry",
    "iso",
    "page_params",
    "parse_time",
    "read_body",
    "service_user_json",
    "tenant_json",
    "user_json",
)

MAX_PAGE: Final = 1000
# Answers that carry a one-time key or a session token must not be cached anywhere.
NO_STORE: Final = {"Cache-Control": "no-store"}


@dataclass(frozen=True, slots=True)
class Field:
    type: type | tuple[type, ...]
    required: bool = False
    nullable: bool = False


async def read_body(request: web.Request, fields: Mapping[str, Field]) -> dict[str, Any]:
    """The request's JSON object, checked against ``fields``; raises BadRequest (400), or
    UnsupportedMediaType (415) for a body that is not ``application/json`` in UTF-8.

    Strict as RFC 8259 asks of what is exchanged between systems: UTF-8 without a byte order
    mark (``json.loads`` would guess UTF-16 and UTF-32 from the bytes), and no repeated names
    (parsers disagree on which copy wins: ``{"role": "TenantUser", "role": "TenantAdmin"}``
    must not be read one way here and another way by whoever audits the request)."""
    try:
        raw = await request.read()  # bounded by the app's client_max_size
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge() from None
    if not raw.strip():
        return _checked({}, fields)
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    charset = request.charset
    if charset is not None and charset.lower() not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("JSON bodies must be UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("Malformed JSON body: not UTF-8") from None
    if text.startswith("\ufeff"):
        raise BadRequest("Malformed JSON body: no byte order mark")
    try:
        body: Any = json.loads(text, object_pairs_hook=_unique_names)
    # RecursionError: a few KB of "[[[[..." nests past the interpreter's recursion limit;
    # uncaught it was a 500 with a traceback in the log for what is just a bad body.
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, _RepeatedName):
            raise BadRequest(f"{_shown(exc.name)}: given more than once") from None
        raise BadRequest("Malformed JSON body") from None
    return _checked(body, fields)


class _RepeatedName(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise _RepeatedName(name)
        obj[name] = value
    return obj


def _checked(body: Any, fields: Mapping[str, Field]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object")
    for name in body:
        if name not in fields:
            # The name is client text: never echo control characters (or a huge name) back.
            raise BadRequest(f"{_shown(name)}: unknown field")
    for name, field in fields.items():
        if name not in body:
            if field.required:
                raise BadRequest(f"{name}: required")
            continue
        value = body[name]
        if value is None:
            if not field.nullable:
                raise BadRequest(f"{name}: must not be null")
            continue
        expected = field.type if isinstance(field.type, tuple) else (field.type,)
        # bool is an int in Python; JSON true must not pass for a number (or the reverse).
        if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
            names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in expected)
            raise BadRequest(f"{name}: must be {names}")
        # JSON may escape a lone surrogate (\ud800), which json.loads turns into a str that
        # cannot be encoded: storing or hashing it raised UnicodeEncodeError, a 500.
        if isinstance(value, str) and not _encodable(value):
            raise BadRequest(f"{name}: must be valid Unicode text")
    return body


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str, limit: int = 64) -> str:
    """Client text made safe to repeat in a message: printable, and not too long."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])


_TYPE_NAMES: Final = {str: "a string", int: "an integer", bool: "true or false"}


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise BadRequest("role: must be Root, TenantAdmin or TenantUser") from None


def parse_time(field: str, value: str) -> float:
    """ISO 8601 with a time zone (``2027-01-31T00:00:00Z``) to epoch seconds."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(
            f"{field}: must be an ISO 8601 time such as 2027-01-31T00:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{field}: must include a time zone (for example Z for UTC)")
    try:
        # 9999-12-31T23:59:59-14:00 parses, but is in year 10000 in UTC: stored, it made
        # every answer showing it (iso(), so the whole service-user list) fail with a 500.
        parsed.astimezone(UTC)
    except OverflowError:
        raise BadRequest(f"{field}: must be a time between the years 1 and 9999 in UTC") from None
    return parsed.timestamp()


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def page_params(request: web.Request) -> tuple[int, int]:
    """``limit`` (1..1000, default 100) and ``offset`` (default 0) from the query."""
    return (
        _int_param(request, "limit", 100, 1, MAX_PAGE),
        _int_param(request, "offset", 0, 0, 2**31),
    )


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # isascii: str.isdigit() is also true for "²", which int() refuses (a 500).
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadRequest(f"{name}: must be an integer from {low} to {high}")
    return int(raw)


def bool_param(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false"):
        raise BadRequest(f"{name}: must be true or false")
    return raw.lower() == "true"


def expiry(body: Mapping[str, Any], now: float) -> tuple[bool, float | None]:
    """(given, expires_at) from ``expires_at`` (ISO time or null) or ``expires_in`` (seconds)."""
    if "expires_at" in body and "expires_in" in body:
        raise BadRequest("expires_at: give either expires_at or expires_in, not both")
    if "expires_in" in body:
        seconds = body["expires_in"]
        if seconds is None:
            return True, None
        if not 0 < seconds <= 100 * 365 * 86400 or not math.isfinite(seconds):
            raise BadRequest("expires_in: must be a positive number of seconds")
        return True, now + seconds
    if "expires_at" in body:
        value = body["expires_at"]
        return True, None if value is None else parse_time("expires_at", value)
    return False, None


def service_user_json(user: ServiceUser, last_used_at: float | None = None) -> dict[str, Any]:
    """The public view of a service user (no key material beyond the public key id)."""
    last_used = max(filter(None, (user.last_used_at, last_used_at)), default=None)
    return {
        "id": user.id,
        "name": user.name,
        "description": user.description,
        "tenant": user.tenant_name,
        "role": user.role.value,
        "key_id": user.key_id,
        "active": user.active,
        "created_at": iso(user.created_at),
        "created_by": user.created_by,
        "expires_at": iso(user.expires_at),
        "last_used_at": iso(last_used),
        "key_rotated_at": iso(user.key_rotated_at),
        "key_generation": user.key_generation,
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "tenant": user.tenant_name,
        "role": user.role.value,
        "active": user.active,
        "created_at": iso(user.created_at),
        "created_by": user.created_by,
        "last_login_at": iso(user.last_login_at),
        "failed_logins": user.failed_logins,
        "password_changed_at": iso(user.password_changed_at),
    }


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {"id": tenant.id, "name": tenant.name, "created_at": iso(tenant.created_at)}
