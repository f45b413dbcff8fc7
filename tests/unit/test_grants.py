"""Least privilege (issue 12), as pure functions: what a ``GrantIndex`` allows and shows, and
what each catalog request needs (``requirements.needs``), body-aware operations included."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from gateway.auth.requirements import Need, needs
from gateway.errors import BadRequest
from gateway.identity.grants import ANY_CATALOG, NO_GRANTS, Grant, GrantIndex
from gateway.routing import ACTIONS, Action, Decision, decide, parse_catalog_path

_ids = itertools.count()


def grant(resource: tuple[str, ...], action: Action, catalog: str = "default") -> Grant:
    return Grant(
        id=f"g{next(_ids)}", tenant_id="t", subject_type="service_user", subject_id="u",
        catalog=catalog, resource=resource, action=action, created_at=0.0, created_by="test",
    )  # fmt: skip


def index(*grants: Grant) -> GrantIndex:
    return GrantIndex(grants)


ORDERS = ("sales", "orders")


# -- GrantIndex.allows ------------------------------------------------------------------------


def test_a_grant_holds_for_everything_below_its_resource() -> None:
    grants = index(grant(("sales",), "read"))

    assert grants.allows("default", ("sales",), "read")
    assert grants.allows("default", ORDERS, "read")
    assert grants.allows("default", ("sales", "eu", "orders"), "read")


def test_a_grant_does_not_hold_above_or_beside_its_resource() -> None:
    grants = index(grant(ORDERS, "read"))

    assert not grants.allows("default", (), "read")  # the catalog
    assert not grants.allows("default", ("sales",), "read")  # the namespace above
    assert not grants.allows("default", ("sales", "customers"), "read")  # a sibling
    assert not grants.allows("default", ("staging", "orders"), "read")  # same name elsewhere


def test_resources_are_compared_by_level_not_by_text() -> None:
    grants = index(grant(("sales",), "read"))

    assert not grants.allows("default", ("salesx",), "read")
    assert not grants.allows("default", ("sale",), "read")
    assert not grants.allows("default", ("sales.orders",), "read")  # one level with a dot


def test_a_grant_on_the_catalog_covers_every_resource_in_it() -> None:
    grants = index(grant((), "write"))

    assert grants.allows("default", (), "write")
    assert grants.allows("default", ("any", "depth", "table"), "write")
    assert grants.allows("default", ("any",), "read")


def test_tables_and_namespaces_share_one_path_space() -> None:
    # A grant on sales.orders covers a namespace sales.orders and what lies in it.
    grants = index(grant(ORDERS, "read"))

    assert grants.allows("default", ("sales", "orders", "t"), "read")


def test_write_implies_read_and_nothing_else() -> None:
    grants = index(grant(ORDERS, "write"))

    assert grants.allows("default", ORDERS, "write")
    assert grants.allows("default", ORDERS, "read")
    for other in ("create", "drop", "manage"):
        assert not grants.allows("default", ORDERS, other)


def test_manage_implies_every_action() -> None:
    grants = index(grant(("sales",), "manage"))

    for action in ACTIONS:
        assert grants.allows("default", ORDERS, action)


@pytest.mark.parametrize("held", ["create", "drop"])
def test_create_and_drop_imply_neither_read_nor_write(held: Action) -> None:
    grants = index(grant(("sales",), held))

    assert grants.allows("default", ORDERS, held)
    assert not grants.allows("default", ORDERS, "read")
    assert not grants.allows("default", ORDERS, "write")


def test_read_implies_nothing_more() -> None:
    grants = index(grant(("sales",), "read"))

    for action in ("write", "create", "drop", "manage"):
        assert not grants.allows("default", ORDERS, action)


def test_grants_add_up_across_resources_and_actions() -> None:
    grants = index(grant(("sales",), "read"), grant(ORDERS, "drop"), grant(ORDERS, "write"))

    assert grants.allows("default", ORDERS, "drop")
    assert grants.allows("default", ORDERS, "write")
    assert grants.allows("default", ("sales", "customers"), "read")
    assert not grants.allows("default", ("sales", "customers"), "drop")
    assert not grants.allows("default", ("sales", "customers"), "write")


def test_the_any_catalog_grant_holds_in_every_catalog() -> None:
    grants = index(grant(("sales",), "read", catalog=ANY_CATALOG))

    assert ANY_CATALOG == "*"
    assert grants.allows("default", ORDERS, "read")
    assert grants.allows("other", ORDERS, "read")
    assert not grants.allows("other", ("staging",), "read")
    assert grants.visible("other", ())


def test_a_grant_in_another_catalog_does_not_cover_this_one() -> None:
    grants = index(grant((), "manage", catalog="other"))

    assert grants.allows("other", ORDERS, "manage")
    assert not grants.allows("default", ORDERS, "read")
    assert not grants.allows("default", (), "read")
    assert not grants.visible("default", ())
    assert not grants.visible("default", ("sales",))


def test_a_catalog_named_like_the_wildcard_text_is_not_the_wildcard() -> None:
    # Only the whole catalog "*" is the wildcard; no glob inside a name.
    grants = index(grant(("sales",), "read", catalog="def*"))

    assert not grants.allows("default", ORDERS, "read")


# -- GrantIndex.visible -----------------------------------------------------------------------


def test_the_ancestors_of_a_granted_resource_are_visible() -> None:
    grants = index(grant(("sales", "eu", "orders"), "read"))

    assert grants.visible("default", ())
    assert grants.visible("default", ("sales",))
    assert grants.visible("default", ("sales", "eu"))
    assert grants.visible("default", ("sales", "eu", "orders"))


def test_what_lies_below_a_granted_resource_is_visible() -> None:
    grants = index(grant(("sales",), "read"))

    assert grants.visible("default", ORDERS)
    assert grants.visible("default", ("sales", "eu", "deep", "table"))


def test_siblings_and_other_branches_are_not_visible() -> None:
    grants = index(grant(("sales", "eu", "orders"), "read"))

    assert not grants.visible("default", ("sales", "us"))
    assert not grants.visible("default", ("sales", "eu", "customers"))
    assert not grants.visible("default", ("staging",))
    assert not grants.visible("default", ("salesx",))


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_any_action_makes_its_resource_visible(action: Action) -> None:
    grants = index(grant(("sales",), action))

    assert grants.visible("default", ())
    assert grants.visible("default", ORDERS)


def test_an_empty_index_allows_and_shows_nothing() -> None:
    for empty in (NO_GRANTS, GrantIndex(), GrantIndex([])):
        assert empty.grants == ()
        assert not empty.allows("default", (), "read")
        assert not empty.allows("default", ORDERS, "read")
        assert not empty.visible("default", ())
        assert not empty.visible(ANY_CATALOG, ())


def test_an_index_keeps_the_grants_it_was_built_from() -> None:
    one = grant(ORDERS, "read")

    assert index(one).grants == (one,)


# -- the cost of a deep resource -------------------------------------------------------------

Held = Mapping[tuple[str, tuple[str, ...]], frozenset[Action]]


class CountingHeld(Mapping[tuple[str, tuple[str, ...]], frozenset[Action]]):
    """An index's ``_held`` that counts the lookups of one question and stops one past
    ``budget`` (so an unbounded walk up a deep resource fails at once, not after slicing it
    for minutes)."""

    def __init__(self, inner: Held, budget: int) -> None:
        self.inner, self.budget, self.lookups = inner, budget, 0

    def __getitem__(self, key: tuple[str, tuple[str, ...]]) -> frozenset[Action]:
        # Mapping's get() and "in" both come here.
        self.lookups += 1
        if self.lookups > self.budget:
            raise AssertionError(f"more than {self.budget} lookups for one question")
        return self.inner[key]

    def __iter__(self) -> Iterator[tuple[str, tuple[str, ...]]]:
        return iter(self.inner)

    def __len__(self) -> int:
        return len(self.inner)


class Counted:
    """An index whose every question may cost only the lookups of a walk bounded by its
    deepest grant: both catalog names (this one and "*"), each down to that depth."""

    def __init__(self, *grants: Grant) -> None:
        self.index = index(*grants)
        deepest = max(len(g.resource) for g in grants)
        self.held = CountingHeld(self.index._held, budget=2 * (deepest + 2))
        self.index._held = self.held

    def allows(self, catalog: str, resource: tuple[str, ...], action: Action) -> bool:
        self.held.lookups = 0
        answer = self.index.allows(catalog, resource, action)
        assert self.held.lookups <= self.held.budget
        return answer

    def visible(self, catalog: str, resource: tuple[str, ...]) -> bool:
        self.held.lookups = 0
        answer = self.index.visible(catalog, resource)
        assert self.held.lookups <= self.held.budget
        return answer


DEEP = 100_000  # levels: what a request line of a few hundred kilobytes can name


def deep(*top: str) -> tuple[str, ...]:
    return (*top, *(f"n{i}" for i in range(DEEP)))


@pytest.mark.parametrize("catalog", ["default", ANY_CATALOG])
def test_a_very_deep_resource_below_a_grant_is_allowed_within_the_shallow_lookups(
    catalog: str,
) -> None:
    grants = Counted(grant(("sales",), "write", catalog), grant(ORDERS, "drop", catalog))

    assert grants.allows("default", deep("sales"), "read")
    assert grants.allows("default", deep("sales"), "write")
    assert grants.allows("default", deep(*ORDERS), "drop")
    assert not grants.allows("default", deep("sales"), "drop")


def test_a_very_deep_resource_outside_every_grant_is_refused_within_the_shallow_lookups() -> None:
    grants = Counted(grant(("sales", "eu", "orders"), "manage"), grant(("hr",), "read"))

    assert not grants.allows("default", deep("staging"), "read")  # another branch
    assert not grants.allows("default", deep("sales", "us"), "read")  # beside the grant
    assert not grants.allows("default", deep("sales", "eu"), "read")  # beside it, deeper
    assert not grants.allows("default", deep("hr"), "write")  # below a grant of another action
    assert not grants.allows("other", deep("hr"), "read")  # another catalog
    assert grants.allows("default", deep("sales", "eu", "orders"), "drop")


def test_visibility_of_a_very_deep_resource_costs_the_shallow_lookups_and_stays_right() -> None:
    grants = Counted(grant(("sales", "eu"), "read"))

    assert grants.visible("default", deep("sales", "eu"))  # below the grant
    assert not grants.visible("default", deep("sales", "us"))  # beside it
    assert not grants.visible("default", deep("sales"))  # below its parent only
    assert not grants.visible("default", deep())
    assert not grants.visible("other", deep("sales", "eu"))
    # The shallow answers are those of before.
    assert grants.visible("default", ("sales",)) and grants.visible("default", ())
    assert grants.visible("default", ("sales", "eu", "orders"))
    assert not grants.visible("default", ("sales", "us"))


def test_a_catalog_wide_grant_answers_a_deep_resource_from_the_top() -> None:
    grants = Counted(grant((), "read"))

    assert grants.held.budget == 4
    assert grants.allows("default", deep("any"), "read")
    assert grants.visible("default", deep("any"))
    assert not grants.allows("default", deep("any"), "write")


# -- requirements.needs -----------------------------------------------------------------------


def decision(method: str, path: str, query: str = "") -> Decision:
    found = decide(parse_catalog_path(path), method, query)
    assert found is not None
    return found


def needs_of(
    method: str, path: str, doc: dict[str, Any] | None = None, query: str = ""
) -> list[tuple[tuple[str, ...], str]]:
    """The (resource, action) pairs of the request, in order."""
    return [
        (need.resource, need.action) for need in needs(decision(method, path, query), doc, query)
    ]


def ident(*levels: str) -> dict[str, Any]:
    *namespace, name = levels
    return {"namespace": namespace, "name": name}


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "namespaces/sales/tables/orders", "", [(ORDERS, "read")]),
        ("HEAD", "namespaces/sales/tables/orders", "", [(ORDERS, "read")]),
        ("DELETE", "namespaces/sales/tables/orders", "", [(ORDERS, "drop")]),
        ("GET", "namespaces/sales/tables/orders/credentials", "", [(ORDERS, "read")]),
        ("POST", "namespaces/sales/properties", "", [(("sales",), "manage")]),
        ("DELETE", "namespaces/sales", "", [(("sales",), "drop")]),
        ("GET", "namespaces", "parent=sales", [(("sales",), "read")]),
        ("GET", "something/else", "", [((), "manage")]),  # an unknown route
    ],
)
def test_an_operation_without_a_body_rule_needs_what_its_url_says(
    method: str, path: str, query: str, expected: list[tuple[tuple[str, ...], str]]
) -> None:
    assert needs_of(method, path, query=query) == expected


@pytest.mark.parametrize(
    ("method", "path", "visibility"),
    [
        ("GET", "config", True),
        ("GET", "namespaces", True),
        ("HEAD", "namespaces/sales", True),
        ("GET", "namespaces/sales/tables", True),
        ("GET", "namespaces/sales/views", True),
        ("GET", "namespaces/sales", False),  # loading metadata needs read itself
        ("GET", "namespaces/sales/tables/orders", False),
    ],
)
def test_listing_and_existence_checks_are_satisfied_by_visibility(
    method: str, path: str, visibility: bool
) -> None:
    (need,) = needs(decision(method, path), None)
    assert need.visibility is visibility
    assert need.action == "read"


# createNamespace


def test_create_namespace_needs_create_on_the_parent() -> None:
    path = "namespaces"
    assert needs_of("POST", path, {"namespace": ["sales", "eu"]}) == [(("sales",), "create")]
    assert needs_of("POST", path, {"namespace": ["top"]}) == [((), "create")]
    assert needs_of("POST", path, {"namespace": ["a", "b", "c"], "properties": {"owner": "x"}}) == [
        (("a", "b"), "create")
    ]


@pytest.mark.parametrize("key", ["location", "LOCATION", "write.data.path", "Write.Metadata.Path"])
def test_create_namespace_setting_a_location_also_needs_manage_on_the_parent(key: str) -> None:
    doc = {"namespace": ["sales", "eu"], "properties": {key: "s3://elsewhere/"}}

    assert needs_of("POST", "namespaces", doc) == [(("sales",), "create"), (("sales",), "manage")]


# createTable / createView


def test_create_table_needs_create_on_the_namespace() -> None:
    doc = {"name": "orders", "schema": {}, "properties": {"owner": "me"}}

    assert needs_of("POST", "namespaces/sales/tables", doc) == [(("sales",), "create")]


@pytest.mark.parametrize(
    "doc",
    [
        {"name": "orders", "location": "s3://elsewhere/orders"},
        {"name": "orders", "properties": {"write.metadata.path": "s3://x/"}},
        {"name": "orders", "properties": {"write.data.path": "s3://x/"}},
        {"name": "orders", "properties": {"write.object-storage.path": "s3://x/"}},
        {"name": "orders", "properties": {"write.folder-storage.path": "s3://x/"}},
        {"name": "orders", "properties": {"WRITE.DATA.PATH": "s3://x/"}},
    ],
)
def test_create_table_placing_its_files_needs_manage(doc: dict[str, Any]) -> None:
    assert needs_of("POST", "namespaces/sales/tables", doc) == [
        (("sales",), "create"),
        (("sales",), "manage"),
    ]


def test_stage_create_also_needs_write_on_the_new_table() -> None:
    doc = {"name": "orders", "schema": {}, "stage-create": True}

    assert needs_of("POST", "namespaces/sales/tables", doc) == [
        (("sales",), "create"),
        (ORDERS, "write"),
    ]
    assert needs_of("POST", "namespaces/sales/tables", {**doc, "stage-create": False}) == [
        (("sales",), "create")
    ]


def test_create_view_setting_a_location_needs_manage() -> None:
    path = "namespaces/sales/views"

    assert needs_of("POST", path, {"name": "v"}) == [(("sales",), "create")]
    assert needs_of("POST", path, {"name": "v", "location": "s3://x/"}) == [
        (("sales",), "create"),
        (("sales",), "manage"),
    ]


# registerTable


def test_register_needs_manage_on_the_namespace_whatever_the_body() -> None:
    """Its metadata-location is arbitrary: create would let one register, and then read,
    another namespace's table."""
    path = "namespaces/sales/register"
    doc = {"name": "orders", "metadata-location": "s3://b/m.json"}

    assert needs_of("POST", path, doc) == [(("sales",), "manage")]
    assert needs_of("POST", path, {**doc, "overwrite": True}) == [(("sales",), "manage")]


