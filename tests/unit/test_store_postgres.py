"""What is particular to the PostgreSQL store (``gateway.store.postgres``): the schema version
in ``schema_version``, replicas migrating one database at once, refusing an older or newer
schema, writes from several replicas serialized without loss, and a URL that may carry a
password and is never shown.

The engine-neutral behaviour runs on PostgreSQL too, in the parametrised store suites
(test_store.py, test_sessions.py). "A replica" here is another ``PostgresStore`` object on the
same database: its own pool, as another gateway process on another host has.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.audit.queue import AuditQueue
from gateway.identity.models import Role, ServiceUser
from gateway.identity.service_users import ServiceUserAdmin
from gateway.identity.tenants import TenantDirectory
from gateway.identity.users import UserAdmin
from gateway.settings import Settings, StoreSettings, load_settings
from gateway.store import (
    DEFAULT_TENANT,
    ClientInfo,
    LastRoot,
    PostgresStore,
    Store,
    StoreError,
    make_store,
)
from gateway.store.migrations import MIGRATIONS

from ..fakes import FakeClock
from ..postgres import PostgresServer
from ..processes import free_port

CURRENT = len(MIGRATIONS)


def _tables() -> list[str]:
    """Every table the migrations leave (created, less what was renamed, under its new name),
    and the engine's own record of the version."""
    tables = {"schema_version"}
    for migration in MIGRATIONS:
        tables |= set(re.findall(r"CREATE TABLE (\w+)", migration.sqlite))
        for old, new in re.findall(r"ALTER TABLE (\w+) RENAME TO (\w+)", migration.sqlite):
            tables = (tables - {old}) | {new}
    return sorted(tables)


TABLES = _tables()
# Rounds of the two-replica race below: each is decided by timing, so one proves little.
RACE_ROUNDS = 5


@asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    connection: asyncpg.Connection = await asyncpg.connect(url)
    try:
        yield connection
    finally:
        await connection.close()


async def table_names(db: asyncpg.Connection) -> list[str]:
    """The public tables, one entry per table found (a table made twice would show twice)."""
    rows = await db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        " ORDER BY table_name"
    )
    return [row[0] for row in rows]


async def snapshot(url: str) -> dict[str, Any]:
    """What a refused or repeated open must leave as it was: the tables, the recorded version,
    the tenants and the identity version."""
    async with connected(url) as db:
        tables = await table_names(db)
        state: dict[str, Any] = {"tables": tables}
        for table in ("schema_version", "tenants", "meta"):
            if table in tables:
                rows = await db.fetch(f"SELECT * FROM {table}")
                state[table] = sorted(tuple(row) for row in rows)
        return state


async def make_database_at_version(url: str, version: int) -> str:
    """A database as a gateway of schema ``version`` left it: the first ``version`` migrations'
    PostgreSQL scripts applied by hand, the version recorded, the default tenant made. Returns
    the tenant's id."""
    tenant_id = "00000000-0000-4000-8000-000000000003"
    async with connected(url) as db, db.transaction():
        for migration in MIGRATIONS[:version]:
            await db.execute(migration.postgres)
        await db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        await db.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
        await db.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, 1.0)",
            tenant_id, DEFAULT_TENANT,
        )  # fmt: skip
    return tenant_id


async def set_schema_version(url: str, version: int) -> None:
    async with connected(url) as db:
        await db.execute("UPDATE schema_version SET version = $1", version)


async def assert_closed(store: PostgresStore) -> None:
    """A refused open keeps no pool (no connection to leak)."""
    with pytest.raises(StoreError, match="store is not open"):
        await store.ping()


@asynccontextmanager
async def replicas(url: str, count: int = 2) -> AsyncIterator[list[PostgresStore]]:
    """``count`` store objects on one database, each with its own pool, opened one by one."""
    stores = [PostgresStore(url) for _ in range(count)]
    try:
        for store in stores:
            await store.open()
        yield stores
    finally:
        for store in stores:
            await store.close()


# -- schema ------------------------------------------------------------------------------------


async def test_a_fresh_database_migrates_to_the_latest_version_with_a_default_tenant(
    postgres_url: str,
) -> None:
    async with make_store(StoreSettings(url=postgres_url, pool_size=2)) as store:
        assert isinstance(store, PostgresStore)
        assert store.found_version == 0
        assert await store.schema_version() == CURRENT
        tenant = await store.tenant_by_name(DEFAULT_TENANT)
        assert tenant is not None
    state = await snapshot(postgres_url)
    assert state["tables"] == TABLES
    assert state["schema_version"] == [(CURRENT,)]
    assert [tenant for _id, tenant, _at in state["tenants"]] == [DEFAULT_TENANT]
    assert state["meta"] == [("identity_version", "0")]


