"""Per-service-user request rate limits (``limits.requests_per_second`` and ``limits.burst``,
overridden per service user): a token bucket of ``rate`` requests per second holding up to
``burst``, in the equivalent form of GCRA (one "theoretical arrival time" per service user,
so a check is a few float operations and one stored number).

One table per gateway instance: with ``--workers N`` the workers share it through shared
memory (``SharedRates``, made by the supervisor, one lock), so a client gets its limit
whichever workers its connections reach; a single process keeps it in a dict
(``LocalRates``).

Replicas share a limit through the store, off the request path (as Kong's "cluster" policy
does, in batches): every flush (``store.audit_flush_seconds``) each process adds what it let
through to its instance's running totals (``request_counts``, as seconds of bucket: the
requests' intervals added up), and one process per instance (a single process, or worker 0)
reads the other instances' totals and charges its table with what they let through since its
last read. A client spread over K replicas so gets its limit in total: what the others let
through in the flush or two before a replica is charged with it (each replica's burst, at
first) is charged as debt, which the client then waits out. The store down, each instance
keeps its own limit: a limit errs towards letting through, never towards refusing.

Only service users with a limit pay for it; the others skip the table entirely.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import struct
import uuid
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Final, Protocol

from ..store import Store, StoreError, uninterrupted

__all__ = (
    "SLOTS",
    "LocalRates",
    "RateLimiter",
    "Rates",
    "SharedRates",
    "retry_after",
    "stored_key",
)

SLOTS: Final = 1 << 16  # service users with a limit one instance tracks at once
_SLOT: Final = struct.Struct("<Qd")  # key (0: free), theoretical arrival time
_PROBES: Final = 64
_LOCK_WAIT: Final = 0.05  # seconds; the lock is held for a few microseconds
_KEPT: Final = 60.0  # seconds an instance's totals of a key outlive its last request there
# Seconds past an empty bucket the other instances' requests may charge: a safety net only. A
# cost is in seconds of the limit of the instance that let the request through, so even
# replicas that disagree on a limit cannot charge more than a second a second each while
# the client keeps to theirs, and what they charge is what it got beyond the shared limit.
_MAX_DEBT: Final = 60.0

_LOGGER = logging.getLogger(__name__)

Clock = Callable[[], float]


class Rates(Protocol):
    """Where the theoretical arrival times live; ``update`` is atomic across its users.
    ``instance`` names the gateway instance the table belongs to in the store's shared
    counts; ``merges_others``: whether this process charges it with the other instances'."""

    instance: str
    merges_others: bool

    def update(
        self, key: int, now: float, change: Callable[[float | None], float | None]
    ) -> None: ...


class LocalRates:
    """A single process's table."""

    def __init__(self) -> None:
        self._tats: dict[int, float] = {}
        self.instance = uuid.uuid4().hex
        self.merges_others = True

    def update(self, key: int, now: float, change: Callable[[float | None], float | None]) -> None:
        new = change(self._tats.get(key))
        if new is not None:
            if len(self._tats) >= SLOTS and key not in self._tats:
                self._tats.clear()  # bounded: a limit forgotten errs towards letting through
            self._tats[key] = new


class SharedRates:
    """The workers' table, in shared memory: open addressing over ``SLOTS`` slots, a slot
    whose time has passed reusable by another key (its bucket is full again: nothing of it
    needs keeping). The lock is a process-shared one (``multiprocessing.Lock``); the
    supervisor names the instance, and one worker merges the other instances' counts (two
    would charge them twice)."""

    def __init__(self, name: str, lock: _Lock, instance: str, *, merges_others: bool) -> None:
        self._memory = shared_memory.SharedMemory(name=name)
        self._lock = lock
        self.instance = instance
        self.merges_others = merges_others

    @staticmethod
    def create() -> shared_memory.SharedMemory:
        return shared_memory.SharedMemory(create=True, size=SLOTS * _SLOT.size)

    def close(self) -> None:
        self._memory.close()

    def update(self, key: int, now: float, change: Callable[[float | None], float | None]) -> None:
        buffer = self._memory.buf
        assert buffer is not None
        start = key % SLOTS
        # Bounded: a worker killed while holding the lock (SIGKILL mid-update) must not stall
        # the others' event loops for good; past the wait, the request passes uncounted.
        if not self._lock.acquire(timeout=_LOCK_WAIT):
            return
        try:
            reusable = None
            for probe in range(_PROBES):
                offset = ((start + probe) % SLOTS) * _SLOT.size
                stored, tat = _SLOT.unpack_from(buffer, offset)
                if stored == key:
                    new = change(tat)
                    if new is not None:
                        _SLOT.pack_into(buffer, offset, key, new)
                    return
                if reusable is None and (stored == 0 or tat < now):
                    reusable = offset
                if stored == 0:
                    break
            new = change(None)
            if new is not None and reusable is not None:
                _SLOT.pack_into(buffer, reusable, key, new)
            # No room within the probes: this request passes unrecorded (errs open).
        finally:
            self._lock.release()