def test_a_stage_create_flag_that_is_no_boolean_is_refused() -> None:
    with pytest.raises(BadRequest):
        needs_of("POST", "namespaces/sales/tables", {"name": "t", "stage-create": "true"})


# updateTable / replaceView


def test_update_table_needs_write() -> None:
    doc = {
        "requirements": [],
        "updates": [{"action": "set-properties", "updates": {"owner": "me"}}],
    }

    assert needs_of("POST", "namespaces/sales/tables/orders", doc) == [(ORDERS, "write")]
    assert needs_of("POST", "namespaces/sales/tables/orders", {}) == [(ORDERS, "write")]


@pytest.mark.parametrize(
    "update",
    [
        {"action": "set-location", "location": "s3://elsewhere/"},
        {"action": "SET-LOCATION", "location": "s3://elsewhere/"},
        {"action": "set-properties", "updates": {"write.metadata.path": "s3://x/"}},
        {"action": "set-properties", "updates": {"Location": "s3://x/"}},
    ],
)
def test_update_table_moving_files_needs_manage(update: dict[str, Any]) -> None:
    doc = {"updates": [{"action": "assign-uuid", "uuid": "u"}, update]}

    assert needs_of("POST", "namespaces/sales/tables/orders", doc) == [
        (ORDERS, "write"),
        (ORDERS, "manage"),
    ]