async def test_reopening_a_database_changes_nothing(postgres_url: str) -> None:
    async with PostgresStore(postgres_url):
        pass
    before = await snapshot(postgres_url)

    async with PostgresStore(postgres_url) as store:
        assert store.found_version == CURRENT
    assert await snapshot(postgres_url) == before


async def test_two_replicas_opening_a_fresh_database_at_once_both_succeed_and_migrate_it_once(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two replicas started together: both have connected before either looks at the schema
    # (a barrier after each pool is made), as two hosts booting at once would.
    real_create_pool = asyncpg.create_pool
    started = asyncio.Barrier(2)

    async def create_pool_then_meet(*args: Any, **kwargs: Any) -> asyncpg.Pool:
        pool = await real_create_pool(*args, **kwargs)
        async with asyncio.timeout(10):  # the other replica failed to connect: no hang
            await started.wait()
        return pool

    monkeypatch.setattr(asyncpg, "create_pool", create_pool_then_meet)
    for attempt in range(RACE_ROUNDS):
        name = await postgres_server.create_database()
        url = postgres_server.url(name)
        stores = [PostgresStore(url), PostgresStore(url)]
        try:
            results = await asyncio.gather(*(s.open() for s in stores), return_exceptions=True)
            errors = [repr(r) for r in results if isinstance(r, BaseException)]
            assert errors == [], f"round {attempt}: {errors}"
            for store in stores:
                assert await store.schema_version() == CURRENT
            state = await snapshot(url)
            assert state["tables"] == TABLES
            assert state["schema_version"] == [(CURRENT,)]
            assert [tenant for _id, tenant, _at in state["tenants"]] == [DEFAULT_TENANT]
            assert state["meta"] == [("identity_version", "0")]
        finally:
            for store in stores:
                await store.close()
            await postgres_server.drop_database(name)


async def test_open_without_migrate_refuses_an_older_database_naming_the_command(
    postgres_url: str,
) -> None:
    tenant_id = await make_database_at_version(postgres_url, 3)
    before = await snapshot(postgres_url)
    assert "access_roles" not in before["tables"]
    store = PostgresStore(postgres_url)

    with pytest.raises(StoreError, match=r"schema version 3, older") as refused:
        await store.open(migrate=False)

    assert "run `pangolin-gateway migrate --config FILE` first" in str(refused.value)
    await assert_closed(store)
    assert await snapshot(postgres_url) == before
    # Migrating it is what the message says to do: it keeps the data.
    async with PostgresStore(postgres_url) as migrated:
        assert migrated.found_version == 3
        assert await migrated.schema_version() == CURRENT
        tenant = await migrated.tenant_by_name(DEFAULT_TENANT)
        assert tenant is not None and tenant.id == tenant_id
    assert (await snapshot(postgres_url))["tables"] == TABLES


async def test_open_without_migrate_refuses_an_empty_database_and_writes_nothing(
    postgres_url: str,
) -> None:
    # An empty database is schema 0: older. The refusal must leave it as empty as it was
    # (StoreCore.open: "nothing is written"), as `serve` on a mistyped SQLite path creates
    # no file.
    store = PostgresStore(postgres_url)

    with pytest.raises(StoreError, match="pangolin-gateway migrate"):
        await store.open(migrate=False)

    await assert_closed(store)
    assert await snapshot(postgres_url) == {"tables": []}


@pytest.mark.parametrize("migrate", [True, False], ids=["migrate", "no-migrate"])
async def test_a_newer_database_is_refused_either_way_and_left_as_it_was(
    postgres_url: str, migrate: bool
) -> None:
    async with PostgresStore(postgres_url):
        pass
    await set_schema_version(postgres_url, CURRENT + 1)
    before = await snapshot(postgres_url)
    store = PostgresStore(postgres_url)

    with pytest.raises(StoreError, match=rf"schema version {CURRENT + 1}, newer than this"):
        await store.open(migrate=migrate)

    await assert_closed(store)
    assert await snapshot(postgres_url) == before


# -- replicas writing at once ------------------------------------------------------------------


async def test_concurrent_usage_flushes_from_two_replicas_lose_nothing(postgres_url: str) -> None:
    async with replicas(postgres_url) as (one, two):
        etl = (await ServiceUserAdmin(one, clock=FakeClock()).create(name="etl", actor="t")).user
        flushes = [
            (one, two)[n % 2].record_last_used(
                {etl.id: float(n)}, requests={(etl.id, "2030-03-16"): n}
            )
            for n in range(1, 51)
        ]
        await asyncio.gather(*flushes)

        for store in (one, two):
            assert await store.usage_of(etl.id, "2030-03-01") == {"2030-03-16": sum(range(51))}
            found = await store.service_user(etl.id)
            assert found is not None and found.last_used_at == 50.0  # the latest wins


async def test_concurrent_rotations_through_two_replicas_each_advance_the_key_generation(
    postgres_url: str,
) -> None:
    async with replicas(postgres_url) as (one, two):
        admins = [ServiceUserAdmin(store, clock=FakeClock()) for store in (one, two)]
        user = (await admins[0].create(name="etl", actor="t")).user
        rotations = 10

        keys = await asyncio.gather(
            *(admins[n % 2].rotate(user.id, actor="alice") for n in range(rotations))
        )

        for admin in admins:
            after = await admin.get(user.id)
            assert after.key_generation == user.key_generation + rotations
            assert after.key_id in {created.api_key.key_id for created in keys}
        records = await one.audit_records(target_id=user.id)
        assert [r.action for r in records].count("service_user.rotate") == rotations


async def test_two_replicas_retiring_the_last_two_roots_at_once_leave_one(
    postgres_url: str,
) -> None:
    # The rule counts the Roots before it changes one: without the write lock, both replicas
    # would count two and both deactivations would commit.
    async with replicas(postgres_url) as (one, two):
        admins = [ServiceUserAdmin(store, clock=FakeClock()) for store in (one, two)]
        roots = [
            (await admins[0].create(name=f"root-{n}", role=Role.ROOT, actor="t")).user
            for n in range(2)
        ]

        results = await asyncio.gather(
            *(a.deactivate(r.id, actor="alice") for a, r in zip(admins, roots, strict=True)),
            return_exceptions=True,
        )

        refused = [r for r in results if isinstance(r, LastRoot)]
        done = [r for r in results if isinstance(r, ServiceUser)]
        assert (len(refused), len(done)) == (1, 1), results
        after = [await store.service_user(root.id) for store in (one, two) for root in roots]
        assert sorted(u.active for u in after if u is not None) == [False, False, True, True]


async def test_an_identity_change_through_one_replica_is_seen_by_another(
    postgres_url: str,
) -> None:
    async with replicas(postgres_url) as (one, two):
        elsewhere = asyncio.Event()
        # A store listens once it has listeners, on a connection of its own: wait until that
        # is up (what was sent before is lost), so what follows is the change's own news.
        told: list[str] = []
        one.add_change_listener(lambda: told.append("one"))
        two.add_change_listener(elsewhere.set)
        for store in (one, two):
            await asyncio.wait_for(store.listening.wait(), timeout=10)
        version = await two.identity_version()

        created = await ServiceUserAdmin(one, clock=FakeClock()).create(name="etl", actor="t")

        assert told  # this process's caches are told before the call returns
        assert await two.identity_version() == version + 1 == await one.identity_version()
        assert await two.service_user(created.user.id) == created.user
        await asyncio.wait_for(elsewhere.wait(), timeout=10)  # and the other replica's, by NOTIFY


# -- the URL and its password ------------------------------------------------------------------


async def test_the_url_and_its_password_are_in_no_repr_and_no_connection_error(
    tmp_path: Path,
) -> None:
    password = "s3cret-Passw0rd-in-the-url"
    url = f"postgresql://pangolin:{password}@127.0.0.1:{free_port()}/pangolin"
    config = tmp_path / "gateway.toml"
    config.write_text('[catalogs.default]\nupstream = "http://127.0.0.1:8181"\n')
    loaded = load_settings(config, {"PANGOLIN_STORE__URL": url})
    assert loaded.store.url == url
    store = make_store(loaded.store)

    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as refused:
        await store.open()  # nothing listens on that port

    shown = {
        "repr(store)": repr(store),
        "str(store)": str(store),
        "repr(settings)": repr(loaded),
        "str(settings)": str(loaded),
        "repr(settings.store)": repr(loaded.store),
        "repr(Settings(store=...))": repr(Settings(store=StoreSettings(url=url))),
        "str(error)": str(refused.value),
        "repr(error)": repr(refused.value),
        "traceback": "".join(traceback.format_exception(refused.value)),
    }
    for where, text in shown.items():
        assert password not in text, where
        assert url not in text, where


async def test_a_burst_of_changes_elsewhere_is_one_invalidation_here_not_one_each(
    postgres_url: str,
) -> None:
    """200 creates through one replica used to wipe the other's caches 200 times: every
    request there turned into a store read. Notifications arriving together are one."""
    async with PostgresStore(postgres_url) as here, PostgresStore(postgres_url) as there:
        told: list[int] = []
        there.add_change_listener(lambda: told.append(1))
        await asyncio.wait_for(there.listening.wait(), 10)
        admin = ServiceUserAdmin(here)
        await asyncio.gather(*(admin.create(name=f"burst-{n}", actor="t") for n in range(50)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not told and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert 1 <= len(told) < 50


def _listening_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "pangolin-store-listen"]


async def test_only_a_store_with_change_listeners_holds_a_listening_connection(
    postgres_url: str,
) -> None:
    # A CLI command (create a key, copy a store) opens the store, works and goes: it has no
    # caches to tell, so no connection of its own listens for other replicas' changes.
    async with PostgresStore(postgres_url) as store:
        await ServiceUserAdmin(store).create(name="cli", actor="t")
        assert _listening_tasks() == []
        assert not store.listening.is_set()
        store.add_change_listener(lambda: None)  # what a serving gateway's caches do
        store.add_change_listener(lambda: None)
        assert len(_listening_tasks()) == 1
        await asyncio.wait_for(store.listening.wait(), 10)
    assert _listening_tasks() == []  # closed with the store


async def test_a_store_tells_its_listeners_of_its_own_changes_once(postgres_url: str) -> None:
    async with PostgresStore(postgres_url) as store:
        told: list[int] = []
        store.add_change_listener(lambda: told.append(1))
        await asyncio.wait_for(store.listening.wait(), 10)
        await ServiceUserAdmin(store).create(name="once", actor="t")
        # Its own notification comes back too, and is ignored: wait until it has arrived by
        # making a change elsewhere that this store does hear.
        async with PostgresStore(postgres_url) as other:
            await ServiceUserAdmin(other).create(name="elsewhere", actor="t")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(told) < 2 and loop.time() < deadline:
                await asyncio.sleep(0.01)
        assert told == [1, 1]  # its own change once (at the commit), the other's once


async def test_a_username_with_a_nul_is_a_failed_login_not_a_server_error(
    postgres_url: str,
) -> None:
    async with PostgresStore(postgres_url) as store:
        admin = UserAdmin(store, AuditQueue(store))
        assert await admin.login("ad\x00min", "x" * 12, ClientInfo("192.0.2.1")) is None


# Names whose byte order (SQLite's) differs from a language's: ICU puts "_" before "-" and
# both before digits; bytes put "-" before digits before "_".
COLLATED_NAMES = ("b", "a_b", "a1", "a-b", "ab", "a_", "a")


async def names_listed(store: Store) -> tuple[list[str], list[str]]:
    """``COLLATED_NAMES`` made as tenants and as service users: both lists, as listed."""
    tenants = TenantDirectory(store)
    admin = ServiceUserAdmin(store, clock=FakeClock())
    for name in COLLATED_NAMES:
        await tenants.create(f"t{name}", actor="t")
        await admin.create(name=name, actor="t")
    listed, _ = await store.list_service_users(tenant_name=DEFAULT_TENANT)
    return [t.name for t in await store.list_tenants()], [u.name for u in listed]


async def test_lists_come_in_sqlites_byte_order_whatever_the_databases_collation(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    database = await postgres_server.create_database(icu_locale="en-US")
    try:
        async with PostgresStore(postgres_server.url(database)) as store:
            on_postgres = await names_listed(store)
    finally:
        await postgres_server.drop_database(database)
    async with make_store(StoreSettings(path=str(tmp_path / "pangolin.db"))) as sqlite:
        on_sqlite = await names_listed(sqlite)
    assert on_postgres == on_sqlite
    tenants, users = on_postgres
    assert users == sorted(COLLATED_NAMES)  # code point order: the UTF-8's bytes
    assert tenants == sorted([DEFAULT_TENANT, *(f"t{name}" for name in COLLATED_NAMES)])
