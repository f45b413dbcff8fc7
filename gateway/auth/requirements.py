"""What one catalog request needs, as (resource, action) pairs: the URL's privilege
(``routing.decide``) and, for the operations whose body names the target or raises the
action (``Privilege.body_aware``), what the body adds.

- createNamespace: ``create`` on the parent of the body's namespace; ``manage`` there too if
  its properties set a location.
- createTable, createView: ``create`` on the namespace; ``manage`` if the body sets
  ``location`` or a location property (``write.metadata.path`` and the like: CVE-2026-42812
  let such a property escape the table's location); stage-create also needs ``write`` on the
  new table (CVE-2026-42809: stage-create minted storage credentials before anything else);
  a ``stage-create`` that is not a JSON boolean is refused (Jackson reads ``"true"`` as true).
- updateTable, replaceView: ``write``; ``manage`` if an update is ``set-location`` or sets a
  location property; ``create`` on the namespace with an ``assert-create`` requirement (the
  upstream then creates the table: CatalogHandlers.updateTable); an ``identifier`` in the body
  that differs from the path is refused.
- renameTable, renameView: ``drop`` on the source and ``create`` on the destination namespace.
- commitTransaction: ``write`` (and ``manage`` or ``create``, as for updateTable) on every
  table of ``table-changes``: all of them or the whole request is refused.
- signRequest: ``read`` if the signed method is GET or HEAD, else ``write``.
- dropTable with ``purgeRequested`` other than ``false``: ``write`` as well (the data files go
  too; a lenient upstream may read ``1`` or ``yes`` as true).

(registerTable and registerView need ``manage`` from the URL alone: see ``routing``.)

A body these rules cannot read is refused (400) rather than guessed at: whatever we cannot
read, a lenient upstream parser might read a target from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from ..errors import BadRequest
from ..routing import Action, Decision

__all__ = ("Need", "needs")

# Properties that place a table's, view's or namespace's files (Iceberg's TableProperties
# and the namespace "location"), compared case-insensitively.
_LOCATION_PROPERTIES: Final = frozenset(
    {
        "location",
        "write.metadata.path",
        "write.data.path",
        "write.object-storage.path",
        "write.folder-storage.path",
    }
)
_READ_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Need:
    """``action`` on ``resource``; with ``visibility``, any grant on, above or below it is
    enough (listing and HEAD of what leads to something the caller may use)."""

    resource: tuple[str, ...]
    action: Action
    visibility: bool = False


def needs(decision: Decision, doc: Mapping[str, Any] | None, query: str = "") -> list[Need]:
    """Every need of the request; ``doc`` is its body as a JSON object (None: not read, or
    none sent). Raises BadRequest for a body-aware request whose body names no target."""
    url = Need(decision.resource, decision.action, decision.privilege.visibility)
    operation = decision.operation
    if operation == "dropTable" and _purge(query):
        return [url, Need(decision.resource, "write")]
    if not decision.privilege.body_aware:
        return [url]
    body: Mapping[str, Any] = doc or {}
    resource = decision.resource
    if operation == "createNamespace":
        parent = _levels(body.get("namespace"), "namespace")[:-1]
        found = [Need(parent, "create")]
        if _sets_location(body.get("properties")):
            found.append(Need(parent, "manage"))
        return found
    if operation in ("createTable", "createView"):
        found = [url]
        if body.get("location") is not None or _sets_location(body.get("properties")):
            found.append(Need(resource, "manage"))
        if operation == "createTable" and _flag(body.get("stage-create"), "stage-create"):
            found.append(Need((*resource, _name(body.get("name"))), "write"))
        return found
    if operation in ("updateTable", "replaceView"):
        named = body.get("identifier")
        if named is not None and _identifier(named, "identifier") != resource:
            # The upstream could act on either: they must be one and the same.
            raise BadRequest("Malformed request: identifier differs from the path")
        return [url, *_change_needs(resource, body)]
    if operation in ("renameTable", "renameView"):
        source = _identifier(body.get("source"), "source")
        destination = _identifier(body.get("destination"), "destination")
        return [Need(source, "drop"), Need(destination[:-1], "create")]
    if operation == "commitTransaction":
        return _transaction_needs(body.get("table-changes"))
    if operation == "signRequest":
        method = body.get("method")
        if isinstance(method, str) and method.upper() in _READ_METHODS:
            return [url]
        return [Need(resource, "write")]
    raise AssertionError(f"no body rule for {operation}")  # routing marks it body_aware


def _transaction_needs(changes: object) -> list[Need]:
    if not isinstance(changes, list) or not changes:
        raise BadRequest("Malformed request: table-changes must be a non-empty list")
    found: list[Need] = []
    for change in changes:
        if not isinstance(change, Mapping):
            raise BadRequest("Malformed request: each table change must be an object")
        table = _identifier(change.get("identifier"), "identifier")
        found += [Need(table, "write"), *_change_needs(table, change)]
    return found


def _change_needs(resource: tuple[str, ...], change: Mapping[str, Any]) -> list[Need]:
    """What a commit's requirements and updates add to ``write``: ``create`` on the namespace
    for an assert-create (the upstream creates the table), ``manage`` if an update moves
    files (set-location, or a location property set)."""
    found: list[Need] = []
    if any(_kind(item, "type") == "assert-create" for item in _objects(change, "requirements")):
        found.append(Need(resource[:-1], "create"))
    for update in _objects(change, "updates"):
        action = _kind(update, "action")
        if action == "set-location" or (
            action == "set-properties" and _sets_location(update.get("updates"))
        ):
            found.append(Need(resource, "manage"))
            break
    return found


def _objects(change: Mapping[str, Any], field: str) -> list[Mapping[str, Any]]:
    """The list of objects ``change[field]`` (absent: none); anything else is refused."""
    value = change.get(field)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise BadRequest(f"Malformed request: {field} must be a list of objects")
    return value


def _kind(item: Mapping[str, Any], field: str) -> str | None:
    value = item.get(field)
    return value.lower() if isinstance(value, str) else None


def _sets_location(properties: object) -> bool:
    return isinstance(properties, Mapping) and any(
        isinstance(key, str) and key.lower() in _LOCATION_PROPERTIES for key in properties
    )


def _purge(query: str) -> bool:
    pairs = parse_qsl(query, keep_blank_values=True)
    return any(key == "purgeRequested" and value.lower() != "false" for key, value in pairs)


def _flag(value: object, field: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise BadRequest(f"Malformed request: {field} must be true or false")


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise BadRequest("Malformed request: the body must give the name")
    return value


def _levels(value: object, field: str) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(level, str) and level for level in value)
    ):
        raise BadRequest(f"Malformed request: {field} must be a non-empty list of names")
    return tuple(value)


def _identifier(value: object, field: str) -> tuple[str, ...]:
    """A ``TableIdentifier`` (``{"namespace": [...], "name": "..."}``) as a resource."""
    if not isinstance(value, Mapping):
        raise BadRequest(f"Malformed request: {field} must be a table identifier")
    return (*_levels(value.get("namespace"), f"{field}.namespace"), _name(value.get("name")))