def test_replace_view_with_set_location_needs_manage_on_the_view() -> None:
    path = "namespaces/sales/views/v"
    moved = {"updates": [{"action": "set-location", "location": "s3://x/"}]}

    assert needs_of("POST", path, {"updates": []}) == [(("sales", "v"), "write")]
    assert needs_of("POST", path, moved) == [(("sales", "v"), "write"), (("sales", "v"), "manage")]


# renameTable / renameView


@pytest.mark.parametrize("path", ["tables/rename", "views/rename"])
def test_rename_needs_drop_on_the_source_and_create_on_the_destination_namespace(
    path: str,
) -> None:
    doc = {"source": ident("staging", "orders"), "destination": ident("sales", "eu", "orders2")}

    assert needs_of("POST", path, doc) == [
        (("staging", "orders"), "drop"),
        (("sales", "eu"), "create"),
    ]


# commitTransaction


def test_commit_transaction_needs_write_on_every_table() -> None:
    doc = {
        "table-changes": [
            {"identifier": ident("sales", "orders"), "requirements": [], "updates": []},
            {"identifier": ident("staging", "eu", "t"), "updates": []},
        ]
    }

    assert needs_of("POST", "transactions/commit", doc) == [
        (ORDERS, "write"),
        (("staging", "eu", "t"), "write"),
    ]


