"""The store, on each engine (``store`` runs on SQLite and on PostgreSQL), and the service-user
lifecycle API on top of it; what is about the SQLite file itself runs on SQLite only.

"Another process" is a second store object on the same database (``new_store``), exactly what
another worker or another replica holds."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import pytest

from gateway.errors import AlreadyExists, InvalidInput, NoSuchThing
from gateway.identity.bootstrap import initialize
from gateway.identity.models import ServiceUser
from gateway.identity.service_users import ServiceUserAdmin
from gateway.store import DEFAULT_TENANT, PostgresStore, SqliteStore, StoreError
from gateway.store.migrations import MIGRATIONS
from gateway.store.tables import StoreTables

from ..fakes import FakeClock
from .conftest import NewStore


def user_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


def set_user_version(path: Path, version: int) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {version}")


async def schema_version(store: StoreTables) -> int:
    """The version the engine records: SQLite's user_version, PostgreSQL's schema_version."""
    if isinstance(store, SqliteStore):
        return user_version(store.path)
    assert isinstance(store, PostgresStore)
    return await store.schema_version()


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.fixture
def admin(store: StoreTables, clock: FakeClock) -> ServiceUserAdmin:
    return ServiceUserAdmin(store, clock=clock)


async def create(admin: ServiceUserAdmin, name: str = "etl", **kwargs: Any) -> ServiceUser:
    return (await admin.create(name=name, actor="creator", **kwargs)).user


# -- schema and file -------------------------------------------------------------------------


async def test_new_store_is_at_the_latest_schema_version_with_a_default_tenant(
    store: StoreTables,
) -> None:
    assert await schema_version(store) == len(MIGRATIONS)
    assert store.found_version == 0
    tenant = await store.tenant_by_name(DEFAULT_TENANT)
    assert tenant is not None and tenant.name == DEFAULT_TENANT


async def test_reopening_a_store_changes_nothing(new_store: NewStore) -> None:
    async with new_store() as store:
        before = (await store.identity_version(), await store.list_tenants())

    async with new_store() as store:
        assert (await store.identity_version(), await store.list_tenants()) == before
        assert await schema_version(store) == len(MIGRATIONS)
        assert store.found_version == len(MIGRATIONS)


async def test_processes_initializing_one_store_at_once_make_one_root_and_one_key(
    new_store: NewStore,
) -> None:
    # Two containers started together with `init && serve` on one database (compose runs one
    # init, but nothing stops an operator from running two), or two `init` runs on one file.
    async with new_store() as a, new_store() as b:
        results = await asyncio.gather(
            initialize(a, ServiceUserAdmin(a)), initialize(b, ServiceUserAdmin(b))
        )

        assert sorted(result.created for result in results) == [False, True]
        assert [r.root is not None for r in results] == [r.created for r in results]
        assert len(await a.signing_keys()) == 1
        users, _ = await a.list_service_users(tenant_name=DEFAULT_TENANT)
        assert [u.name for u in users] == ["root"]


async def test_store_with_a_newer_schema_is_refused_with_a_clear_error(path: Path) -> None:
    async with SqliteStore(path):
        pass
    set_user_version(path, len(MIGRATIONS) + 1)

    with pytest.raises(StoreError, match=r"schema version \d+, newer than this gateway"):
        await SqliteStore(path).open()
    assert user_version(path) == len(MIGRATIONS) + 1


async def test_refused_open_leaves_no_connection_open(path: Path) -> None:
    async with SqliteStore(path):
        pass
    set_user_version(path, len(MIGRATIONS) + 1)
    store = SqliteStore(path)
    with pytest.raises(StoreError):
        await store.open()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del store
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_store_file_is_created_owner_only(sqlite_store: SqliteStore, path: Path) -> None:
    await create(ServiceUserAdmin(sqlite_store))  # the WAL and shared-memory files exist now too
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        assert mode(file) == 0o600, file


async def test_store_file_is_owner_only_before_sqlite_first_opens_it(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modes: list[int | None] = []
    real_connect = aiosqlite.connect

    def connect(database: Any, **kwargs: Any) -> aiosqlite.Connection:
        modes.append(mode(path) if path.exists() else None)
        return real_connect(database, **kwargs)

    monkeypatch.setattr(aiosqlite, "connect", connect)
    async with SqliteStore(path):
        pass
    assert modes and all(m == 0o600 for m in modes), modes


# -- lifecycle changes and their audit records ------------------------------------------------

Change = Callable[[ServiceUserAdmin, str], Awaitable[object]]

CHANGES: list[Any] = [
    pytest.param(lambda a, id_: a.rotate(id_, actor="alice"), "service_user.rotate", id="rotate"),
    pytest.param(
        lambda a, id_: a.deactivate(id_, actor="alice"), "service_user.deactivate", id="deactivate"
    ),
    pytest.param(
        lambda a, id_: a.reactivate(id_, actor="alice"), "service_user.activate", id="reactivate"
    ),
    pytest.param(lambda a, id_: a.expire(id_, actor="alice"), "service_user.update", id="expire"),
    pytest.param(lambda a, id_: a.delete(id_, actor="alice"), "service_user.delete", id="delete"),
]


async def test_create_commits_the_user_and_exactly_one_audit_record(
    store: StoreTables, admin: ServiceUserAdmin, new_store: NewStore
) -> None:
    user = await create(admin)
    # Read back through another store object: both are committed, not just visible to the
    # writer.
    async with new_store() as other:
        assert await other.service_user(user.id) == user
        records = await other.audit_records(target_id=user.id)
    assert [(r.actor, r.action, r.outcome) for r in records] == [
        ("creator", "service_user.create", "success")
    ]


@pytest.mark.parametrize(("change", "action"), CHANGES)
async def test_each_lifecycle_change_commits_with_exactly_one_audit_record(
    store: StoreTables, admin: ServiceUserAdmin, new_store: NewStore, change: Change, action: str
) -> None:
    user = await create(admin)
    await change(admin, user.id)
    async with new_store() as other:
        records = await other.audit_records(target_id=user.id)
    assert [(r.actor, r.action, r.outcome, r.target_type) for r in records[1:]] == [
        ("alice", action, "success", "service_user")
    ]
    assert records[1].tenant_id == user.tenant_id


async def test_failing_change_leaves_neither_row_nor_audit_record(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    first = await create(admin, "etl")
    version = await store.identity_version()

    with pytest.raises(AlreadyExists):
        await create(admin, "etl")

    assert await store.count_service_users() == 1
    assert [r.target_id for r in await store.audit_records()] == [first.id]
    assert await store.identity_version() == version


async def test_identity_version_increases_with_each_change(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    versions = [await store.identity_version()]
    user = await create(admin)
    versions.append(await store.identity_version())
    for change, _action in (p.values for p in CHANGES):
        await change(admin, user.id)
        versions.append(await store.identity_version())
    assert versions == sorted(set(versions))


async def test_concurrent_rotations_each_advance_the_key_generation(
    admin: ServiceUserAdmin,
) -> None:
    # Tokens carry the key generation: two rotations that both wrote N + 1 would leave tokens
    # minted from the first new key valid after the second rotation.
    user = await create(admin)
    await asyncio.gather(*(admin.rotate(user.id, actor="alice") for _ in range(3)))
    assert (await admin.get(user.id)).key_generation == user.key_generation + 3


async def test_record_last_used_never_moves_time_backwards(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    a, b = await create(admin, "a"), await create(admin, "b")
    await store.record_last_used({a.id: 200.0, b.id: 100.0})
    await store.record_last_used({a.id: 150.0, b.id: 300.0})

    assert [(await admin.get(u.id)).last_used_at for u in (a, b)] == [200.0, 300.0]


async def test_record_last_used_is_not_an_identity_change(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    user = await create(admin)
    version = await store.identity_version()
    await store.record_last_used({user.id: 100.0})
    assert await store.identity_version() == version


async def test_exception_inside_a_transaction_rolls_it_back(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    user = await create(admin)

    with pytest.raises(RuntimeError, match="crash"):
        async with store.transaction() as conn:
            await conn.execute("UPDATE service_users SET active = 0 WHERE id = ?", (user.id,))
            await conn.execute("DELETE FROM audit_log")
            raise RuntimeError("crash")

    assert await store.service_user(user.id) == user
    assert len(await store.audit_records()) == 1
    await admin.deactivate(user.id, actor="alice")  # the store is still usable afterwards
    assert not (await admin.get(user.id)).active


async def make_the_commit_fail(store: StoreTables, user_id: str) -> None:
    """A transaction whose COMMIT itself fails, as on a full disk: a foreign-key violation the
    engine checks only at the commit (SQLite: deferred by a pragma; PostgreSQL: a deferrable
    constraint, on a table made in the transaction, so the rollback removes it too)."""
    async with store.transaction() as conn:
        if isinstance(store, SqliteStore):
            await conn.execute("PRAGMA defer_foreign_keys = ON")
            await conn.execute(
                "UPDATE service_users SET tenant_id = 'no-such-tenant' WHERE id = ?", (user_id,)
            )
        else:
            await conn.execute(
                "CREATE TABLE commit_probe (tenant_id TEXT REFERENCES tenants (id)"
                " DEFERRABLE INITIALLY DEFERRED)"
            )
            await conn.execute("INSERT INTO commit_probe VALUES ('no-such-tenant')")
            await conn.execute("UPDATE service_users SET active = 0 WHERE id = ?", (user_id,))


async def test_failed_commit_rolls_back_and_leaves_the_store_usable(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    user = await create(admin)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.ForeignKeyViolationError)):
        await make_the_commit_fail(store, user.id)

    assert await store.service_user(user.id) == user
    await admin.deactivate(user.id, actor="alice")  # a new transaction can begin
    assert not (await admin.get(user.id)).active


# -- ServiceUserAdmin validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": " \t "}, "name", id="whitespace-name"),
        pytest.param({"name": "x" * 129}, "name", id="name-over-128"),
        pytest.param({"name": "etl\nadmin"}, "name", id="newline-in-name"),
        pytest.param({"name": "etl\x1b[31m"}, "name", id="escape-in-name"),
        pytest.param({"name": "etl\x7f"}, "name", id="del-in-name"),
        pytest.param({"name": "etl\x9b31m"}, "name", id="c1-csi-in-name"),
        pytest.param({"description": "a\x00b"}, "description", id="nul-in-description"),
        pytest.param({"description": "d" * 1025}, "description", id="description-too-long"),
        pytest.param({"role": "Admin"}, "role", id="unknown-role"),
        pytest.param({"expires_at": FakeClock().now - 1}, "expires_at", id="past-expiry"),
        pytest.param({"expires_at": FakeClock().now}, "expires_at", id="expiry-now"),
        pytest.param({"expires_at": float("nan")}, "expires_at", id="nan-expiry"),
    ],
)
async def test_invalid_create_names_the_field_and_stores_nothing(
    store: StoreTables, admin: ServiceUserAdmin, kwargs: dict[str, Any], field: str
) -> None:
    version = await store.identity_version()
    with pytest.raises(InvalidInput) as raised:
        await admin.create(**{"name": "etl", **kwargs}, actor="alice")

    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert await store.count_service_users() == 0
    assert await store.audit_records() == []
    assert await store.identity_version() == version


async def test_create_in_an_unknown_tenant_is_not_found_and_stores_nothing(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    with pytest.raises(NoSuchThing, match="tenant: no such tenant"):
        await admin.create(name="etl", tenant="nope", actor="alice")
    assert await store.count_service_users() == 0
    assert await store.audit_records() == []


async def test_create_accepts_a_name_of_exactly_128_characters_and_strips_it(
    admin: ServiceUserAdmin,
) -> None:
    assert (await create(admin, " " + "x" * 126 + " ")).name == "x" * 126
    assert (await create(admin, "y" * 128)).name == "y" * 128


async def test_set_expiry_refuses_nan_instead_of_clearing_the_expiry(
    store: StoreTables, admin: ServiceUserAdmin, clock: FakeClock
) -> None:
    user = await create(admin, expires_at=clock.now + 60)
    with pytest.raises(InvalidInput) as raised:
        await admin.set_expiry(user.id, float("nan"), actor="alice")
    assert raised.value.field == "expires_at"
    assert (await admin.get(user.id)).expires_at == clock.now + 60


async def test_lifecycle_calls_on_an_unknown_id_are_not_found_and_audit_nothing(
    store: StoreTables, admin: ServiceUserAdmin
) -> None:
    for call in (admin.rotate, admin.deactivate, admin.reactivate, admin.expire, admin.delete):
        with pytest.raises(NoSuchThing):
            await call("no-such-id", actor="alice")
    assert await store.audit_records() == []


@pytest.mark.parametrize("yields", range(12))
async def test_a_write_cancelled_at_any_point_leaves_the_store_writable(
    store: StoreTables, admin: ServiceUserAdmin, yields: int
) -> None:
    # Cancelled while BEGIN (or COMMIT) still runs in aiosqlite's thread: that statement
    # completes after the cancellation, and must not leave the connection in a transaction.
    async def write() -> None:
        async with store.transaction() as conn:
            await conn.execute("UPDATE meta SET value = value WHERE key = 'identity_version'")

    task = asyncio.create_task(write())
    for _ in range(yields):
        await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    user = await create(admin, name=f"after-{yields}")
    assert (await admin.get(user.id)).name == f"after-{yields}"
