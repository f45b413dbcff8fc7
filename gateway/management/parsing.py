"""Reading a management request into its model (``schemas``): the body and the query string.

Refusals are a 400 (BadRequest) whose message names the field and the rule, built from the
kind of each pydantic error (its ``type`` and context), never from pydantic's own wording;
nothing is changed before the whole input is read and checked.
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from ..errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

__all__ = ("read_body", "read_fields", "read_parameters", "read_query")

_M = TypeVar("_M", bound=BaseModel)

# What a value of the wrong JSON type should have been, per pydantic error type.
_EXPECTED: Final = {
    "string_type": "a string",
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number",
    "enum": None,  # the allowed values, from the error's context
    "literal_error": None,
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
}


async def read_body(request: web.Request, model: type[_M]) -> _M:
    """The request's JSON object as ``model``; raises BadRequest (400), PayloadTooLarge (413),
    or UnsupportedMediaType (415) for a body that is not ``application/json`` in UTF-8. An
    empty body reads as ``{}``.

    Strict as RFC 8259 asks of what is exchanged between systems: UTF-8 without a byte order
    mark, and no repeated names (parsers disagree on which copy wins:
    ``{"role": "TenantUser", "role": "TenantAdmin"}`` must not be read one way here and another
    way by whoever audits the request)."""
    try:
        raw = await request.read()  # bounded by the app's client_max_size
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge() from None
    if not raw.strip():
        return _validated(model, "{}")
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
    # A first reading for what pydantic's parser does not report by field: repeated names
    # (it lets the last copy win) and escaped lone surrogates ("\ud800", text that cannot be
    # stored or encoded), in names and values alike.
    try:
        parsed = json.loads(text, object_pairs_hook=_unique_names)
    except _RepeatedName as exc:
        raise BadRequest(f"{_shown(exc.name)}: given more than once") from None
    # RecursionError: a few KB of "[[[[..." nests past the interpreter's recursion limit.
    except (ValueError, RecursionError):
        raise BadRequest("Malformed JSON body") from None
    if isinstance(parsed, dict):
        for name, value in parsed.items():
            if name not in model.model_fields:  # a name pydantic's parser could not read too
                raise BadRequest(f"{_shown(name)}: unknown field")
            if isinstance(value, str) and not _encodable(value):
                raise BadRequest(f"{_shown(name)}: must be valid Unicode text")
    return _validated(model, text)


def read_query(request: web.Request, model: type[_M]) -> _M:
    """The query string as ``model``: unknown and repeated parameters are refused, so that a
    typo (``?tenat=x``) is an error rather than a silently wider answer."""
    values: dict[str, str] = {}
    for name, value in request.query.items():
        if name in values:
            raise BadRequest(f"{_shown(name)}: given more than once")
        values[name] = value
    return read_parameters(model, values)


def read_parameters(model: type[_M], values: dict[str, str]) -> _M:
    """Query-string ``values`` (text) as ``model``, with the rules of ``read_query``."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise BadRequest(_message(model, exc.errors()[0])) from None


def read_fields(model: type[_M], fields: dict[str, Any]) -> _M:
    """``fields`` (already typed values, as a form handler builds them) read exactly as a JSON
    body with those fields would be: the same rules and the same messages."""
    return _validated(model, json.dumps(fields))


def _validated(model: type[_M], text: str) -> _M:
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise BadRequest(_message(model, exc.errors()[0])) from None


def _message(model: type[BaseModel], error: ErrorDetails) -> str:
    kind = error["type"]
    context: dict[str, Any] = error.get("ctx") or {}
    if kind == "json_invalid":
        # Well-formed for Python's reader but not for pydantic's: NaN, Infinity, or an
        # escaped lone surrogate ("\ud800"), which could not be stored or encoded.
        return "Malformed JSON body"
    if kind == "null_forbidden":
        return f"{_shown(str(context['field']))}: must not be null"
    if not error["loc"]:
        return "The body must be a JSON object"
    field = ".".join(_shown(str(part)) for part in error["loc"])
    if kind == "extra_forbidden":
        return f"{field}: unknown field"
    if kind == "missing":
        return f"{field}: required"
    if kind in _EXPECTED:
        if error["input"] is None:
            return f"{field}: must not be null"
        expected = _EXPECTED[kind] or str(context.get("expected", "")).replace("'", "")
        return f"{field}: must be {expected}"
    if kind == "string_too_short":
        limit = context["min_length"]
        if limit == 1:
            return f"{field}: must not be empty"
        return f"{field}: must be at least {limit} characters"
    if kind == "string_too_long":
        return f"{field}: must be at most {context['max_length']} characters"
    if kind == "too_long":
        return f"{field}: must have at most {context['max_length']} items"
    if kind == "string_pattern_mismatch":
        # The rule's wording is the field's description, beside its pattern (schemas).
        described = model.model_fields.get(str(error["loc"][0]))
        rule = described.description if described is not None else None
        return f"{field}: {rule or 'has characters that are not allowed'}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{field}: must be {_BOUNDS[kind]} {next(iter(context.values()))}"
    if kind == "finite_number":
        return f"{field}: must be a finite number"
    if kind == "value_error":
        # Our own validators (parse_time, the query readers) raise ValueError("field: why")
        # or ValueError("why").
        reason = str(context.get("error", "is not valid"))
        return reason if reason.startswith(f"{field}: ") else f"{field}: {reason}"
    return f"{field}: is not valid"


_BOUNDS: Final = {
    "greater_than": "greater than",
    "greater_than_equal": "at least",
    "less_than": "less than",
    "less_than_equal": "at most",
}


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


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(text: str, limit: int = 64) -> str:
    """Client text made safe to repeat in a message: printable, and not too long."""
    return "".join(ch if ch.isprintable() else "?" for ch in text[:limit])