def test_commit_transaction_moving_one_tables_files_needs_manage_on_that_table() -> None:
    doc = {
        "table-changes": [
            {"identifier": ident("sales", "orders"), "updates": []},
            {
                "identifier": ident("staging", "t"),
                "updates": [{"action": "set-location", "location": "s3://x/"}],
            },
        ]
    }

    assert needs_of("POST", "transactions/commit", doc) == [
        (ORDERS, "write"),
        (("staging", "t"), "write"),
        (("staging", "t"), "manage"),
    ]


# assert-create: the upstream creates the table (CatalogHandlers.updateTable)


@pytest.mark.parametrize("kind", ["assert-create", "ASSERT-CREATE", "Assert-Create"])
def test_update_table_asserting_create_also_needs_create_on_the_namespace(kind: str) -> None:
    doc = {
        "requirements": [{"type": "assert-table-uuid", "uuid": "u"}, {"type": kind}],
        "updates": [{"action": "set-properties", "updates": {"owner": "me"}}],
    }

    assert needs_of("POST", "namespaces/sales/tables/orders", doc) == [
        (ORDERS, "write"),
        (("sales",), "create"),
    ]
    assert needs_of("POST", "namespaces/sales%1Feu/tables/orders", doc) == [
        (("sales", "eu", "orders"), "write"),
        (("sales", "eu"), "create"),
    ]
    # Other requirements add nothing.
    doc["requirements"] = [{"type": "assert-table-uuid", "uuid": "u"}, {"kind": kind}]
    assert needs_of("POST", "namespaces/sales/tables/orders", doc) == [(ORDERS, "write")]