class _Lock(Protocol):
    def acquire(self, block: bool = ..., timeout: float | None = ...) -> bool: ...
    def release(self) -> None: ...


class RateLimiter:
    def __init__(self, rates: Rates, clock: Clock) -> None:
        self._rates = rates
        self._clock = clock  # wall clock: the times are compared with other hosts' counts
        self._reported: dict[str, int] = {}  # service user id -> minute of its last audit
        # key -> seconds of bucket this process let through since its last flush
        self._costs: dict[int, float] = {}
        # The other instances' totals at the last read (None: none yet, or the store failed:
        # the next read only sets the baseline).
        self._elsewhere: dict[bytes, float] | None = None

    def first_refusal_this_minute(self, user_id: str) -> bool:
        """Whether a refusal of ``user_id`` is its first this minute (in this process)."""
        minute = int(self._clock() // 60)
        if self._reported.get(user_id) == minute:
            return False
        if len(self._reported) > 100_000:
            self._reported.clear()
        self._reported[user_id] = minute
        return True

    def wait(self, user_id: str, rate: float, burst: int) -> float:
        """0.0 if a request of ``user_id`` may go now (and it is counted), else the seconds
        until one may."""
        interval = 1.0 / rate
        tolerance = (max(burst, 1) - 1) * interval
        now = self._clock()
        key = _key(user_id)
        answer = 0.0

        def change(tat: float | None) -> float | None:
            nonlocal answer
            due = now if tat is None or tat < now else tat
            if due - now > tolerance:
                answer = due - now - tolerance
                if answer <= interval + _MAX_DEBT:
                    return None  # refused: the table stays as it was
                # Only a charge of the other instances' requests takes a bucket past empty
                # (this one's refusals never write); more than a minute of it is forgiven.
                answer = interval + _MAX_DEBT
                return now + tolerance + answer
            return due + interval

        self._rates.update(key, now, change)
        if not answer:
            costs = self._costs
            if key in costs:
                costs[key] += interval
            elif len(costs) < SLOTS:  # bounded: past it, a new key counts on this instance only
                costs[key] = interval
        return answer

    # -- sharing with the other instances, through the store -------------------------------------

    async def run(self, store: Store, every: float) -> None:
        """Flush every ``every`` seconds, until cancelled (a cancellation during a write
        waits for it, as for the audit queue)."""
        while True:
            await asyncio.sleep(every)
            await uninterrupted(self.flush(store))

    async def flush(self, store: Store) -> None:
        """Add what this process let through to its instance's totals; then, in the process
        that merges for the instance, charge the table with what the other instances let
        through since the last read."""
        costs, self._costs = self._costs, {}
        now = self._clock()
        if costs:
            written = {_stored(key): cost for key, cost in costs.items()}
            try:
                await store.add_request_costs(written, self._rates.instance, now, now - _KEPT)
            except Exception as exc:
                for key, cost in costs.items():  # written next time, nothing lost
                    self._costs[key] = self._costs.get(key, 0.0) + cost
                _quiet_unless_unexpected(exc)
                return
        if not self._rates.merges_others:
            return
        try:
            elsewhere = await store.request_costs_elsewhere(self._rates.instance)
        except Exception as exc:
            self._elsewhere = None
            _quiet_unless_unexpected(exc)
            return
        seen, self._elsewhere = self._elsewhere, elsewhere
        if seen is None:
            return  # what the others let through before is not this read's to charge
        for digest, total in elsewhere.items():
            # Less than last time: the row was pruned and started again; nothing to charge.
            cost = total - seen.get(digest, 0.0)
            if cost > 0:
                self._rates.update(int.from_bytes(digest, "big"), now, _charged(now, cost))


def _charged(now: float, cost: float) -> Callable[[float | None], float]:
    def change(tat: float | None) -> float:
        return (now if tat is None or tat < now else tat) + cost

    return change


def _quiet_unless_unexpected(exc: Exception) -> None:
    if not isinstance(exc, StoreError):  # an outage is the authenticator's to say
        _LOGGER.warning("shared request counts not merged (%s); will retry", type(exc).__name__)


def retry_after(wait: float) -> int:
    """Seconds for Retry-After: whole, at least one."""
    return max(1, math.ceil(wait))


def stored_key(user_id: str) -> bytes:
    """What ``user_id``'s counts are kept under in the store (``request_counts``)."""
    return _stored(_key(user_id))


def _key(user_id: str) -> int:
    # 64 bits of a digest, never 0 (the free slot's mark).
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest()) or 1


def _stored(key: int) -> bytes:
    return key.to_bytes(8, "big")
