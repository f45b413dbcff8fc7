"""The login throttle's counts live in the store (issue 13): every worker and replica adds to
and reads the same ones, on both engines, so spreading guesses over replicas gains nothing."""

from __future__ import annotations

from gateway.audit.queue import AuditQueue
from gateway.identity.users import LoginThrottle, UserAdmin
from gateway.store.tables import StoreTables

from ..fakes import FakeClock
from .conftest import NewStore

WINDOW = LoginThrottle.WINDOW
KEYS = [b"a" * 32, b"b" * 32]


async def test_failures_add_up_per_key_and_start_again_after_the_window(
    store: StoreTables,
) -> None:
    assert await store.failure_counts(KEYS, since=0.0) == dict.fromkeys(KEYS, 0)
    await store.add_failures(dict.fromkeys(KEYS, 1), at=1000.0, since=1000.0 - WINDOW)
    totals = await store.add_failures({KEYS[0]: 3}, at=1001.0, since=1001.0 - WINDOW)
    assert totals == {KEYS[0]: 4}
    assert await store.failure_counts(KEYS, since=1001.0 - WINDOW) == {KEYS[0]: 4, KEYS[1]: 1}

    later = 1001.0 + WINDOW + 1
    assert await store.failure_counts(KEYS, since=later - WINDOW) == dict.fromkeys(KEYS, 0)
    assert await store.add_failures({KEYS[0]: 2}, at=later, since=later - WINDOW) == {KEYS[0]: 2}
    assert (await store.failure_counts(KEYS[:1], since=later - WINDOW))[KEYS[0]] == 2

    await store.clear_failures(KEYS)
    assert await store.failure_counts(KEYS, since=0.0) == dict.fromkeys(KEYS, 0)


async def test_failures_through_one_replica_slow_the_next_guess_through_another(
    store: StoreTables, new_store: NewStore
) -> None:
    clock = FakeClock()
    async with new_store() as other:
        here = LoginThrottle(store, clock=clock)
        there = LoginThrottle(other, clock=clock)
        assert await there.delay("alice", "10.0.0.9") == 0.0
        for _ in range(3):
            await here.failed("alice", "10.0.0.9")
        assert await there.delay("alice", "10.0.0.9") == LoginThrottle.BASE_DELAY * 4
        # Past the per-username budget, a failed answer is held back everywhere.
        for _ in range(LoginThrottle.USERNAME_FREE):
            await here.failed("alice", "192.0.2.1")
        assert await there.failure_delay("alice") > 0.0
        # A correct login through the other replica ends the pair's and the user's counts.
        await there.succeeded("alice", "10.0.0.9")
        assert await here.delay("alice", "10.0.0.9") == 0.0
        assert await here.failure_delay("alice") == 0.0


async def test_the_store_keeps_no_username_or_address_of_a_failed_login(
    store: StoreTables,
) -> None:
    admin = UserAdmin(store, AuditQueue(store))
    await admin.throttle.failed("mallory-target", "203.0.113.7")
    rows = await store._fetchall("SELECT key FROM failure_counts")
    stored = b"".join(bytes(row[0]) for row in rows)
    assert len(rows) == 3
    assert b"mallory" not in stored and b"203.0.113" not in stored
