"""Grants: who may do what on which catalog resource, and the in-memory index that decides it.

A grant gives one subject (a service user, or a named ``AccessRole`` that service users hold)
one action on one resource: a catalog (``resource == ()``), a namespace at any depth, or a
table or view (the namespace's levels, then the name). A grant holds for everything below its
resource. Tables, views and namespaces share one path space: a grant on ``("sales",
"orders")`` covers the table ``sales.orders`` and a namespace ``sales.orders`` alike, as in
the reference model (ui-grants-forward-auth-postgres §2.7); creating such a namespace needs
``create`` on ``sales``, which the grant does not give.

No globs inside names (Polaris' CVE-2026-42810: ``*`` in a name widened vended credentials):
the only wildcard is a whole catalog of ``*``, "every catalog of the subject's tenant".

``GrantIndex`` is what the hot path reads: built once per service user when its identity is
loaded into the authenticator's cache, and replaced, never changed, when grants change.
A check is O(depth of the resource) dictionary lookups, with no store access.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from ..routing import ACTIONS, Action

__all__ = (
    "ANY_CATALOG",
    "NO_GRANTS",
    "AccessRole",
    "Grant",
    "GrantIndex",
    "SubjectType",
    "format_resource",
)

ANY_CATALOG: Final = "*"
SubjectType = Literal["service_user", "role"]


@dataclass(frozen=True, slots=True)
class AccessRole:
    """A named set of grants, held by service users of its tenant."""

    id: str
    tenant_id: str
    tenant_name: str
    name: str
    description: str
    created_at: float
    created_by: str | None


@dataclass(frozen=True, slots=True)
class Grant:
    """One action on one resource for one subject."""

    id: str
    tenant_id: str
    subject_type: SubjectType
    subject_id: str
    catalog: str  # a catalog name, or ANY_CATALOG
    resource: tuple[str, ...]  # () is the catalog itself
    action: Action
    created_at: float
    created_by: str | None

    @property
    def on(self) -> str:
        return format_resource(self.catalog, self.resource)

    def describe(self) -> str:
        """``read on default:sales.orders``: for audit details and messages."""
        return f"{self.action} on {self.on}"


def format_resource(catalog: str, resource: tuple[str, ...]) -> str:
    """``catalog`` or ``catalog:ns.sub.table`` (for messages, audit details and the CLI)."""
    return f"{catalog}:{'.'.join(resource)}" if resource else catalog


class GrantIndex:
    """The grants of one service user (its own and its roles'), ready to be asked."""

    __slots__ = ("_held", "_below", "_deepest", "grants", "memo")

    def __init__(self, grants: Iterable[Grant] = ()) -> None:
        self.grants: tuple[Grant, ...] = tuple(grants)
        # Verdicts the request layer derived from this index alone (and the request): valid
        # for as long as the index lives, since a grant change makes a new index. Bounded
        # by its user (catalog.MEMO_SIZE).
        self.memo: dict[Hashable, Any] = {}
        held: dict[tuple[str, tuple[str, ...]], set[Action]] = {}
        below: dict[str, set[tuple[str, ...]]] = {}
        for grant in self.grants:
            held.setdefault((grant.catalog, grant.resource), set()).update(ACTIONS[grant.action])
            prefixes = below.setdefault(grant.catalog, set())
            for depth in range(len(grant.resource) + 1):
                prefixes.add(grant.resource[:depth])
        # (catalog, resource) -> every action a grant there allows (write brings read, ...)
        self._held: Mapping[tuple[str, tuple[str, ...]], frozenset[Action]] = {
            key: frozenset(actions) for key, actions in held.items()
        }
        # catalog -> the granted resources and all their ancestors: what is visible from below
        self._below: Mapping[str, frozenset[tuple[str, ...]]] = {
            catalog: frozenset(prefixes) for catalog, prefixes in below.items()
        }
        # No grant lies deeper than this: the ancestors of a resource are looked up only to
        # here, so a request naming thousands of levels costs no more than a shallow one
        # (the lookups slice the resource, which is linear in its depth each time).
        self._deepest = max((len(grant.resource) for grant in self.grants), default=0)

    def allows(self, catalog: str, resource: tuple[str, ...], action: Action) -> bool:
        """Whether a grant on ``resource`` or one of its ancestors allows ``action``."""
        held = self._held
        if not held:
            return False
        for name in (catalog, ANY_CATALOG):
            for depth in range(min(len(resource), self._deepest) + 1):
                actions = held.get((name, resource[:depth]))
                if actions is not None and action in actions:
                    return True
        return False

    def visible(self, catalog: str, resource: tuple[str, ...]) -> bool:
        """Whether any grant lies on ``resource``, above it or below it: what may be listed,
        HEAD-ed, or shown in a list answer (the ancestors of what one may use are visible)."""
        if not self._held:
            return False
        for name in (catalog, ANY_CATALOG):
            if resource in self._below.get(name, ()):
                return True
            for depth in range(min(len(resource), self._deepest + 1)):
                if (name, resource[:depth]) in self._held:
                    return True
        return False


NO_GRANTS: Final = GrantIndex()