def test_assert_create_with_a_location_needs_write_create_and_manage() -> None:
    doc = {
        "requirements": [{"type": "assert-create"}],
        "updates": [{"action": "set-location", "location": "s3://elsewhere/"}],
    }

    assert needs_of("POST", "namespaces/sales/tables/orders", doc) == [
        (ORDERS, "write"),
        (("sales",), "create"),
        (ORDERS, "manage"),
    ]


def test_commit_transaction_asserting_create_needs_create_on_that_tables_namespace() -> None:
    doc = {
        "table-changes": [
            {"identifier": ident("sales", "orders"), "requirements": [], "updates": []},
            {"identifier": ident("staging", "eu", "t"),
             "requirements": [{"type": "Assert-Create"}], "updates": []},
        ]
    }  # fmt: skip

    assert needs_of("POST", "transactions/commit", doc) == [
        (ORDERS, "write"),
        (("staging", "eu", "t"), "write"),
        (("staging", "eu"), "create"),
    ]


# the body's identifier and the path


@pytest.mark.parametrize(
    ("path", "resource"),
    [("namespaces/sales/tables/orders", ORDERS), ("namespaces/sales/views/v", ("sales", "v"))],
)
def test_an_identifier_in_the_body_is_accepted_only_as_the_paths(
    path: str, resource: tuple[str, ...]
) -> None:
    doc = {"identifier": ident(*resource), "requirements": [], "updates": []}

    assert needs_of("POST", path, doc) == [(resource, "write")]
    assert needs_of("POST", path, {**doc, "identifier": None}) == [(resource, "write")]
    with pytest.raises(BadRequest, match="identifier differs from the path"):
        needs_of("POST", path, {**doc, "identifier": ident("hr", resource[-1])})


