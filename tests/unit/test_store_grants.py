"""The store's grants tables (migration 4): roles of a tenant, the service users holding them,
and grants to either; their cascades, their audit records and identity-version bumps, and a
store migrated from schema version 3."""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.identity.grants import AccessRole, Grant
from gateway.identity.models import Role, ServiceUser, Tenant, digest_key, generate_key
from gateway.routing import Action
from gateway.store import (
    DEFAULT_TENANT,
    AuditRecord,
    InUse,
    MissingReference,
    SqliteStore,
    StoreError,
    UniqueViolation,
)
from gateway.store.migrations import MIGRATIONS
from gateway.store.tables import StoreTables

from .conftest import NewStore

_times = itertools.count(1_900_000_000)

GRANT_TABLES = ("access_roles", "role_members", "grants")


# -- helpers ---------------------------------------------------------------------------------


def record(action: str, target_id: str, tenant_id: str, target_type: str = "grant") -> AuditRecord:
    return AuditRecord(
        at=float(next(_times)), actor="alice", action=action, target_type=target_type,
        target_id=target_id, tenant_id=tenant_id, outcome="success",
    )  # fmt: skip


def new_user(tenant: Tenant, name: str = "etl", role: Role = Role.TENANT_USER) -> ServiceUser:
    key = generate_key()
    return ServiceUser(
        id=str(uuid.uuid4()), tenant_id=tenant.id, tenant_name=tenant.name, name=name,
        description="", role=role, key_id=key.key_id, key_digest=digest_key(key),
        created_at=float(next(_times)), created_by="alice", expires_at=None, active=True,
        last_used_at=None, key_rotated_at=None, key_generation=1,
    )  # fmt: skip


def new_role(tenant: Tenant, name: str = "analysts") -> AccessRole:
    return AccessRole(
        id=str(uuid.uuid4()), tenant_id=tenant.id, tenant_name=tenant.name, name=name,
        description="reads sales", created_at=float(next(_times)), created_by="alice",
    )  # fmt: skip


def new_grant(
    subject: ServiceUser | AccessRole,
    resource: tuple[str, ...] = ("sales",),
    action: Action = "read",
    catalog: str = "default",
) -> Grant:
    return Grant(
        id=str(uuid.uuid4()), tenant_id=subject.tenant_id,
        subject_type="service_user" if isinstance(subject, ServiceUser) else "role",
        subject_id=subject.id, catalog=catalog, resource=resource, action=action,
        created_at=float(next(_times)), created_by="alice",
    )  # fmt: skip


async def default_tenant(store: SqliteStore) -> Tenant:
    tenant = await store.tenant_by_name(DEFAULT_TENANT)
    assert tenant is not None
    return tenant


async def add_user(
    store: SqliteStore, name: str = "etl", role: Role = Role.TENANT_USER
) -> ServiceUser:
    user = new_user(await default_tenant(store), name, role)
    await store.insert_service_user(user, record("service_user.create", user.id, user.tenant_id))
    return user


async def add_role(store: SqliteStore, name: str = "analysts") -> AccessRole:
    role = new_role(await default_tenant(store), name)
    await store.insert_access_role(role, record("role.create", role.id, role.tenant_id, "role"))
    return role


async def add_grant(store: SqliteStore, subject: ServiceUser | AccessRole, **kwargs: Any) -> Grant:
    grant = new_grant(subject, **kwargs)
    await store.insert_grant(grant, record("grant.create", grant.id, grant.tenant_id))
    return grant


async def assign(store: SqliteStore, role: AccessRole, user: ServiceUser) -> bool:
    return await store.add_role_member(
        role.id, user.id, record("role.assign", role.id, role.tenant_id, "role")
    )


def ids(grants: Sequence[Grant]) -> set[str]:
    return {g.id for g in grants}


async def rows(store: StoreTables, table: str) -> list[tuple[Any, ...]]:
    """A table's rows, read through the store's read connection (what is committed)."""
    found = await store._fetchall(f"SELECT * FROM {table}")
    return sorted((tuple(row) for row in found), key=repr)


