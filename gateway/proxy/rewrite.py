"""Rewrites of catalog JSON that keep clients coming through the gateway.

One rule for ``/v1/config`` (its ``defaults`` and ``overrides``) and for the ``config`` map
of table and view answers: every key that would send a client around the gateway (``uri``,
``oauth2-server-uri``, signer URIs) or hand it an upstream credential (``token``,
``credential``, ``header.*``, ``rest.auth.*``, token-type URNs the Java client reads as
session tokens ...) is dropped. Keys are matched case-insensitively: ``Token`` and ``TOKEN``
are dropped too, as a case-insensitive client would read them.

For callers confined by grants (``catalog``), two more: ``strip_storage_credentials`` takes
vended storage access out of a table answer for a caller that may not write the table, and
``filter_list`` keeps only what the caller may see in a list answer.

Bodies are re-serialized only when something was removed. Python's ``json`` keeps integers
exact, so int64 snapshot ids survive a rewrite (unlike JavaScript's number parsing).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Final

from ..errors import UpstreamError

__all__ = (
    "filter_list",
    "rewrite_config",
    "strip_storage_credentials",
    "strip_table_credentials",
)

_DROP: Final = frozenset(
    {"uri", "oauth2-server-uri", "token", "credential", "scope", "s3.signer.uri", "signer.uri"}
)
_DROP_PREFIXES: Final = (
    "header.", "rest.auth.", "rest.sigv4", "rest.signing", "urn:ietf:params:oauth:token-type:",
)  # fmt: skip


def _drop_keys(section: Any) -> bool:
    if not isinstance(section, dict):
        return False
    doomed = [k for k in section if (low := k.lower()) in _DROP or low.startswith(_DROP_PREFIXES)]
    for key in doomed:
        del section[key]
    return bool(doomed)


class _Parsed:
    """A JSON object, noting whether any object in it repeated a key. Parsers disagree on
    which copy of a repeated key wins (Python keeps the last, others the first), so such a
    document is always re-serialized from what we inspected, never passed on as it came."""

    def __init__(self, body: bytes) -> None:
        self.duplicates = False
        self.readable = True
        try:
            doc = json.loads(body, object_pairs_hook=self._object)
        except (ValueError, RecursionError):
            doc, self.readable = None, False  # not JSON to us
        self.doc: dict[str, Any] | None = doc if isinstance(doc, dict) else None

    def _object(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj = dict(pairs)
        self.duplicates |= len(obj) != len(pairs)
        return obj

    def dump(self) -> bytes:
        return json.dumps(self.doc, separators=(",", ":")).encode()


def rewrite_config(body: bytes, prefix: str | None = None) -> bytes | None:
    """The rewritten ``/v1/config`` body, or None to send the original bytes unchanged.

    ``prefix``: the catalog's pinned prefix, set as ``overrides.prefix`` so clients build
    their paths under it (see ``scope``)."""
    parsed = _Parsed(body)
    if parsed.doc is None:
        return None
    changed = parsed.duplicates
    for section in ("defaults", "overrides"):
        changed |= _drop_keys(parsed.doc.get(section))
    # Only a config document gets the prefix (not an error answer, say).
    if prefix is not None and ("defaults" in parsed.doc or "overrides" in parsed.doc):
        overrides = parsed.doc.setdefault("overrides", {})
        if isinstance(overrides, dict) and overrides.get("prefix") != prefix:
            overrides["prefix"] = prefix
            changed = True
    return parsed.dump() if changed else None


# All markers in one pass (a regular expression alternation: measured at about a quarter of
# the cost of one ``in`` test per marker on a loadTable answer), searched in the body lowered
# once (bytes.lower() folds ASCII only, as the markers are): a case-insensitive pattern
# measured four times dearer than lowering plus a plain search.
_MARKER: Final = re.compile(
    # How each key we drop must appear in a body without escapes: right after its opening
    # quote, an exact key with its closing quote, a prefix as it starts. The shared leading
    # quote is factored out (a literal the engine scans for first).
    b'"(?:'
    + b"|".join(
        [
            *(re.escape(key.encode()) + b'"' for key in sorted(_DROP)),
            *(re.escape(prefix.encode()) for prefix in _DROP_PREFIXES),
        ]
    )  # fmt: skip
    + b")"
).search


def strip_table_credentials(body: bytes) -> bytes | None:
    """The table/view response without upstream session tokens, or None if it had none."""
    # Fast path: most responses are passed on byte for byte, without parsing. It applies only
    # when no key we drop can be in the body at all: without \u escapes ("\u0063onfig" is
    # "config" to every parser; no other JSON escape yields a character of these names) and
    # without NUL bytes (JSON in UTF-16/32, which parsers detect and decode, hides every ASCII
    # name from a byte search), a dropped key would appear verbatim, in some letter case, right
    # after its opening quote ("token", "Credential", "header.X ...). With none of
    # them, no copy of a repeated "config" can hold a credential either, so nothing a
    # first-key-wins parser reads differs in what matters here.
    if (
        (b"\\" not in body or b"\\u" not in body)  # a one-byte search first: far cheaper
        and b"\x00" not in body
        and (b'"config"' not in body or _MARKER(body.lower()) is None)
    ):
        return None
    parsed = _Parsed(body)
    if not parsed.readable:
        # Something that may hold a credential, which we cannot read but a more lenient
        # client parser might: refuse it rather than pass it on unfiltered.
        raise UpstreamError("The catalog's response could not be inspected")
    if parsed.doc is None:
        return None  # JSON, but not an object: there is no config map to strip
    changed = _drop_keys(parsed.doc.get("config"))
    return parsed.dump() if changed or parsed.duplicates else None


# Storage settings a catalog vends in a table's ``config``: its credentials (s3.access-key-id,
# s3.secret-access-key, s3.session-token, gcs.oauth2.token, adls.sas-token.<account>, any key
# naming a key, secret, token or credential) and the rest of the storage configuration that
# comes with them (s3.endpoint, s3.region, ...). The rest goes too: a client given an endpoint
# without keys builds a keyless storage client from it (DuckDB does) instead of using its own.
_STORAGE_PREFIXES: Final = ("s3.", "gcs.", "adls.", "azure.", "oss.", "client.")
_STORAGE_WORDS: Final = ("key", "secret", "token", "credential", "sas", "password", "signature")
_STORAGE_KEY: Final = re.compile(
    "|".join([*("^" + re.escape(p) for p in _STORAGE_PREFIXES), *_STORAGE_WORDS])
)
# Any of them anywhere in a body (bytes, lowered): the fast path's test.
_STORAGE_WORD: Final = re.compile(
    b"|".join(re.escape(w.encode()) for w in (*_STORAGE_PREFIXES, *_STORAGE_WORDS))
).search


def strip_storage_credentials(body: bytes) -> bytes | None:
    """A table or view answer (``loadTable``, ``createTable``, ``loadCredentials``, scan
    planning, ``loadView``) or ``/v1/config`` without the storage access it vends, for a
    caller that may not write there when the catalog has no read-only upstream credential:
    ``storage-credentials`` emptied, the storage settings of ``config`` (``defaults``,
    ``overrides``) dropped, so the client uses its own."""
    # Fast path, by the reasoning of strip_table_credentials: without escapes or NUL bytes, a
    # key we drop appears verbatim, so a body without any of the words passes unparsed.
    if b"\\u" not in body and b"\x00" not in body and _STORAGE_WORD(body.lower()) is None:
        return None
    parsed = _inspected(body)
    if parsed.doc is None:
        return None
    doc = parsed.doc
    changed = parsed.duplicates
    if doc.get("storage-credentials"):
        doc["storage-credentials"] = []
        changed = True
    for section in ("config", "defaults", "overrides"):  # a table's, or /v1/config's
        config = doc.get(section)
        if isinstance(config, dict):
            doomed = [key for key in config if _STORAGE_KEY.search(key.lower())]
            for key in doomed:
                del config[key]
            changed |= bool(doomed)
    return parsed.dump() if changed else None


def filter_list(body: bytes, visible: Callable[[tuple[str, ...]], bool]) -> bytes | None:
    """A ``listNamespaces`` (``namespaces``) or ``listTables`` / ``listViews``
    (``identifiers``) answer with only the entries ``visible`` keeps; the upstream's
    ``next-page-token`` stays, so paging goes on (a filtered page may be short, or empty).
    An answer that cannot be read is refused: it could list what the caller may not see."""
    parsed = _inspected(body)
    if parsed.doc is None:
        return None
    doc = parsed.doc
    changed = parsed.duplicates
    namespaces = doc.get("namespaces")
    if isinstance(namespaces, list):
        kept = [ns for ns in namespaces if _is_levels(ns) and visible(tuple(ns))]
        changed |= len(kept) != len(namespaces)
        doc["namespaces"] = kept
    identifiers = doc.get("identifiers")
    if isinstance(identifiers, list):
        kept = [
            ident
            for ident in identifiers
            if isinstance(ident, dict)
            and _is_levels(ident.get("namespace"))
            and isinstance(ident.get("name"), str)
            and visible((*ident["namespace"], ident["name"]))
        ]
        changed |= len(kept) != len(identifiers)
        doc["identifiers"] = kept
    return parsed.dump() if changed else None


def _inspected(body: bytes) -> _Parsed:
    """``body`` parsed, or refused (502) when it cannot be: what we cannot read, a more
    lenient client parser might, and it could hold what must be held back."""
    parsed = _Parsed(body)
    if not parsed.readable:
        raise UpstreamError("The catalog's response could not be inspected")
    return parsed


def _is_levels(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(level, str) for level in value)
