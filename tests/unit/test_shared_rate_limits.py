"""Rate limits shared by replicas through the store (issue 14, ``gateway.auth.rate_limit``):
each instance writes what it let through, and charges its own table with what the others let
through since its last read; on both engines, as two replicas on one database do."""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping

import pytest

from gateway.auth.rate_limit import LocalRates, RateLimiter, SharedRates, stored_key
from gateway.store import StoreError
from gateway.store.tables import StoreTables

from ..fakes import FakeClock
from .conftest import NewStore

RATE, BURST = 2.0, 3  # an interval of 0.5 s; a bucket of 1.5 s


def limiter(clock: FakeClock) -> RateLimiter:
    return RateLimiter(LocalRates(), clock)


def take(limiter: RateLimiter, times: int, user: str = "etl") -> list[float]:
    return [limiter.wait(user, RATE, BURST) for _ in range(times)]


async def test_what_one_replica_let_through_is_charged_to_the_other_after_a_flush(
    store: StoreTables, new_store: NewStore
) -> None:
    clock = FakeClock()
    here, there = limiter(clock), limiter(clock)
    async with new_store() as other:
        await there.flush(other)  # its first read: the baseline
        assert take(here, BURST) == [0.0] * BURST  # here's whole burst
        await here.flush(store)
        clock.advance(0.1)
        await there.flush(other)
        # There, the bucket is now as empty as here (charged as of the read: the time in
        # between is the lag a shared limit has): the next request waits for the interval.
        assert there.wait("etl", RATE, BURST) == pytest.approx(0.5)
        assert there.wait("other", RATE, BURST) == 0.0  # another service user, its own bucket
        clock.advance(0.5)
        assert there.wait("etl", RATE, BURST) == 0.0
        # The same totals read again charge nothing twice.
        clock.advance(0.5)
        await there.flush(other)
        assert there.wait("etl", RATE, BURST) == 0.0


async def test_a_client_spread_over_two_replicas_gets_about_its_limit_in_total(
    store: StoreTables, new_store: NewStore
) -> None:
    clock = FakeClock()
    replicas = [limiter(clock), limiter(clock)]
    async with new_store() as other:
        stores = [store, other]
        for replica, where in zip(replicas, stores, strict=True):
            await replica.flush(where)
        let_through = 0
        # 20 s of a client asking each replica 10 times a second, flushes every second.
        for _second in range(20):
            for _tenth in range(10):
                let_through += sum(not r.wait("etl", RATE, BURST) for r in replicas)
                clock.advance(0.1)
            for replica, where in zip(replicas, stores, strict=True):
                await replica.flush(where)
    # Apart, each replica would let through 2/s and a burst: 86. Together, the limit (40 and
    # the bursts) give or take the flush's lag.
    assert 40 <= let_through <= 40 + 2 * BURST + 2 * RATE, let_through


async def test_what_others_let_through_beyond_the_limit_is_waited_out_up_to_a_minute(
    store: StoreTables,
) -> None:
    clock = FakeClock()
    here = limiter(clock)
    await here.flush(store)
    # Others let through 20 requests' worth in the lag before this replica heard of them:
    # the client waits it out here (less the bucket's 1 s of tolerance).
    await store.add_request_costs({stored_key("etl"): 10.0}, "elsewhere", clock(), 0.0)
    await here.flush(store)
    assert here.wait("etl", RATE, BURST) == pytest.approx(9.0)
    # A charge beyond a minute past empty (a store row written by hand, say) is forgiven.
    await store.add_request_costs({stored_key("etl"): 1000.0}, "elsewhere", clock(), 0.0)
    await here.flush(store)
    assert here.wait("etl", RATE, BURST) == pytest.approx(60.5)
    clock.advance(60.5)
    assert here.wait("etl", RATE, BURST) == 0.0


async def test_the_first_read_charges_nothing_of_what_came_before(store: StoreTables) -> None:
    clock = FakeClock()
    await store.add_request_costs({stored_key("etl"): 1.5}, "elsewhere", clock(), 0.0)
    starting = limiter(clock)
    await starting.flush(store)
    assert take(starting, BURST) == [0.0] * BURST


async def test_each_instances_totals_are_its_own_and_pruned_a_minute_after_its_last_request(
    store: StoreTables,
) -> None:
    key = b"k" * 8
    await store.add_request_costs({key: 0.5}, "a", 1000.0, 0.0)
    await store.add_request_costs({key: 0.5}, "a", 1001.0, 0.0)
    await store.add_request_costs({key: 2.0}, "b", 1001.0, 0.0)
    assert await store.request_costs_elsewhere("b") == {key: 1.0}
    assert await store.request_costs_elsewhere("c") == {key: 3.0}
    await store.add_request_costs({b"j" * 8: 1.0}, "c", 1100.0, since=1100.0 - 60)
    assert await store.request_costs_elsewhere("c") == {}


class _DownStore:
    """A store whose writes fail, as one does during an outage; then comes back."""

    def __init__(self) -> None:
        self.down = True
        self.written: list[Mapping[bytes, float]] = []

    async def add_request_costs(
        self, costs: Mapping[bytes, float], instance: str, at: float, since: float
    ) -> None:
        if self.down:
            raise StoreError("down")
        self.written.append(dict(costs))

    async def request_costs_elsewhere(self, instance: str) -> dict[bytes, float]:
        return {}


async def test_what_could_not_be_written_is_written_with_the_next_flush() -> None:
    clock = FakeClock()
    here = limiter(clock)
    store = _DownStore()
    take(here, 2)
    await here.flush(store)  # type: ignore[arg-type]  # only the two methods a flush calls
    take(here, 1)
    store.down = False
    await here.flush(store)  # type: ignore[arg-type]
    assert store.written == [{stored_key("etl"): pytest.approx(1.5)}]


async def test_the_workers_of_an_instance_charge_the_others_counts_once(
    store: StoreTables,
) -> None:
    memory = SharedRates.create()
    lock = multiprocessing.get_context("spawn").Lock()
    clock = FakeClock()
    workers = [
        RateLimiter(SharedRates(memory.name, lock, "host-1", merges_others=i == 0), clock)
        for i in (0, 1)
    ]
    try:
        for worker in workers:
            await worker.flush(store)
        # Another instance let two requests through (1 s of the 1.5 s bucket).
        await store.add_request_costs({stored_key("etl"): 1.0}, "host-2", clock(), 0.0)
        for worker in workers:
            await worker.flush(store)
        # Charged once, the bucket holds one more request; charged by both workers, none.
        assert [workers[1].wait("etl", RATE, BURST) for _ in range(2)] == [0.0, 0.5]
    finally:
        memory.close()
        memory.unlink()