def file_rows(path: Path, table: str) -> list[tuple[Any, ...]]:
    """A SQLite file's table, read with a connection of its own (before a store opens it)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=repr)


async def grant_tables(store: StoreTables) -> dict[str, list[tuple[Any, ...]]]:
    return {table: await rows(store, table) for table in GRANT_TABLES}


async def audit_actions(store: SqliteStore) -> list[tuple[str, str | None, str]]:
    return [(r.action, r.target_id, r.outcome) for r in await store.audit_records()]


# -- roles -----------------------------------------------------------------------------------


async def test_an_inserted_role_is_found_by_id_by_name_and_in_its_tenants_list(
    store: SqliteStore,
) -> None:
    role = await add_role(store, "analysts")
    other = await add_role(store, "auditors")

    assert await store.access_role(role.id) == role
    assert await store.access_role_by_name(role.tenant_id, "analysts") == role
    assert await store.list_access_roles(tenant_id=role.tenant_id) == [role, other]
    assert await store.list_access_roles(tenant_id=None) == [role, other]
    assert await store.list_access_roles(tenant_id=str(uuid.uuid4())) == []
    assert await store.access_role(str(uuid.uuid4())) is None


async def test_a_role_name_is_unique_within_its_tenant_only(store: SqliteStore) -> None:
    await add_role(store, "analysts")
    acme = await store.insert_tenant("acme", record("tenant.create", "", "", "tenant"))
    in_acme = new_role(acme, "analysts")

    await store.insert_access_role(in_acme, record("role.create", in_acme.id, acme.id, "role"))
    with pytest.raises(UniqueViolation):
        await add_role(store, "analysts")

    assert [r.tenant_name for r in await store.list_access_roles(tenant_id=None)] == [
        "acme",
        DEFAULT_TENANT,
    ]


async def test_members_are_listed_for_the_role_and_roles_for_the_member(
    store: SqliteStore,
) -> None:
    analysts, auditors = await add_role(store, "analysts"), await add_role(store, "auditors")
    etl, bi = await add_user(store, "etl"), await add_user(store, "bi")

    assert await assign(store, analysts, etl)
    assert await assign(store, analysts, bi)
    assert await assign(store, auditors, etl)

    assert await store.role_members(analysts.id) == [etl.id, bi.id]  # in the order added
    assert await store.roles_of(etl.id) == [analysts, auditors]
    assert await store.roles_of(bi.id) == [analysts]


async def test_assigning_a_held_role_or_removing_one_not_held_changes_and_records_nothing(
    store: SqliteStore, path: Path
) -> None:
    role, etl, bi = await add_role(store), await add_user(store, "etl"), await add_user(store, "bi")
    await assign(store, role, etl)
    before = (await grant_tables(store), await audit_actions(store), await store.identity_version())

    assert not await assign(store, role, etl)
    assert not await store.remove_role_member(
        role.id, bi.id, record("role.unassign", role.id, role.tenant_id, "role")
    )

    after = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert after == before


async def test_removing_a_member_takes_the_role_away(store: SqliteStore) -> None:
    role, etl = await add_role(store), await add_user(store)
    await assign(store, role, etl)

    assert await store.remove_role_member(
        role.id, etl.id, record("role.unassign", role.id, role.tenant_id, "role")
    )

    assert await store.role_members(role.id) == []
    assert await store.roles_of(etl.id) == []


# -- grants ----------------------------------------------------------------------------------


async def test_an_inserted_grant_reads_back_equal_whatever_its_depth(store: SqliteStore) -> None:
    etl = await add_user(store)
    catalog = await add_grant(store, etl, resource=(), action="manage")
    deep = await add_grant(store, etl, resource=("sales", "eu", "orders"), action="write")
    anywhere = await add_grant(store, etl, resource=("sales",), catalog="*")

    for grant in (catalog, deep, anywhere):
        assert await store.grant(grant.id) == grant
    assert await store.grant(str(uuid.uuid4())) is None


async def test_grants_are_listed_by_tenant_subject_and_catalog(store: SqliteStore) -> None:
    etl, bi, role = await add_user(store, "etl"), await add_user(store, "bi"), await add_role(store)
    own = await add_grant(store, etl, resource=("sales",))
    elsewhere = await add_grant(store, etl, resource=("sales",), catalog="lake")
    others = await add_grant(store, bi, resource=("hr",))
    roles = await add_grant(store, role, resource=("finance",))

    assert ids(await store.list_grants()) == {own.id, elsewhere.id, others.id, roles.id}
    assert ids(await store.list_grants(tenant_id=etl.tenant_id)) == {
        own.id, elsewhere.id, others.id, roles.id,
    }  # fmt: skip
    assert await store.list_grants(tenant_id=str(uuid.uuid4())) == []
    assert ids(await store.list_grants(service_user_id=etl.id)) == {own.id, elsewhere.id}
    assert ids(await store.list_grants(service_user_id=etl.id, catalog="lake")) == {elsewhere.id}
    assert await store.list_grants(role_id=role.id) == [roles]
    # A role's grants are its own: listing a member's grants does not include them.
    await assign(store, role, etl)
    assert roles.id not in ids(await store.list_grants(service_user_id=etl.id))


async def test_effective_grants_are_the_users_own_and_those_of_every_role_it_holds(
    store: SqliteStore,
) -> None:
    etl, bi = await add_user(store, "etl"), await add_user(store, "bi")
    analysts, auditors, unheld = (
        await add_role(store, "analysts"), await add_role(store, "auditors"),
        await add_role(store, "writers"),
    )  # fmt: skip
    own = await add_grant(store, etl, resource=("sales",))
    from_analysts = await add_grant(store, analysts, resource=("finance",))
    from_auditors = await add_grant(store, auditors, resource=("hr",), action="write")
    await add_grant(store, unheld, resource=("ops",), action="manage")
    await add_grant(store, bi, resource=("marketing",))
    await assign(store, analysts, etl)
    await assign(store, auditors, etl)

    effective = await store.grants_of_service_user(etl.id)

    assert sorted(effective, key=lambda g: g.id) == sorted(
        [own, from_analysts, from_auditors], key=lambda g: g.id
    )
    assert ids(await store.grants_of_service_user(bi.id)) == ids(
        await store.list_grants(service_user_id=bi.id)
    )
    assert await store.grants_of_service_user(str(uuid.uuid4())) == []


async def test_the_same_right_held_directly_and_through_a_role_is_both_grants(
    store: SqliteStore,
) -> None:
    etl, role = await add_user(store), await add_role(store)
    direct = await add_grant(store, etl, resource=("sales",))
    through_role = await add_grant(store, role, resource=("sales",))
    await assign(store, role, etl)

    assert sorted(g.id for g in await store.grants_of_service_user(etl.id)) == sorted(
        [direct.id, through_role.id]
    )


async def test_granting_a_subject_the_same_action_on_the_same_resource_twice_is_a_violation(
    store: SqliteStore, path: Path
) -> None:
    etl, role = await add_user(store), await add_role(store)
    await add_grant(store, etl, resource=("sales", "orders"), action="write")
    await add_grant(store, role, resource=("sales", "orders"), action="write")
    before = (await grant_tables(store), await audit_actions(store), await store.identity_version())

    for subject in (etl, role):
        with pytest.raises(UniqueViolation):
            await add_grant(store, subject, resource=("sales", "orders"), action="write")

    after = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert after == before


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"action": "read"}, id="other-action"),
        pytest.param({"resource": ("sales",)}, id="parent-resource"),
        pytest.param({"resource": ("sales", "orders", "eu")}, id="child-resource"),
        pytest.param({"resource": ("sales.orders",)}, id="one-level-with-a-dot"),
        pytest.param({"catalog": "*"}, id="any-catalog"),
        pytest.param({"catalog": "lake"}, id="other-catalog"),
    ],
)
async def test_grants_differing_in_action_resource_or_catalog_are_not_duplicates(
    store: SqliteStore, change: dict[str, Any]
) -> None:
    etl = await add_user(store)
    first = await add_grant(store, etl, resource=("sales", "orders"), action="write")
    second = await add_grant(
        store, etl, **{"resource": ("sales", "orders"), "action": "write", **change}
    )
    assert ids(await store.list_grants(service_user_id=etl.id)) == {first.id, second.id}


async def test_a_revoked_grant_is_gone_and_revoking_it_again_changes_nothing(
    store: SqliteStore, path: Path
) -> None:
    etl = await add_user(store)
    grant = await add_grant(store, etl)

    assert await store.delete_grant(grant.id, record("grant.delete", grant.id, grant.tenant_id))
    assert await store.grant(grant.id) is None
    assert await store.grants_of_service_user(etl.id) == []

    before = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert not await store.delete_grant(grant.id, record("grant.delete", grant.id, etl.tenant_id))
    after = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert after == before


# -- cascades --------------------------------------------------------------------------------


async def test_deleting_a_service_user_deletes_its_grants_and_memberships_not_its_roles(
    store: SqliteStore, path: Path
) -> None:
    etl, bi, role = await add_user(store, "etl"), await add_user(store, "bi"), await add_role(store)
    await add_grant(store, etl, resource=("sales",))
    await add_grant(store, etl, resource=("hr",), action="write")
    kept = await add_grant(store, bi, resource=("sales",))
    role_grant = await add_grant(store, role, resource=("finance",))
    await assign(store, role, etl)
    await assign(store, role, bi)

    assert await store.delete_service_user(
        etl.id, record("service_user.delete", etl.id, etl.tenant_id, "service_user")
    )

    assert await store.list_grants(service_user_id=etl.id) == []
    assert await store.access_role(role.id) == role
    assert await store.role_members(role.id) == [bi.id]
    assert ids(await store.list_grants()) == {kept.id, role_grant.id}
    assert [row[1] for row in await rows(store, "role_members")] == [bi.id]


async def test_deleting_a_role_deletes_its_grants_and_memberships_not_its_members(
    store: SqliteStore, path: Path
) -> None:
    etl, role, other = await add_user(store), await add_role(store), await add_role(store, "bi")
    own = await add_grant(store, etl, resource=("sales",))
    await add_grant(store, role, resource=("finance",))
    others = await add_grant(store, other, resource=("hr",))
    await assign(store, role, etl)
    await assign(store, other, etl)

    assert await store.delete_access_role(role.id, record("role.delete", role.id, role.tenant_id))

    assert await store.access_role(role.id) is None
    assert await store.service_user(etl.id) == etl
    assert await store.roles_of(etl.id) == [other]
    assert ids(await store.grants_of_service_user(etl.id)) == {own.id, others.id}
    assert ids(await store.list_grants()) == {own.id, others.id}
    assert [row[0] for row in await rows(store, "role_members")] == [other.id]


async def test_deleting_an_unknown_role_changes_and_records_nothing(
    store: SqliteStore, path: Path
) -> None:
    await add_role(store)
    before = (await grant_tables(store), await audit_actions(store), await store.identity_version())

    missing = str(uuid.uuid4())
    assert not await store.delete_access_role(missing, record("role.delete", missing, ""))

    after = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert after == before


# -- a service user leaving the TenantUser role ------------------------------------------------


def update(user: ServiceUser, changes: dict[str, Any]) -> tuple[str, dict[str, Any], AuditRecord]:
    return user.id, changes, record("service_user.update", user.id, user.tenant_id, "service_user")


@pytest.mark.parametrize("role", [Role.TENANT_ADMIN, Role.ROOT])
async def test_a_service_user_given_a_full_access_role_loses_its_grants_and_roles_in_that_change(
    store: SqliteStore, new_store: NewStore, role: Role
) -> None:
    await add_user(store, "root", Role.ROOT)  # so that etl, made Root, may be demoted again
    etl, bi = await add_user(store, "etl"), await add_user(store, "bi")
    analysts = await add_role(store)
    await add_grant(store, etl, resource=("sales",))
    await add_grant(store, etl, resource=(), action="manage", catalog="*")
    kept = [await add_grant(store, bi), await add_grant(store, analysts, resource=("hr",))]
    await assign(store, analysts, etl)
    await assign(store, analysts, bi)
    records = len(await store.audit_records())
    version = await store.identity_version()

    assert await store.update_service_user(*update(etl, {"role": role.value}))

    # Read back through another connection: committed with its one record and one bump.
    async with new_store() as other:
        assert await other.grants_of_service_user(etl.id) == []
        assert await other.roles_of(etl.id) == []
        assert [r.action for r in (await other.audit_records())[records:]] == [
            "service_user.update"
        ]
        assert await other.identity_version() == version + 1
    # Nobody else's: the other member, the role and its grants stay.
    assert ids(await store.list_grants()) == ids(kept)
    assert await store.role_members(analysts.id) == [bi.id]
    assert await store.access_role(analysts.id) == analysts
    user = await store.service_user(etl.id)
    assert user is not None and user.role is role

    # Made a TenantUser again, it starts with nothing: what it held is not restored.
    assert await store.update_service_user(*update(etl, {"role": Role.TENANT_USER.value}))
    assert await store.grants_of_service_user(etl.id) == []
    assert await store.roles_of(etl.id) == []
    assert ids(await store.list_grants()) == ids(kept)


async def test_changes_that_keep_the_tenant_user_role_keep_its_grants_and_roles(
    store: SqliteStore, path: Path
) -> None:
    etl, analysts = await add_user(store), await add_role(store)
    own = await add_grant(store, etl)
    await assign(store, analysts, etl)
    before = await grant_tables(store)

    for changes in (
        {"description": "loads sales"},
        {"role": Role.TENANT_USER.value, "description": "still a user"},
        {"active": 0},
    ):
        assert await store.update_service_user(*update(etl, changes))

    assert await grant_tables(store) == before
    assert ids(await store.grants_of_service_user(etl.id)) == {own.id}
    # The one change that takes them away; an unknown user's takes nothing.
    ghost = new_user(await default_tenant(store), "ghost")
    assert not await store.update_service_user(*update(ghost, {"role": "TenantAdmin"}))
    assert await grant_tables(store) == before
    assert await store.update_service_user(*update(etl, {"role": "TenantAdmin"}))
    assert (await grant_tables(store))["grants"] == []


async def test_a_tenants_grants_are_counted_whether_of_its_users_or_its_roles(
    store: SqliteStore,
) -> None:
    etl, analysts = await add_user(store), await add_role(store)
    acme = await store.insert_tenant("acme", record("tenant.create", "", "", "tenant"))
    theirs = new_user(acme, "acme-etl")
    await store.insert_service_user(
        theirs, record("service_user.create", theirs.id, acme.id, "service_user")
    )
    assert await store.count_grants(etl.tenant_id) == 0

    await add_grant(store, etl, resource=("sales",))
    await add_grant(store, etl, resource=("hr",))
    await add_grant(store, analysts, resource=("finance",))
    await add_grant(store, theirs, resource=("sales",))

    assert await store.count_grants(etl.tenant_id) == 3
    assert await store.count_grants(acme.id) == 1


# -- every change: one audit record and one identity-version bump, in its transaction --------


@dataclass(frozen=True)
class Setup:
    """What each change works on: a user, a member already holding ``role``, a grant."""

    user: ServiceUser
    member: ServiceUser
    role: AccessRole
    grant: Grant


Change = Callable[[SqliteStore, Setup], Awaitable[str]]


async def _setup(store: SqliteStore) -> Setup:
    user, member, role = (
        await add_user(store, "etl"),
        await add_user(store, "bi"),
        await add_role(store),
    )
    await assign(store, role, member)
    return Setup(user, member, role, await add_grant(store, user))


async def _insert_role(store: SqliteStore, setup: Setup) -> str:
    role = new_role(await default_tenant(store), "writers")
    await store.insert_access_role(role, record("role.create", role.id, role.tenant_id, "role"))
    return role.id


async def _delete_role(store: SqliteStore, setup: Setup) -> str:
    role = setup.role
    assert await store.delete_access_role(
        role.id, record("role.delete", role.id, role.tenant_id, "role")
    )
    return role.id


async def _assign(store: SqliteStore, setup: Setup) -> str:
    assert await assign(store, setup.role, setup.user)
    return setup.role.id


async def _unassign(store: SqliteStore, setup: Setup) -> str:
    role = setup.role
    assert await store.remove_role_member(
        role.id, setup.member.id, record("role.unassign", role.id, role.tenant_id, "role")
    )
    return role.id


async def _insert_grant(store: SqliteStore, setup: Setup) -> str:
    grant = new_grant(setup.user, resource=("hr",), action="write")
    await store.insert_grant(grant, record("grant.create", grant.id, grant.tenant_id))
    return grant.id


async def _insert_role_grant(store: SqliteStore, setup: Setup) -> str:
    grant = new_grant(setup.role, resource=("hr",), action="drop")
    await store.insert_grant(grant, record("grant.create", grant.id, grant.tenant_id))
    return grant.id


async def _delete_grant(store: SqliteStore, setup: Setup) -> str:
    grant = setup.grant
    assert await store.delete_grant(grant.id, record("grant.delete", grant.id, grant.tenant_id))
    return grant.id


CHANGES: list[Any] = [
    pytest.param(_insert_role, "role.create", id="insert-role"),
    pytest.param(_delete_role, "role.delete", id="delete-role"),
    pytest.param(_assign, "role.assign", id="add-member"),
    pytest.param(_unassign, "role.unassign", id="remove-member"),
    pytest.param(_insert_grant, "grant.create", id="insert-user-grant"),
    pytest.param(_insert_role_grant, "grant.create", id="insert-role-grant"),
    pytest.param(_delete_grant, "grant.delete", id="delete-grant"),
]


@pytest.mark.parametrize(("change", "action"), CHANGES)
async def test_each_change_commits_with_exactly_one_audit_record_and_one_version_bump(
    store: SqliteStore, new_store: NewStore, change: Change, action: str
) -> None:
    setup = await _setup(store)
    records = len(await store.audit_records())
    version = await store.identity_version()
    notified: list[int] = []
    store.add_change_listener(lambda: notified.append(1))

    target = await change(store, setup)

    # Read back through another connection: the change and its record were both committed.
    async with new_store() as other:
        new = (await other.audit_records())[records:]
        assert await other.identity_version() == version + 1
    assert [(r.action, r.target_id, r.outcome, r.actor) for r in new] == [
        (action, target, "success", "alice")
    ]
    assert notified == [1]  # this process's caches are told once, after the commit


async def test_a_failed_change_writes_no_audit_record_and_bumps_no_version(
    store: SqliteStore, path: Path
) -> None:
    setup = await _setup(store)
    user, role = setup.user, setup.role
    notified: list[int] = []
    store.add_change_listener(lambda: notified.append(1))
    before = (await grant_tables(store), await audit_actions(store), await store.identity_version())

    with pytest.raises(UniqueViolation):
        await store.insert_access_role(
            new_role(await default_tenant(store), role.name),
            record("role.create", "x", role.tenant_id, "role"),
        )
    with pytest.raises(UniqueViolation):
        await add_grant(store, user)  # the same read on sales again
    # A grant to nobody, and a membership of a role that does not exist: refused by the
    # foreign keys, inside the transaction that would have written the record.
    with pytest.raises(MissingReference):
        ghost = new_user(await default_tenant(store), "ghost")
        await store.insert_grant(new_grant(ghost), record("grant.create", "x", ghost.tenant_id))
    with pytest.raises(MissingReference):
        await store.add_role_member(
            str(uuid.uuid4()), user.id, record("role.assign", "x", user.tenant_id, "role")
        )

    after = (await grant_tables(store), await audit_actions(store), await store.identity_version())
    assert after == before
    assert notified == []


# -- insert_service_user with its first rights ------------------------------------------------


async def test_a_service_user_inserted_with_grants_and_roles_holds_them_in_one_change(
    store: SqliteStore, path: Path
) -> None:
    analysts, auditors = await add_role(store, "analysts"), await add_role(store, "auditors")
    role_grant = await add_grant(store, analysts, resource=("finance",))
    version = await store.identity_version()
    records = len(await store.audit_records())
    user = new_user(await default_tenant(store))
    grants = [new_grant(user, resource=("sales",)), new_grant(user, resource=(), catalog="*")]

    await store.insert_service_user(
        user, record("service_user.create", user.id, user.tenant_id, "service_user"),
        grants=grants, role_ids=[analysts.id, auditors.id, analysts.id],
    )  # fmt: skip

    assert await store.service_user(user.id) == user
    assert ids(await store.list_grants(service_user_id=user.id)) == ids(grants)
    assert await store.roles_of(user.id) == [analysts, auditors]
    assert ids(await store.grants_of_service_user(user.id)) == ids([*grants, role_grant])
    assert await store.identity_version() == version + 1
    assert [r.action for r in (await store.audit_records())[records:]] == ["service_user.create"]


@pytest.mark.parametrize("bad", ["unknown-role", "duplicate-grant", "grant-check"])
async def test_a_service_user_insert_with_a_bad_right_inserts_nothing_at_all(
    store: SqliteStore, path: Path, bad: str
) -> None:
    role = await add_role(store)
    before = (
        await grant_tables(store), await rows(store, "service_users"), await audit_actions(store),
        await store.identity_version(),
    )  # fmt: skip
    user = new_user(await default_tenant(store))
    grants = [new_grant(user, resource=("sales",))]
    role_ids = [role.id]
    if bad == "unknown-role":
        role_ids.append(str(uuid.uuid4()))
    elif bad == "duplicate-grant":
        grants.append(new_grant(user, resource=("sales",)))
    else:  # an action the table's CHECK refuses
        grants.append(new_grant(user, action="admin"))  # type: ignore[arg-type]

    with pytest.raises(StoreError):
        await store.insert_service_user(
            user, record("service_user.create", user.id, user.tenant_id, "service_user"),
            grants=grants, role_ids=role_ids,
        )  # fmt: skip

    after = (
        await grant_tables(store), await rows(store, "service_users"), await audit_actions(store),
        await store.identity_version(),
    )  # fmt: skip
    assert after == before
    assert await store.service_user(user.id) is None


# -- tenants ---------------------------------------------------------------------------------


async def test_a_tenant_with_a_role_cannot_be_deleted_until_the_role_is(
    store: SqliteStore,
) -> None:
    acme = await store.insert_tenant("acme", record("tenant.create", "", "", "tenant"))
    role = new_role(acme)
    await store.insert_access_role(role, record("role.create", role.id, acme.id, "role"))
    records = len(await store.audit_records())

    with pytest.raises(InUse, match="it still has 1 roles"):
        await store.delete_tenant(acme.id, record("tenant.delete", acme.id, acme.id, "tenant"))
    assert await store.tenant(acme.id) == acme
    assert await store.access_role(role.id) == role
    assert len(await store.audit_records()) == records

    await store.delete_access_role(role.id, record("role.delete", role.id, acme.id, "role"))
    assert await store.delete_tenant(acme.id, record("tenant.delete", acme.id, acme.id, "tenant"))
    assert await store.tenant(acme.id) is None


# -- migration from schema version 3 ------------------------------------------------------------


def make_version_3_store(path: Path) -> dict[str, Any]:
    """A store file as a gateway of schema version 3 left it, with a tenant, a service user,
    an audit record and a usage count in it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data: dict[str, Any] = {
        "tenant": (str(uuid.uuid4()), DEFAULT_TENANT, 1_800_000_000.0),
        "user_id": str(uuid.uuid4()),
        "key_id": "k" + uuid.uuid4().hex[:15],
    }
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, script in enumerate((m.sqlite for m in MIGRATIONS[:3]), start=1):
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        conn.execute("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)", data["tenant"])
        conn.execute(
            "INSERT INTO service_users (id, tenant_id, name, role, key_id, key_digest,"
            " created_at, created_by) VALUES (?, ?, 'etl', 'TenantUser', ?, ?, 1.8e9, 'init')",
            (data["user_id"], data["tenant"][0], data["key_id"], b"\x01" * 32),
        )
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, target_type, target_id, tenant_id,"
            " outcome) VALUES (1.8e9, 'init', 'service_user.create', 'service_user', ?, ?,"
            " 'success')",
            (data["user_id"], data["tenant"][0]),
        )
        conn.execute(
            "INSERT INTO usage_daily (service_user_id, day, requests) VALUES (?, '2030-01-01', 5)",
            (data["user_id"],),
        )
        conn.execute("UPDATE meta SET value = '7' WHERE key = 'identity_version'")
    return data


