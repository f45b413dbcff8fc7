"""``pangolin-gateway copy-store`` (``gateway.store.copy``): a SQLite deployment made with the
gateway's own APIs, copied into a fresh PostgreSQL database, keeps every row (ids, key
digests, sessions, signing keys, audit ids), so its keys, tokens and sessions work against a
gateway on the copy; a target that is not empty, a source of another schema and a schema
mismatch are refused before anything is written, and a failure mid-copy leaves the target
empty."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from click.testing import CliRunner, Result

from gateway.app import create_app
from gateway.audit.queue import AuditQueue
from gateway.cli import main
from gateway.identity.bootstrap import initialize
from gateway.identity.grant_admin import GrantAdmin
from gateway.identity.models import ApiKey, Role, User
from gateway.identity.service_users import CreatedKey, ServiceUserAdmin
from gateway.identity.sessions import SessionAdmin, digest_token
from gateway.identity.tenants import TenantDirectory
from gateway.identity.users import UserAdmin
from gateway.settings import CatalogSettings
from gateway.signing_keys import create_signing_key
from gateway.store import AuditRecord, ClientInfo, PostgresStore, SqliteStore, StoreError
from gateway.store.copy import TABLES, copy_file, copy_store
from gateway.store.migrations import MIGRATIONS

from ..conftest import GatewayTestServer, make_settings
from ..fakes import RecordingUpstream
from ..helpers import bearer
from ..processes import free_port

pytestmark = pytest.mark.postgres

PASSWORD = "correct horse battery staple"
DAY = "2026-03-01"
SECRET = "s3cret-pw"  # put into the target URL; the server trusts loopback and ignores it
CLIENT = ClientInfo("192.0.2.7", "tests/1.0")
ALL_TABLES = (*TABLES, "meta")


@dataclasses.dataclass
class Deployment:
    """A SQLite store as a running deployment leaves it."""

    path: Path
    store: SqliteStore
    root: CreatedKey
    etl: CreatedKey  # rotated once: its first key must stay refused after the copy too
    etl_first_key: ApiKey
    reporter: CreatedKey
    alice: User
    session_token: str


async def build_deployment(path: Path) -> Deployment:
    """Every table filled through the gateway's own APIs: two tenants, service users (one
    rotated, one expiring, one deactivated), a human user with a session, a role with a
    member, grants, usage counts, a signing key and the audit trail of all of it."""
    store = SqliteStore(path)
    await store.open()
    admin = ServiceUserAdmin(store)
    result = await initialize(store, admin)
    assert result.root is not None
    root, actor = result.root, result.root.user.id
    await TenantDirectory(store).create("analytics", actor=actor, client=CLIENT)
    first = await admin.create(name="etl", description="nightly loads", actor=actor)
    etl = await admin.rotate(first.user.id, actor=actor, client=CLIENT)
    reporter = await admin.create(
        name="reporter", tenant="analytics", expires_at=time.time() + 86_400, actor=actor
    )
    retired = await admin.create(name="retired", actor=actor)
    await admin.deactivate(retired.user.id, actor=actor)
    grants = GrantAdmin(store)
    readers = await grants.create_role(name="readers", tenant="analytics", actor=actor)
    await grants.assign(readers, reporter.user, actor=actor)
    await grants.grant(readers, catalog="*", resource=["sales"], action="read", actor=actor)
    await grants.grant(etl.user, catalog="default", resource=["raw"], action="write", actor=actor)
    users = UserAdmin(store, AuditQueue(store))
    alice = await users.create(
        username="alice", password=PASSWORD, role=Role.TENANT_ADMIN, tenant="default", actor=actor
    )
    sessions = SessionAdmin(store, lifetime_seconds=8 * 3600, idle_seconds=1800)
    started = await sessions.start(alice, CLIENT)
    assert started is not None
    await users.throttle.failed("alice", "192.0.2.7")  # the throttle's counts travel too
    # ... and the rate limits' shared counts.
    await store.add_request_costs({b"r" * 8: 1.5}, "instance-1", time.time(), 0.0)
    await store.record_last_used(
        {etl.user.id: time.time()},
        requests={(etl.user.id, DAY): 7, (reporter.user.id, DAY): 2},
    )
    await store.insert_audit_records(
        [
            AuditRecord(
                at=time.time(), actor=etl.user.id, action="token.issue",
                target_type="service_user", target_id=etl.user.id, tenant_id=etl.user.tenant_id,
                outcome="failure", client_addr="192.0.2.9", user_agent="pyiceberg/0.12",
                detail="bad secret",
            )
        ],
        batch="0f" * 16,  # the request path's queue names its batches
    )  # fmt: skip
    return Deployment(
        path, store, root, etl, first.api_key, reporter, alice, session_token=started[0]
    )


def column_names(path: Path, table: str) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, as stored, in a stable order."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return {
            table: sorted(
                (tuple(row) for row in conn.execute(
                    f"SELECT {', '.join(column_names(path, table))} FROM {table}"
                )),
                key=repr,
            )
            for table in ALL_TABLES
        }  # fmt: skip


def without_meta(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, list[tuple[Any, ...]]]:
    """Every table but meta, whose identity version a copy moves past the source's."""
    return {table: rows for table, rows in tables.items() if table != "meta"}


