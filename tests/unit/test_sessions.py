"""Human sessions in the store (``identity.sessions``, ``store.sessions_table``) and the daily
request counts of service users (``store.record_last_used``), below HTTP.

Each test that takes ``store`` runs on SQLite and on PostgreSQL. Time moves with a
``FakeClock``; "another process" is a second store object on the same database
(``new_store``), exactly what another worker or another replica holds. What the sessions table
holds is read through the store's own read path (``_fetchall``), the same SQL on both engines.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.audit.queue import AuditQueue
from gateway.identity.models import Role, Session, User
from gateway.identity.service_users import ServiceUserAdmin
from gateway.identity.sessions import TOUCH_SECONDS, SessionAdmin, digest_token
from gateway.identity.users import UserAdmin
from gateway.store import AuditRecord, ClientInfo, SqliteStore
from gateway.store.migrations import MIGRATIONS
from gateway.store.tables import StoreTables

from ..fakes import FakeClock
from .conftest import NewStore

PASSWORD = "correct horse battery staple"
LIFETIME = 8 * 3600
IDLE = 1800
CLIENT = ClientInfo("192.0.2.7", "tests/1.0")


async def started(sessions: SessionAdmin, user: User, client: ClientInfo) -> tuple[str, Session]:
    """A session that must start (``start`` is None only for a user changed meanwhile)."""
    result = await sessions.start(user, client)
    assert result is not None
    return result


def sessions_of(store: StoreTables, clock: FakeClock) -> SessionAdmin:
    return SessionAdmin(store, lifetime_seconds=LIFETIME, idle_seconds=IDLE, clock=clock)


def users_of(store: StoreTables, clock: FakeClock) -> UserAdmin:
    return UserAdmin(store, AuditQueue(store), clock=clock)


@pytest.fixture
def sessions(store: StoreTables, clock: FakeClock) -> SessionAdmin:
    return sessions_of(store, clock)


@pytest.fixture
def users(store: StoreTables, clock: FakeClock) -> UserAdmin:
    return users_of(store, clock)


async def human(users: UserAdmin, name: str = "alice") -> User:
    return await users.create(
        username=name, password=PASSWORD, role=Role.TENANT_ADMIN, tenant="default", actor="t"
    )


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def session_rows(store: StoreTables) -> list[tuple[Any, ...]]:
    """Every row of the sessions table (as committed: SQLite reads it on the store's read
    connection, PostgreSQL on a pooled one; neither is the writer's)."""
    found = await store._fetchall("SELECT * FROM sessions ORDER BY created_at")
    return [tuple(row) for row in found]


async def usage_rows(store: StoreTables) -> list[tuple[Any, ...]]:
    """Every stored daily count: (service user id, day, requests)."""
    found = await store._fetchall(
        "SELECT service_user_id, day, requests FROM usage_daily ORDER BY service_user_id, day"
    )
    return [tuple(row) for row in found]


class Spy:
    """Counts calls to store methods (the real methods still run)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: StoreTables, *names: str) -> None:
        self.calls: dict[str, int] = {}
        for name in names:
            monkeypatch.setattr(store, name, self._counting(name, getattr(store, name)))

    def _counting(self, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return spy


# -- the token and what is stored ----------------------------------------------------------------


async def test_only_the_digest_of_the_token_is_stored(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin
) -> None:
    alice = await human(users)
    token, session = await started(sessions, alice, CLIENT)
    assert token.startswith("pgs_") and len(token) == 4 + 43
    assert session.digest == digest_token(token)
    ((digest, user_id, created, seen, expires, addr, agent),) = await session_rows(store)
    assert (bytes(digest), user_id) == (session.digest, alice.id)
    assert (addr, agent) == (CLIENT.addr, CLIENT.user_agent)
    assert (created, seen, expires) == (session.created_at, session.created_at,
                                        session.created_at + LIFETIME)  # fmt: skip
    assert "pgs_" not in repr(session) and session.digest.hex() not in repr(session)


async def test_the_token_is_nowhere_in_the_sqlite_files(
    sqlite_store: SqliteStore, clock: FakeClock, path: Path
) -> None:
    token, _ = await started(
        sessions_of(sqlite_store, clock), await human(users_of(sqlite_store, clock)), CLIENT
    )
    # Nowhere in the files (database, WAL, shared memory): not the token, not its secret part.
    secret = token.removeprefix("pgs_").encode()
    files = list(path.parent.iterdir())
    assert path in files
    for file in files:
        data = file.read_bytes()
        assert secret not in data and secret[:20] not in data, file.name


async def test_a_login_is_audited_with_its_session_and_notes_the_login(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin, clock: FakeClock
) -> None:
    alice = await human(users)
    await store.record_failed_login(alice.id)
    clock.advance(5)
    token, _ = await started(sessions, alice, CLIENT)
    after = await users.get(alice.id)
    assert (after.last_login_at, after.failed_logins) == (clock.now, 0)
    (login,) = [r for r in await store.audit_records(target_id=alice.id) if r.action == "login"]
    assert (login.actor, login.outcome, login.client_addr) == (alice.id, "success", CLIENT.addr)
    assert token not in repr(login)


@pytest.mark.parametrize("change", ["deletion", "password", "deactivation"])
async def test_a_login_checked_before_a_change_that_commits_first_gets_no_session(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin, change: str
) -> None:
    # The login's password check ran against this record; the change commits before the
    # session is stored (a reset after a leak, say): that login must not outlive the change.
    alice = await human(users)
    if change == "deletion":
        await users.delete(alice.id, actor="t")
    elif change == "password":
        await users.change_password(alice.id, "another long passphrase", actor="t")
    else:
        await users.set_active(alice.id, False, actor="t")
    before = len(await store.audit_records())
    assert await sessions.start(alice, CLIENT) is None
    assert await session_rows(store) == []
    assert len(await store.audit_records()) == before


# -- resolving -----------------------------------------------------------------------------------


async def test_a_live_session_resolves_to_its_user(
    sessions: SessionAdmin, users: UserAdmin
) -> None:
    alice = await human(users)
    token, session = await started(sessions, alice, CLIENT)
    found = await sessions.resolve(token)
    assert found is not None
    assert found[0].digest == session.digest and found[1].id == alice.id


@pytest.mark.parametrize(
    "token",
    ["", "pgs_", "pgs_" + "A" * 42, "pgs_" + "A" * 44, "pgs_" + "A" * 42 + "!", "pgl_" + "A" * 43],
)
async def test_a_malformed_token_is_refused_without_reading_the_store(
    sessions: SessionAdmin, store: StoreTables, monkeypatch: pytest.MonkeyPatch, token: str
) -> None:
    spy = Spy(monkeypatch, store, "session", "touch_session")
    assert await sessions.check(token) == "malformed"
    assert await sessions.resolve(token) is None
    assert spy.calls == {}


async def test_an_unknown_token_is_refused(sessions: SessionAdmin) -> None:
    assert await sessions.check("pgs_" + "A" * 43) == "unknown_session"


async def test_last_seen_is_refreshed_at_most_once_a_minute(
    store: StoreTables,
    sessions: SessionAdmin,
    users: UserAdmin,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token, session = await started(sessions, await human(users), CLIENT)
    spy = Spy(monkeypatch, store, "touch_session")
    for _ in range(10):  # 50 s of requests every 5 s: no write
        clock.advance(5)
        assert await sessions.resolve(token) is not None
    assert spy.calls == {}
    clock.advance(TOUCH_SECONDS - 50)
    assert await sessions.resolve(token) is not None
    assert spy.calls == {"touch_session": 1}
    assert (await session_rows(store))[0][3] == clock.now


async def test_a_session_idle_for_the_idle_timeout_is_refused_and_left_as_it_was(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin, clock: FakeClock
) -> None:
    token, _ = await started(sessions, await human(users), CLIENT)
    clock.advance(IDLE - 1)
    assert await sessions.resolve(token) is not None  # used: the idle clock starts again
    clock.advance(IDLE - 1)
    assert await sessions.resolve(token) is not None
    before = await session_rows(store)
    clock.advance(IDLE)
    assert await sessions.check(token) == "idle"
    assert await session_rows(store) == before  # a refusal writes nothing


async def test_a_session_in_use_still_ends_at_its_absolute_lifetime(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin, clock: FakeClock
) -> None:
    token, session = await started(sessions, await human(users), CLIENT)
    while clock.now + 600 < session.expires_at:
        clock.advance(600)  # busy all day: never idle
        assert await sessions.resolve(token) is not None
    before = await session_rows(store)
    clock.now = session.expires_at
    assert await sessions.check(token) == "expired"
    assert await session_rows(store) == before


async def test_a_deactivated_user_has_no_session_left(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin
) -> None:
    alice = await human(users)
    token, _ = await started(sessions, alice, CLIENT)
    record = AuditRecord(1.0, "t", "user.deactivate", "user", alice.id, alice.tenant_id, "success")
    assert await store.update_user(alice.id, {"active": 0}, record)
    assert await session_rows(store) == []
    assert await sessions.check(token) == "unknown_session"


async def test_a_session_of_a_user_deactivated_outside_the_store_rules_is_refused(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin
) -> None:
    # Belt and braces: even a row left behind (a hand-edited store) serves no inactive user.
    alice = await human(users)
    token, _ = await started(sessions, alice, CLIENT)
    async with store.transaction() as tx:  # a bare UPDATE, past the rules that end sessions
        await tx.execute("UPDATE users SET active = 0")
    assert len(await session_rows(store)) == 1
    assert await sessions.check(token) == "inactive"


# -- ending sessions: at once, in every process ----------------------------------------------------


async def test_logout_ends_that_session_only_and_is_audited(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin
) -> None:
    alice = await human(users)
    first, _ = await started(sessions, alice, CLIENT)
    second, _ = await started(sessions, alice, CLIENT)
    assert await sessions.end(first, client=CLIENT)
    assert await sessions.resolve(first) is None
    assert await sessions.resolve(second) is not None
    assert not await sessions.end(first)  # nothing left to end, nothing recorded
    logouts = [r for r in await store.audit_records(target_id=alice.id) if r.action == "logout"]
    assert [(r.actor, r.outcome) for r in logouts] == [(alice.id, "success")]


@pytest.mark.parametrize("change", ["password", "deletion", "deactivation"])
async def test_a_change_ends_every_session_of_the_user_in_every_process_at_once(
    store: StoreTables,
    sessions: SessionAdmin,
    users: UserAdmin,
    clock: FakeClock,
    new_store: NewStore,
    change: str,
) -> None:
    alice, bob = await human(users), await human(users, "bob")
    tokens = [(await started(sessions, alice, CLIENT))[0] for _ in range(3)]
    bobs, _ = await started(sessions, bob, CLIENT)
    async with new_store() as other_store:  # another worker, with its own connections
        elsewhere = sessions_of(other_store, clock)
        assert all([await elsewhere.resolve(t) is not None for t in tokens])
        if change == "password":
            await users.change_password(alice.id, "another long passphrase", actor="t")
        elif change == "deletion":
            await users.delete(alice.id, actor="t")
        else:
            await users.set_active(alice.id, False, actor="t")
        # No poll, no wait: the other process reads the store and finds nothing.
        for token in tokens:
            assert await elsewhere.resolve(token) is None
            assert await sessions.resolve(token) is None
        assert await elsewhere.resolve(bobs) is not None  # another user's session lives on
    assert [row[1] for row in await session_rows(store)] == [bob.id]


async def test_a_login_clears_sessions_that_ended_by_time(
    store: StoreTables, sessions: SessionAdmin, users: UserAdmin, clock: FakeClock
) -> None:
    alice = await human(users)
    await started(sessions, alice, CLIENT)
    clock.advance(IDLE + 1)
    await started(sessions, alice, CLIENT)
    assert [row[2] for row in await session_rows(store)] == [clock.now]


# -- migrations ----------------------------------------------------------------------------------


async def test_a_store_of_schema_1_migrates_and_keeps_its_users(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(MIGRATIONS[0].sqlite + "\nPRAGMA user_version = 1;")
        tenant = "00000000-0000-4000-8000-000000000001"
        conn.execute("INSERT INTO tenants VALUES (?, 'default', 1.0)", (tenant,))
        conn.execute(
            "INSERT INTO users (id, tenant_id, username, role, password_hash, created_at,"
            " password_changed_at, session_generation) VALUES"
            " ('u1', ?, 'alice', 'Root', 'x', 1.0, 1.0, 7)",
            (tenant,),
        )
        conn.commit()
    async with SqliteStore(path) as store:
        user = await store.user("u1")
        assert user is not None and user.username == "alice"
    assert rows(path, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert "session_generation" not in {row[1] for row in rows(path, "PRAGMA table_info(users)")}
    assert rows(path, "PRAGMA foreign_key_list(sessions)")[0][2:7] == (
        "users", "user_id", "id", "NO ACTION", "CASCADE",
    )  # fmt: skip


# -- requests per day ------------------------------------------------------------------------------


async def test_request_counts_add_up_across_batches_and_processes(
    store: StoreTables, clock: FakeClock, new_store: NewStore
) -> None:
    admin = ServiceUserAdmin(store, clock=clock)
    etl = (await admin.create(name="etl", actor="t")).user
    await store.record_last_used({etl.id: 1.0}, requests={(etl.id, "2030-03-16"): 2})
    async with new_store() as other:  # another worker's flush
        await other.record_last_used({}, requests={(etl.id, "2030-03-16"): 3})
        await other.record_last_used({}, requests={(etl.id, "2030-03-17"): 1})
    assert await store.usage_of(etl.id, "2030-03-01") == {"2030-03-16": 5, "2030-03-17": 1}
    assert await store.usage_of(etl.id, "2030-03-17") == {"2030-03-17": 1}


async def test_counts_of_a_deleted_service_user_are_dropped_not_a_failed_batch(
    store: StoreTables, clock: FakeClock
) -> None:
    admin = ServiceUserAdmin(store, clock=clock)
    gone = (await admin.create(name="gone", actor="t")).user
    kept = (await admin.create(name="kept", actor="t")).user
    await store.record_last_used({}, requests={(gone.id, "2030-03-16"): 1})
    await admin.delete(gone.id, actor="t")
    assert await usage_rows(store) == []  # went with it (cascade)
    # A count made before the deletion and flushed after it: dropped, the rest written.
    await store.record_last_used(
        {gone.id: 2.0, kept.id: 2.0},
        requests={(gone.id, "2030-03-17"): 4, (kept.id, "2030-03-17"): 2},
    )
    assert await usage_rows(store) == [(kept.id, "2030-03-17", 2)]


async def test_old_days_are_pruned_when_asked(store: StoreTables, clock: FakeClock) -> None:
    etl = (await ServiceUserAdmin(store, clock=clock).create(name="etl", actor="t")).user
    counts = {(etl.id, day): 1 for day in ("2029-12-01", "2029-12-16", "2030-03-17")}
    await store.record_last_used({}, requests=counts)
    await store.record_last_used(
        {}, requests={(etl.id, "2030-03-17"): 1}, prune_before="2029-12-16"
    )
    assert await store.usage_of(etl.id, "2000-01-01") == {"2029-12-16": 1, "2030-03-17": 2}