def table_names(path: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


async def test_a_version_3_store_gains_the_grant_tables_with_its_data_intact(
    path: Path,
) -> None:
    data = make_version_3_store(path)
    assert not set(GRANT_TABLES) & table_names(path)
    kept = {table: file_rows(path, table) for table in ("tenants", "service_users", "audit_log")}

    async with SqliteStore(path) as store:
        assert set(GRANT_TABLES) <= table_names(path)
        with contextlib.closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        for table, before in kept.items():
            # Later migrations may add columns (empty for old rows); the old ones are intact.
            after = file_rows(path, table)
            assert [row[: len(old)] for row, old in zip(after, before, strict=True)] == before
            assert all(
                v is None for row, old in zip(after, before, strict=True) for v in row[len(old) :]
            )
        assert await store.identity_version() == 7
        assert await store.usage_of(data["user_id"], "2030-01-01") == {"2030-01-01": 5}
        user = await store.service_user(data["user_id"])
        assert user is not None and user.key_id == data["key_id"]
        assert await store.grants_of_service_user(user.id) == []

        # The old service user can be given roles and grants at once.
        role = new_role(await default_tenant(store))
        await store.insert_access_role(role, record("role.create", role.id, user.tenant_id))
        grant = await add_grant(store, user)
        await assign(store, role, user)
        assert await store.grants_of_service_user(user.id) == [grant]
        assert await store.roles_of(user.id) == [role]