@pytest.mark.parametrize(
    "path", ["namespaces/sales/tables/orders", "namespaces/sales/views/orders"]
)
@pytest.mark.parametrize(
    "identifier",
    [
        ident("hr", "orders"),  # another namespace
        ident("sales", "payroll"),  # another name
        ident("sales", "eu", "orders"),  # a level more
        ident("orders"),  # a level less (no namespace)
        ident("Sales", "orders"),  # names are compared exactly
        "sales.orders",  # not an identifier at all
        {"namespace": "sales", "name": "orders"},
    ],
)
def test_an_identifier_in_the_body_that_differs_from_the_path_is_a_bad_request(
    path: str, identifier: object
) -> None:
    doc = {"identifier": identifier, "requirements": [], "updates": []}

    with pytest.raises(BadRequest) as refused:
        needs(decision("POST", path), doc)

    assert refused.value.detail.startswith("Malformed request: ")
    assert refused.value.status == 400


# requirements and updates must be lists of objects


def change_bodies(field: str, value: object) -> list[tuple[str, dict[str, Any]]]:
    """``field`` set to ``value`` in an updateTable, a replaceView and a commit's change."""
    change = {"requirements": [], "updates": [], field: value}
    return [
        ("namespaces/sales/tables/orders", change),
        ("namespaces/sales/views/v", change),
        ("transactions/commit", {"table-changes": [{"identifier": ident(*ORDERS), **change}]}),
    ]


@pytest.mark.parametrize("field", ["requirements", "updates"])
@pytest.mark.parametrize(
    "value",
    [
        {"type": "assert-create"},  # one object, not a list of them
        {"action": "set-location", "location": "s3://x/"},
        "assert-create",
        5,
        True,
        [None],
        ["assert-create"],
        [["set-location"]],
        [{"type": "assert-create"}, 1],
        [{"action": "set-location", "location": "s3://x/"}, "x"],
    ],
)
def test_requirements_or_updates_that_are_not_a_list_of_objects_are_a_bad_request(
    field: str, value: object
) -> None:
    for path, doc in change_bodies(field, value):
        with pytest.raises(BadRequest) as refused:
            needs(decision("POST", path), doc)
        assert refused.value.detail == f"Malformed request: {field} must be a list of objects"
    for path, doc in change_bodies(field, None):
        needs(decision("POST", path), doc)  # absent or null: none of them, no refusal