async def postgres_rows(url: str, columns_of: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The same, read from PostgreSQL with the SQLite file's column lists (and order)."""
    conn = await asyncpg.connect(url)
    try:
        found = {}
        for table in ALL_TABLES:
            names = ", ".join(column_names(columns_of, table))
            rows = await conn.fetch(f"SELECT {names} FROM {table}")
            found[table] = sorted((tuple(row) for row in rows), key=repr)
        return found
    finally:
        await conn.close()


async def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def user_tables(url: str) -> list[tuple[Any, ...]]:
    return await query(
        url, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )


async def through_the_api(store: SqliteStore | PostgresStore, d: Deployment) -> dict[str, Any]:
    """What the gateway reads from a store, through its read methods."""
    service_users, total = await store.list_service_users(limit=1000)
    roles = await store.list_access_roles(tenant_id=None)
    return {
        "tenants": await store.list_tenants(),
        "service_users": (service_users, total),
        "by_key_id": await store.service_user_by_key_id(d.etl.user.key_id),
        "grants": await store.list_grants(),
        "grants_of": {u.id: await store.grants_of_service_user(u.id) for u in service_users},
        "roles_of": {u.id: await store.roles_of(u.id) for u in service_users},
        "usage": {u.id: await store.usage_of(u.id, "2000-01-01") for u in service_users},
        "roles": roles,
        "members": {r.id: await store.role_members(r.id) for r in roles},
        "users": await store.list_users(tenant_id=None, limit=1000, offset=0),
        "session": await store.session(digest_token(d.session_token)),
        "signing_keys": await store.signing_keys(),
        "audit": await store.audit_records(),
        "identity_version": await store.identity_version(),
    }


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[Deployment]:
    built = await build_deployment(tmp_path / "pangolin.db")
    try:
        yield built
    finally:
        await built.store.close()


@pytest.fixture
async def target(postgres_url: str) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(postgres_url) as opened:
        yield opened


# -- the copy ---------------------------------------------------------------------------------


async def test_copy_keeps_every_row_of_every_table_as_stored(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    before = sqlite_rows(deployment.path)

    counts = await copy_store(deployment.store, target)

    assert counts == {table: len(rows) for table, rows in before.items()}
    assert all(counts[table] > 0 for table in ALL_TABLES), counts  # the test fills them all
    copied = await postgres_rows(postgres_url, deployment.path)
    # The identity version goes past the source's: replicas already polling the database
    # must see a change.
    (version,) = [int(v) for k, v in copied.pop("meta") if k == "identity_version"]
    (source,) = [int(v) for k, v in before["meta"] if k == "identity_version"]
    assert version == source + 1
    assert copied == {table: rows for table, rows in before.items() if table != "meta"}
    assert sqlite_rows(deployment.path) == before  # the source is only read


async def test_the_copy_reads_back_through_the_store_exactly_as_the_source(
    deployment: Deployment, target: PostgresStore
) -> None:
    await copy_store(deployment.store, target)

    copied = await through_the_api(target, deployment)
    original = await through_the_api(deployment.store, deployment)
    assert copied["identity_version"] == original["identity_version"] + 1
    copied["identity_version"] = original["identity_version"]
    assert copied == original
    assert copied["session"] is not None and copied["session"][1].id == deployment.alice.id
    assert len(copied["audit"]) > 10 and copied["identity_version"] > 0


async def test_new_audit_records_on_the_copy_continue_after_every_id_the_source_gave(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    """Also after the newest record was pruned: SQLite never gives its id again, nor may the
    copy."""
    with contextlib.closing(sqlite3.connect(deployment.path)) as conn:
        highest = conn.execute("SELECT max(id) FROM audit_log").fetchone()[0]
        conn.execute("DELETE FROM audit_log WHERE id = ?", (highest,))
        conn.commit()
    await copy_store(deployment.store, target)

    await TenantDirectory(target).create("later", actor="test")

    ids = [row[0] for row in await query(postgres_url, "SELECT id FROM audit_log ORDER BY id")]
    assert ids[-2:] == [highest - 1, highest + 1]
    assert (await target.audit_records())[-1].action == "tenant.create"


async def test_keys_tokens_and_sessions_from_before_the_copy_work_on_a_gateway_on_it(
    deployment: Deployment, postgres_url: str, tmp_path: Path, aiohttp_client: Any,
    aiohttp_server: Any,
) -> None:  # fmt: skip
    upstream = RecordingUpstream()
    server = await aiohttp_server(upstream.app())
    base = str(server.make_url("")).rstrip("/")
    on_sqlite = make_settings(tmp_path, {"default": CatalogSettings(upstream=base)})
    assert on_sqlite.store.path == str(deployment.path)
    on_postgres = dataclasses.replace(
        on_sqlite, store=dataclasses.replace(on_sqlite.store, url=postgres_url)
    )
    etl = deployment.etl
    # A token minted by the gateway still on SQLite, used once there.
    before: TestClient[Any, Any] = await aiohttp_client(GatewayTestServer(create_app(on_sqlite)))
    token = await mint_token(before, etl)
    assert await status(before, bearer(token)) == 200
    await before.close()  # flushes last_used and the audit queue into the file
    async with PostgresStore(postgres_url) as target:
        await copy_store(deployment.store, target)

    after: TestClient[Any, Any] = await aiohttp_client(GatewayTestServer(create_app(on_postgres)))
    for credential, principal in (
        ({"X-API-Key": etl.api_key.plaintext()}, etl.user.id),
        (bearer(etl.api_key.plaintext()), etl.user.id),
        (bearer(token), etl.user.id),
        ({"X-API-Key": deployment.root.api_key.plaintext()}, deployment.root.user.id),
    ):
        assert await status(after, credential) == 200
        assert upstream.last.headers["X-Pangolin-Principal-Id"] == principal
    assert await status(after, {"X-API-Key": deployment.etl_first_key.plaintext()}) == 401
    # A token minted on the copy for the other tenant's service user: authenticated (not 401),
    # and still kept out of the default tenant's catalog (its tenant came along).
    assert await status(after, bearer(await mint_token(after, deployment.reporter))) == 403
    async with after.get("/api/v1/me", headers=bearer(deployment.session_token)) as resp:
        assert resp.status == 200, await resp.text()
        assert deployment.alice.id in await resp.text()


async def mint_token(client: TestClient[Any, Any], created: CreatedKey) -> str:
    form = {
        "grant_type": "client_credentials",
        "client_id": created.user.id,
        "client_secret": created.api_key.plaintext(),
    }
    async with client.post("/v1/oauth/tokens", data=form) as resp:
        assert resp.status == 200, await resp.text()
        token: str = (await resp.json())["access_token"]
        return token


async def status(client: TestClient[Any, Any], headers: dict[str, str]) -> int:
    async with client.get("/v1/namespaces", headers=headers) as resp:
        await resp.read()
        return resp.status


# -- refusals ---------------------------------------------------------------------------------


async def test_a_second_copy_into_the_filled_database_is_refused_and_changes_nothing(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    await copy_store(deployment.store, target)
    before = await postgres_rows(postgres_url, deployment.path)

    refusal = r"the PostgreSQL database is not empty \(1 tenants row\(s\), 4 service_users row"
    with pytest.raises(StoreError, match=refusal):
        await copy_store(deployment.store, target)

    assert await postgres_rows(postgres_url, deployment.path) == before


@pytest.mark.parametrize("held", ["an initialized gateway", "a signing key only"])
async def test_a_database_holding_anything_but_a_fresh_migration_is_refused(
    deployment: Deployment, target: PostgresStore, postgres_url: str, held: str
) -> None:
    if held == "a signing key only":
        await create_signing_key(target)
    else:
        assert (await initialize(target, ServiceUserAdmin(target))).created
    before = await postgres_rows(postgres_url, deployment.path)

    with pytest.raises(StoreError, match="the PostgreSQL database is not empty") as refused:
        await copy_store(deployment.store, target)

    assert "signing_keys row(s)" in str(refused.value)
    assert await postgres_rows(postgres_url, deployment.path) == before


def make_old_store(path: Path, version: int = len(MIGRATIONS) - 1) -> None:
    """A store file as an older gateway left it, with a service user in it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for number, migration in enumerate(MIGRATIONS[:version], start=1):
            conn.executescript(
                f"BEGIN;\n{migration.sqlite}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
        conn.execute("INSERT INTO tenants VALUES ('t1', 'default', 1.8e9)")
        conn.execute(
            "INSERT INTO service_users (id, tenant_id, name, role, key_id, key_digest,"
            " created_at) VALUES ('u1', 't1', 'etl', 'TenantUser', 'k1', x'01', 1.8e9)"
        )


def schema_and_rows(path: Path) -> tuple[Any, ...]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return (
            conn.execute("PRAGMA user_version").fetchone(),
            conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall(),
            conn.execute("SELECT * FROM service_users").fetchall(),
        )


async def test_a_source_at_an_older_schema_is_refused_telling_to_migrate_it_first(
    tmp_path: Path, postgres_url: str
) -> None:
    path = tmp_path / "old.db"
    make_old_store(path)
    before = schema_and_rows(path)

    with pytest.raises(StoreError, match=r"older than this gateway's.*pangolin-gateway migrate"):
        await copy_file(path, postgres_url)

    assert schema_and_rows(path) == before  # not migrated behind the operator's back
    assert await user_tables(postgres_url) == []  # the target was never touched


async def test_copy_store_itself_refuses_a_source_whose_schema_is_not_the_gateways(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    """The version is read from the snapshot that is copied, not trusted from the open."""
    with contextlib.closing(sqlite3.connect(deployment.path)) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")

    with pytest.raises(StoreError, match=r"schema version \d+, not this gateway's.*migrate"):
        await copy_store(deployment.store, target)

    assert (await postgres_rows(postgres_url, deployment.path))["service_users"] == []


async def test_a_column_only_the_source_has_is_refused_rather_than_dropped(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    with contextlib.closing(sqlite3.connect(deployment.path)) as conn:
        conn.execute("ALTER TABLE service_users ADD COLUMN owner TEXT")
        conn.execute("CREATE TABLE notes (body TEXT)")

    with pytest.raises(StoreError, match="schemas differ") as refused:
        await copy_store(deployment.store, target)

    assert "service_users.owner only in the SQLite store" in str(refused.value)
    assert "copy-store does not know: notes" in str(refused.value)
    assert await query(postgres_url, "SELECT * FROM service_users") == []


async def test_a_row_postgresql_cannot_hold_rolls_the_whole_copy_back(
    deployment: Deployment, target: PostgresStore, postgres_url: str
) -> None:
    """SQLite keeps any value in any column; the failure comes after tenants and service users
    went in, and the target is left as freshly migrated as it was."""
    empty = await postgres_rows(postgres_url, deployment.path)
    with contextlib.closing(sqlite3.connect(deployment.path)) as conn:
        conn.execute("UPDATE usage_daily SET requests = 'many' WHERE requests = 7")
        conn.commit()

    with pytest.raises(StoreError, match="copying usage_daily failed, nothing was copied"):
        await copy_store(deployment.store, target)

    assert await postgres_rows(postgres_url, deployment.path) == empty
    assert [t.name for t in await target.list_tenants()] == ["default"]
    # Nothing is left behind that would refuse the copy once the source is repaired.
    with contextlib.closing(sqlite3.connect(deployment.path)) as conn:
        conn.execute("UPDATE usage_daily SET requests = 7 WHERE requests = 'many'")
        conn.commit()
    await copy_store(deployment.store, target)
    assert without_meta(await postgres_rows(postgres_url, deployment.path)) == without_meta(
        sqlite_rows(deployment.path)
    )


# -- the command ------------------------------------------------------------------------------


def with_password(url: str) -> str:
    return re.sub(r"://([^@/]+)@", rf"://\1:{SECRET}@", url, count=1)


def copy_command(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["copy-store", *args], env=env)


def built_source(tmp_path: Path) -> Path:
    async def build() -> Path:
        d = await build_deployment(tmp_path / "pangolin.db")
        await d.store.close()
        return d.path

    return asyncio.run(build())


@pytest.mark.parametrize("given", ["option", "environment"])
def test_copy_store_command_copies_and_prints_counts_but_never_the_url(
    tmp_path: Path, postgres_url: str, given: str
) -> None:
    source = built_source(tmp_path)
    url = with_password(postgres_url)
    assert SECRET in url

    if given == "option":
        result = copy_command("--from", str(source), "--to", url)
    else:
        result = copy_command("--from", str(source), env={"PANGOLIN_COPY_TO": url})

    assert result.exit_code == 0, result.output
    assert re.fullmatch(
        r"Copied 2 tenants, 4 service users, 1 user, 1 session, 2 daily usage counts, "
        r"1 signing key, 1 role, 1 role membership, 2 grants and \d+ audit records "
        r"to the PostgreSQL store\.\n",
        result.stdout,
    ), result.stdout
    assert SECRET not in result.output and postgres_url not in result.output
    assert without_meta(asyncio.run(postgres_rows(postgres_url, source))) == without_meta(
        sqlite_rows(source)
    )


REFUSALS = {
    "not empty": "the PostgreSQL database is not empty",
    "unreachable": "cannot connect to PostgreSQL: ConnectionRefusedError",
    "older source": "older than this gateway's",
    "missing source": "no SQLite store at",
    "not a database": "not a usable SQLite store",
    "not postgresql": "--to must be a postgresql:// URL",
}


@pytest.mark.parametrize("case", REFUSALS)
def test_copy_store_command_refuses_in_one_line_with_exit_1_and_no_password(
    tmp_path: Path, postgres_url: str, case: str
) -> None:
    source = built_source(tmp_path)
    url = with_password(postgres_url)
    if case == "not empty":
        assert copy_command("--from", str(source), "--to", url).exit_code == 0
    elif case == "unreachable":
        url = re.sub(r":\d+/", f":{free_port()}/", url)
    elif case == "older source":
        source = tmp_path / "old.db"
        make_old_store(source)
    elif case == "missing source":
        source = tmp_path / "absent.db"
    elif case == "not a database":
        source = tmp_path / "notes.txt"
        source.write_text("not sqlite at all " * 100)
    else:
        url = url.replace("postgresql://", "mysql://")

    result = copy_command("--from", str(source), "--to", url)

    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: cannot copy the store: ") and REFUSALS[case] in line, line
    assert SECRET not in result.output
    assert case != "missing source" or not source.exists()  # nothing created at a typo


async def test_a_source_changed_while_it_is_copied_is_refused_and_nothing_is_copied(
    deployment: Deployment,
    target: PostgresStore,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway still writing the file: its change would be missing from the copy, which
    the command used to report as a success."""
    import gateway.store.copy as copy_module

    empty = await postgres_rows(postgres_url, deployment.path)
    real = copy_module._copy_meta

    async def meanwhile(reader: Any, conn: Any) -> int:
        await ServiceUserAdmin(deployment.store).deactivate(deployment.etl.user.id, actor="t")
        return await real(reader, conn)

    monkeypatch.setattr(copy_module, "_copy_meta", meanwhile)
    with pytest.raises(StoreError, match="changed while it was being copied"):
        await copy_store(deployment.store, target)
    assert await postgres_rows(postgres_url, deployment.path) == empty
