"""Backoff after failed authentications: an API key that is wrong or unknown, a token that
is bad, a client the token endpoint refuses (``limits`` in the settings).

Failures are counted per client address and per (address, key id). Past a budget, a failure
is answered 429 with a ``Retry-After`` that doubles with each further failure (1 s, 2 s, ...,
at most the window); past the address's budget the address is also *held*: a credential from
it that would need a store read (a key id not in the cache) waits out the ``Retry-After``, so
a flood of made-up keys cannot become a flood of store reads.

What it never does:

- count or slow a correct credential. Success is decided first and never consults the counts;
  a key already in use (cached) keeps working from a held address too;
- count per key id alone. The key id is the public part of a key: an attacker who knows a
  victim's can only fill the (attacker's address, key id) budget, never the victim's;
- touch the store per request. Counts live in memory and are merged through the store every
  flush (``failure_counts``, shared with the login throttle): each process adds what it saw
  and learns the total, so spreading failures over workers and replicas gains at most one
  flush interval's worth per process.

An IPv6 client is counted by its /64, what one host is usually given: otherwise each of its
2^64 addresses would have a budget of its own. Keys are SHA-256 digests: the store holds no
address or key id of a failure in clear. A count ends once the window passes without a
failure (what ``failure_counts`` does too).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..digests import text_digest
from ..networks import counted_address
from ..settings import LimitSettings
from ..store import Store, StoreError, uninterrupted

__all__ = ("AuthBackoff", "Backoff")

_LOGGER = logging.getLogger(__name__)
_MAX_TRACKED: Final = 100_000  # counts kept in memory: a scanner must not grow it unbounded

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """A failure's answer: 429 after ``retry_after`` seconds (0: the usual 401), and whether
    this failure started the backoff (what the audit log records, once, instead of each
    failure: a flood cannot flood the audit)."""

    retry_after: int
    scope: str  # "address" or "key": whose budget ran out
    started: bool


NO_BACKOFF: Final = Backoff(0, "", started=False)


class AuthBackoff:
    def __init__(self, store: Store, limits: LimitSettings, clock: Clock = time.time) -> None:
        self._store = store
        self._per_key = limits.failed_auth_per_key
        self._per_address = limits.failed_auth_per_address
        self._window = limits.failed_auth_window_seconds
        self._clock = clock  # wall clock: the counts are shared with other hosts' processes
        # key -> [failures as last known (every process's at the last flush, plus ours
        # since), time of the last one]
        self._counts: dict[bytes, list[float]] = {}
        self._pending: dict[bytes, int] = {}  # ours, not yet added to the store
        self._addresses: dict[bytes, str] = {}  # an address key -> the address it counts
        # Held addresses -> until when. Read on every request: empty, it costs one truth test.
        self.held: dict[str, float] = {}

    # -- the request path ----------------------------------------------------------------------

    def may_read(self, address: str) -> bool:
        """Whether a credential from ``address`` may cost a store read now."""
        unit = counted_address(address)
        until = self.held.get(unit)
        if until is None:
            return True
        if self._clock() >= until:
            del self.held[unit]
            return True
        return False

    def retry_after(self, address: str) -> int:
        """Seconds until a held ``address`` may cost store reads again (at least 1)."""
        until = self.held.get(counted_address(address), 0.0)
        return max(1, int(until - self._clock() + 0.999))

    def failed(self, address: str, key_id: str | None) -> Backoff:
        """Count one failed authentication from ``address`` (with ``key_id``, if the credential
        named one) and say how to answer it."""
        now = self._clock()
        unit = counted_address(address)
        addr_key = text_digest(f"auth-addr:{unit}")
        self._addresses[addr_key] = unit
        over_address = self._add(addr_key, now) - self._per_address
        over_key = 0.0
        if key_id is not None:
            over_key = self._add(text_digest(f"auth-pair:{unit}|{key_id}"), now) - self._per_key
        if len(self._counts) > _MAX_TRACKED:
            self._prune(now)
        if over_address <= 0 and over_key <= 0:
            return NO_BACKOFF
        wait = self._wait(max(over_address, over_key))
        if over_address > 0:
            self.held[unit] = max(self.held.get(unit, 0.0), now + wait)
        scope = "address" if over_address >= over_key else "key"
        return Backoff(int(wait), scope, started=max(over_address, over_key) == 1)

    def _wait(self, excess: float) -> float:
        # 1 s at the first failure past the budget, doubling, at most the window (and an
        # exponent kept small: 2.0 ** 10_000 overflows).
        return float(min(2.0 ** min(excess - 1, 30), self._window))

    def _add(self, key: bytes, now: float) -> float:
        entry = self._counts.get(key)
        if entry is None or entry[1] < now - self._window:
            entry = self._counts[key] = [0.0, now]
        entry[0] += 1
        entry[1] = now
        self._pending[key] = self._pending.get(key, 0) + 1
        return entry[0]

    def _prune(self, now: float) -> None:
        since = now - self._window
        self._counts = {k: v for k, v in self._counts.items() if v[1] >= since}
        if len(self._counts) > _MAX_TRACKED:
            self._counts.clear()  # a scan of fresh addresses: start over rather than grow
        self._addresses = {k: a for k, a in self._addresses.items() if k in self._counts}
        self.held = {a: until for a, until in self.held.items() if until > now}

    # -- merging through the store ---------------------------------------------------------------

    async def run(self, every: float) -> None:
        """Flush every ``every`` seconds, until cancelled. A cancellation (the app's shutdown)
        that arrives during a write waits for it: cut off mid-transaction, the connection
        would be handed back with the write still on it (as for the audit queue)."""
        while True:
            await asyncio.sleep(every)
            await uninterrupted(self.flush())

    async def flush(self) -> None:
        """Add this process's new failures to the store's counts and learn the totals (so the
        budgets are every process's together). Quiet when the store is down: the failures
        stay pending for the next flush."""
        if not self._pending:
            return
        sent, self._pending = self._pending, {}
        now = self._clock()
        try:
            totals = await self._store.add_failures(sent, now, now - self._window)
        except Exception as exc:
            for key, count in sent.items():  # counted again next time, nothing lost
                self._pending[key] = self._pending.get(key, 0) + count
            if not isinstance(exc, StoreError):  # an outage is the authenticator's to say
                _LOGGER.warning("failure counts not written (%s); will retry", type(exc).__name__)
            return
        for key, total in totals.items():
            entry = self._counts.get(key)
            if entry is None:
                continue  # pruned meanwhile
            # The store's total holds what we sent; what we counted since is not in it yet.
            entry[0] = max(entry[0], total + self._pending.get(key, 0))
            unit = self._addresses.get(key)
            if unit is not None and entry[0] > self._per_address:
                until = now + self._wait(entry[0] - self._per_address)
                self.held[unit] = max(self.held.get(unit, 0.0), until)
