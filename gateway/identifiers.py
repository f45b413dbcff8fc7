"""The identifier rule: which namespace, table, view and function names no request may carry.

Refused (400), whatever the upstream accepts: ``*``, ``?``, ``$``, quotes (``'``, ``"``,
`````) and control characters (C0, DEL and C1: Unicode category Cc). Names end up inside
storage policies, IAM patterns and expressions (Polaris' CVE-2026-42810 and -42811: ``*`` in a
table name widened vended credentials to other tables, CEL syntax in one widened them to a
bucket), and grants are keyed on them, so a name must mean one thing to everyone.
Unicode letters, spaces, dots, dashes and the rest go to the catalog, which judges them.

Names are checked where they arrive: in the path (``routing``, as the grammar decodes it), in
the ``parent`` query of ``listNamespaces`` (``routing``) and in the bodies that name something
new (``names_refusal`` on the body as ``json_object`` read it, called by the catalog
handler; a body that is not a JSON object without duplicate keys is refused: what we cannot
read, a lenient upstream parser might read a name from). Messages say what is wrong and never
echo the name (it may hold control characters).
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

__all__ = (
    "NAMED_IN_BODY",
    "NAME_RULE",
    "NOT_A_JSON_OBJECT",
    "json_object",
    "name_refusal",
    "names_refusal",
)

# Lone surrogates too: JSON can escape one ("\ud800"), and encoders write it as "?".
_HOSTILE: Final = re.compile(r"[*?$'\"`\x00-\x1f\x7f-\x9f\ud800-\udfff]")
NAME_RULE: Final = "names may not contain *, ?, $, quotes or control characters"
NOT_A_JSON_OBJECT: Final = (
    "Malformed request: the request body is not a JSON object without duplicate keys"
)
# Operations whose body names what they create, rename or change, and where: "name" (a
# string), "namespace" (a list of levels), "source"/"destination" (a table identifier) or
# "table-changes" (a list of changes, each with a table "identifier").
NAMED_IN_BODY: Final = {
    "createNamespace": ("namespace",),
    "createTable": ("name",),
    "registerTable": ("name",),
    "createView": ("name",),
    "registerView": ("name",),
    "renameTable": ("source", "destination"),
    "renameView": ("source", "destination"),
    "commitTransaction": ("table-changes",),
}


def name_refusal(kind: str, name: str) -> str | None:
    """Why ``name`` (a ``kind`` name: "namespace", "table", ...) is refused, or None."""
    found = _HOSTILE.search(name)
    if found is None:
        return None
    char = found.group()
    what = "a quote" if char in "'\"`" else f"'{char}'" if char in "*?$" else "a control character"
    return f"Malformed request: a {kind} name contains {what}; {NAME_RULE}"


def _levels_refusal(kind: str, levels: object) -> str | None:
    if isinstance(levels, str):  # a lenient parser may read one string as a one-level list
        return name_refusal(kind, levels)
    if isinstance(levels, list):
        for level in levels:
            if isinstance(level, str) and (refusal := name_refusal(kind, level)) is not None:
                return refusal
    return None


def _identifier_refusal(kind: str, ident: object) -> str | None:
    """A ``TableIdentifier`` (``{"namespace": [...], "name": ...}``) of a rename."""
    if not isinstance(ident, dict):
        return None
    name = ident.get("name")
    if isinstance(name, str) and (refusal := name_refusal(kind, name)) is not None:
        return refusal
    return _levels_refusal("namespace", ident.get("namespace"))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        # Parsers disagree on which of two "name" keys counts: one of them must not slip by.
        raise ValueError("duplicate key")
    return doc


def json_object(body: bytes) -> dict[str, Any] | None:
    """``body`` as a JSON object, or None if it is not one without duplicate keys."""
    try:
        doc = json.loads(body, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def names_refusal(operation: str, doc: dict[str, Any]) -> str | None:
    """Why the names in ``doc``, the body of ``operation`` (one of ``NAMED_IN_BODY``), are
    refused, or None. Only what the body names is judged; whatever else is wrong with it is
    the catalog's to say."""
    kind = "view" if "View" in operation else "table"
    for field in NAMED_IN_BODY[operation]:
        value = doc.get(field)
        if field == "namespace":
            refusal = _levels_refusal("namespace", value)
        elif field == "name":
            refusal = name_refusal(kind, value) if isinstance(value, str) else None
        elif field == "table-changes":
            changes = value if isinstance(value, list) else []
            refusal = next(
                (
                    found
                    for change in changes
                    if isinstance(change, dict)
                    and (found := _identifier_refusal(kind, change.get("identifier")))
                ),
                None,
            )
        else:
            refusal = _identifier_refusal(kind, value)
        if refusal is not None:
            return refusal
    return None