# signRequest


@pytest.mark.parametrize(
    ("method", "action"),
    [("GET", "read"), ("HEAD", "read"), ("get", "read"), ("PUT", "write"), ("POST", "write"),
     ("DELETE", "write"), (None, "write"), (5, "write")],
)  # fmt: skip
def test_sign_request_needs_read_for_get_and_head_and_write_otherwise(
    method: object, action: str
) -> None:
    doc: dict[str, Any] = {"region": "us-east-1", "uri": "s3://b/k", "headers": {}}
    if method is not None:
        doc["method"] = method

    assert needs_of("POST", "namespaces/sales/tables/orders/sign", doc) == [(ORDERS, action)]


# dropTable with purge


@pytest.mark.parametrize(
    ("query", "purge"),
    [
        ("purgeRequested=true", True),
        ("purgeRequested=TRUE", True),
        ("x=1&purgeRequested=true", True),
        ("%70urgeRequested=true", True),  # decoded as every server decodes it
        ("purgeRequested=false&purgeRequested=true", True),  # whichever one the upstream reads
        ("purgeRequested=false", False),
        ("purgeRequested=FALSE", False),
        ("purgeRequested=1", True),  # a lenient upstream reads it as true
        ("purgeRequested=", True),
        ("", False),
        ("purgerequested=true", False),
    ],
)
def test_dropping_with_purge_also_needs_write(query: str, purge: bool) -> None:
    expected = [(ORDERS, "drop"), (ORDERS, "write")] if purge else [(ORDERS, "drop")]

    assert needs_of("DELETE", "namespaces/sales/tables/orders", query=query) == expected


def test_the_url_need_of_a_body_aware_operation_keeps_its_visibility_flag() -> None:
    (need,) = needs(decision("POST", "namespaces/sales/tables"), {"name": "t"})
    assert need == Need(("sales",), "create", False)


# malformed bodies


@pytest.mark.parametrize(
    ("method", "path", "doc"),
    [
        ("POST", "namespaces", None),
        ("POST", "namespaces", {}),
        ("POST", "namespaces", {"namespace": []}),
        ("POST", "namespaces", {"namespace": "sales"}),  # a string, not a list of levels
        ("POST", "namespaces", {"namespace": ["sales", ""]}),
        ("POST", "namespaces", {"namespace": ["sales", 5]}),
        ("POST", "namespaces/sales/tables", {"stage-create": True}),  # no name to judge
        ("POST", "namespaces/sales/tables", {"name": "", "stage-create": True}),
        ("POST", "tables/rename", None),
        ("POST", "tables/rename", {"destination": ident("b", "t")}),
        ("POST", "tables/rename", {"source": "a.t", "destination": ident("b", "t")}),
        ("POST", "tables/rename", {"source": ident("a", "t"), "destination": {"name": "t"}}),
        ("POST", "views/rename", {"source": {"namespace": ["a"]}, "destination": ident("b", "v")}),
        ("POST", "views/rename",
         {"source": {"namespace": [], "name": "v"}, "destination": ident("b", "v")}),
        ("POST", "transactions/commit", None),
        ("POST", "transactions/commit", {}),
        ("POST", "transactions/commit", {"table-changes": []}),
        ("POST", "transactions/commit", {"table-changes": {"identifier": ident("a", "t")}}),
        ("POST", "transactions/commit", {"table-changes": ["a.t"]}),
        ("POST", "transactions/commit", {"table-changes": [{"updates": []}]}),
        ("POST", "transactions/commit",
         {"table-changes": [{"identifier": ident("a", "t")}, {"identifier": {"name": "u"}}]}),
        ("POST", "transactions/commit",
         {"table-changes": [{"identifier": {"namespace": ["a"], "name": None}}]}),
    ],
)  # fmt: skip
def test_a_body_that_names_no_target_is_a_bad_request(
    method: str, path: str, doc: dict[str, Any] | None
) -> None:
    with pytest.raises(BadRequest) as refused:
        needs(decision(method, path), doc)

    assert refused.value.detail.startswith("Malformed request: ")
    assert refused.value.status == 400
