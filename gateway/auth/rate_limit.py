"""Per-service-user request rate limits (``limits.requests_per_second`` and ``limits.burst``,
overridden per service user): a token bucket of ``rate`` requests per second holding up to
``burst``, in the equivalent form of GCRA (one "theoretical arrival time" per service user,
so a check is a few float operations and one stored number).

One table per gateway instance: with ``--workers N`` the workers share it through shared
memory (``SharedRates``, made by the supervisor, one lock), so a client gets its limit
whichever workers its connections reach; a single process keeps it in a dict
(``LocalRates``). Replicas on other hosts count apart: behind K replicas a client can reach
K times the limit (as with Kong's "local" policy), so set the limit per replica.

Only service users with a limit pay for it; the others skip the table entirely.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import Final, Protocol

__all__ = ("SLOTS", "LocalRates", "RateLimiter", "Rates", "SharedRates", "retry_after")

SLOTS: Final = 1 << 16  # service users with a limit one instance tracks at once
_SLOT: Final = struct.Struct("<Qd")  # key (0: free), theoretical arrival time
_PROBES: Final = 64
_LOCK_WAIT: Final = 0.05  # seconds; the lock is held for a few microseconds

Clock = Callable[[], float]


class Rates(Protocol):
    """Where the theoretical arrival times live; ``update`` is atomic across its users."""

    def update(
        self, key: int, now: float, change: Callable[[float | None], float | None]
    ) -> None: ...


class LocalRates:
    """A single process's table."""

    def __init__(self) -> None:
        self._tats: dict[int, float] = {}

    def update(self, key: int, now: float, change: Callable[[float | None], float | None]) -> None:
        new = change(self._tats.get(key))
        if new is not None:
            if len(self._tats) >= SLOTS and key not in self._tats:
                self._tats.clear()  # bounded: a limit forgotten errs towards letting through
            self._tats[key] = new


class SharedRates:
    """The workers' table, in shared memory: open addressing over ``SLOTS`` slots, a slot
    whose time has passed reusable by another key (its bucket is full again: nothing of it
    needs keeping). The lock is a process-shared one (``multiprocessing.Lock``)."""

    def __init__(self, name: str, lock: _Lock) -> None:
        self._memory = shared_memory.SharedMemory(name=name)
        self._lock = lock

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
        self._clock = clock
        self._reported: dict[str, int] = {}  # service user id -> minute of its last audit

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
        answer = 0.0

        def change(tat: float | None) -> float | None:
            nonlocal answer
            due = now if tat is None or tat < now else tat
            if due - now > tolerance:
                answer = due - now - tolerance
                return None  # refused: the table stays as it was
            return due + interval

        self._rates.update(_key(user_id), now, change)
        return answer


def retry_after(wait: float) -> int:
    """Seconds for Retry-After: whole, at least one."""
    return max(1, math.ceil(wait))


def _key(user_id: str) -> int:
    # 64 bits of a digest, never 0 (the free slot's mark).
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest()) or 1
